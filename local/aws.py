"""Starts moto, creates the template's AWS resources in it, and the Cognito helpers of the local stack.

`create_resources` has moto's CloudFormation create what it creates as CloudFormation does (the
engine's stack, local/engine.py) and a small adapter per resource type create or complete the rest
(local/adapters.py); the values only known afterwards (names with their random suffixes, ARNs,
stream ARNs, pool and client ids, queue URLs) are recorded on the `Template`. It can run again
against a moto that already has them.

moto's Cognito (5.2) signs every pool's tokens with one fixed RSA key (kid "dummy", private key
shipped inside moto) and serves the public half at `{endpoint}/{pool_id}/.well-known/jwks.json`. Its
ID tokens carry iss = https://cognito-idp.{region}.amazonaws.com/{pool_id} (the real issuer, not the
endpoint), aud = client id, token_use = "id", sub, iat, auth_time, exp (+1 h), jti, origin_jti,
cognito:username (the sub when the pool's usernames are emails, then also "email"), the client's
ReadAttributes that the user has, and cognito:groups as a JSON list when the user is in a group.
"""

from __future__ import annotations

import logging
from typing import Any

import boto3
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from local.adapters import run_adapters
from local.engine import create_engine_stack, evaluate
from local.moto_atomic import make_dynamodb_atomic
from local.template import Template

__all__ = ["cognito_user", "create_resources", "create_resources_elsewhere", "id_token", "start_moto_server"]


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def start_moto_server(port: int = 0, *, quiet: bool = True) -> tuple[ThreadedMotoServer, str]:
    """Starts moto in server mode on 127.0.0.1 (port 0: a free one); returns (server, endpoint URL)."""
    if quiet:  # werkzeug logs every request otherwise
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    make_dynamodb_atomic()  # conditional writes must race as they do in DynamoDB
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    host, bound_port = server.get_host_and_port()
    return server, f"http://{host}:{bound_port}"


# ---------------------------------------------------------------------------- resources


def create_resources(template: Template, session: boto3.Session, endpoint_url: str | None) -> dict[str, str]:
    """Creates the template's resources in moto (or finds them): the engine's stack through
    moto's CloudFormation (local/engine.py), then the adapters (local/adapters.py). Every Ref and
    Fn::GetAtt value is recorded on `template`; returns logical id -> physical name (table,
    bucket, queue and bus names, role names, key ids) or id (user pool, client)."""

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint_url, region_name=template.region)

    cloudformation = client("cloudformation")
    created = create_engine_stack(template, cloudformation)
    template.evaluate_with(lambda expressions: evaluate(template, cloudformation, expressions))
    created.update(run_adapters(template.translated(), client))
    template.evaluate_all()
    return created


def create_resources_elsewhere(template: Template) -> None:
    """For tools that read the functions without a running stack (benchmarks): the resources are
    created in a moto server of their own, stopped at once, so that every value resolves as it
    does in a stack. moto's state outlives its server in this process: a later stack of the same
    name would find this one (tests give each template their own stack name)."""
    server, endpoint = start_moto_server()
    try:
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing")
        create_resources(template, session, endpoint)
    finally:
        server.stop()


# ---------------------------------------------------------------------------- users and tokens


def cognito_user(
    session: boto3.Session,
    endpoint_url: str,
    pool_id: str,
    client_id: str,
    *,
    email: str,
    password: str,
    groups: list[str],
) -> None:
    """Makes sure the user exists with this permanent password and a verified email, and is a
    member of `groups` (created when missing). Idempotent. `client_id` is accepted for symmetry
    with `id_token`; users belong to the pool."""
    del client_id
    cognito = session.client("cognito-idp", endpoint_url=endpoint_url)
    try:
        cognito.admin_create_user(
            UserPoolId=pool_id,
            Username=email,
            UserAttributes=[
                {"Name": "email", "Value": email},
                {"Name": "email_verified", "Value": "true"},
            ],
            MessageAction="SUPPRESS",
        )
    except ClientError as error:
        if _error_code(error) != "UsernameExistsException":
            raise
    cognito.admin_set_user_password(UserPoolId=pool_id, Username=email, Password=password, Permanent=True)
    for group in groups:
        try:
            cognito.create_group(UserPoolId=pool_id, GroupName=group)
        except ClientError as error:
            if _error_code(error) != "GroupExistsException":
                raise
        cognito.admin_add_user_to_group(UserPoolId=pool_id, Username=email, GroupName=group)


def id_token(
    session: boto3.Session,
    pool_id: str,
    client_id: str,
    *,
    email: str,
    password: str,
    endpoint_url: str | None = None,
) -> str:
    """Signs the user in with ADMIN_USER_PASSWORD_AUTH and returns the ID token. The session's
    client goes to `endpoint_url`, else where AWS_ENDPOINT_URL points (moto). In real
    Cognito the app client must allow ALLOW_ADMIN_USER_PASSWORD_AUTH; moto does not check."""
    cognito = session.client("cognito-idp", endpoint_url=endpoint_url)
    answer = cognito.admin_initiate_auth(
        UserPoolId=pool_id,
        ClientId=client_id,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": email, "PASSWORD": password},
    )
    if "AuthenticationResult" not in answer:
        raise RuntimeError(f"sign-in of {email} asks for {answer.get('ChallengeName')}, not a token")
    return str(answer["AuthenticationResult"]["IdToken"])
