"""One small adapter per resource type that moto 5.2.5's CloudFormation lacks or gets wrong.

Each adapter takes a resource of the translated template (its properties resolved with what the
engine's stack, local/engine.py, answered) and makes moto hold what CloudFormation would create;
it records the values CloudFormation would answer for Ref and Fn::GetAtt on the `Template`.
Tables and the bucket are created by the engine: their adapters only apply the properties moto's
CloudFormation ignores. Every adapter may run again against a moto that already has its resource.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, Final

from botocore.exceptions import ClientError

from local.template import Template

__all__ = ["ADAPTERS", "STANDARD_ATTRIBUTES"]

Clients = Callable[[str], Any]

# Standard attributes a real app client may read when its ReadAttributes is not set (real Cognito
# then lets it read them all; moto would put none of them into the ID token).
STANDARD_ATTRIBUTES: Final = (
    "address",
    "birthdate",
    "email",
    "email_verified",
    "family_name",
    "gender",
    "given_name",
    "locale",
    "middle_name",
    "name",
    "nickname",
    "phone_number",
    "phone_number_verified",
    "picture",
    "preferred_username",
    "profile",
    "updated_at",
    "website",
    "zoneinfo",
)


def _warn(message: str) -> None:
    print(f"local.adapters: {message}", file=sys.stderr)


def _properties(template: Template, logical_id: str) -> dict[str, Any]:
    resolved = template.resolve(template.resources[logical_id].get("Properties") or {})
    return resolved if isinstance(resolved, dict) else {}


def _enabled(value: Any) -> bool:
    return value in (True, "true")


def dynamodb_table(template: Template, client: Clients, logical_id: str) -> None:
    """TTL and point-in-time recovery, which moto's CloudFormation ignores."""
    properties = _properties(template, logical_id)
    name = str(template.attribute(logical_id, "Ref"))
    dynamodb = client("dynamodb")
    ttl = properties.get("TimeToLiveSpecification") or {}
    if _enabled(ttl.get("Enabled")):
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
    if _enabled((properties.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled")):
        dynamodb.update_continuous_backups(
            TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
        )


def s3_bucket(template: Template, client: Clients, logical_id: str) -> None:
    """Versioning, public access block and ownership controls, which moto's CloudFormation
    ignores (lifecycle rules and CORS are left out: moto stores them and acts on neither)."""
    properties = _properties(template, logical_id)
    name = str(template.attribute(logical_id, "Ref"))
    s3 = client("s3")
    if "VersioningConfiguration" in properties:
        status = properties["VersioningConfiguration"]["Status"]
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": status})
    if "PublicAccessBlockConfiguration" in properties:
        configuration = {
            key: _enabled(value) for key, value in properties["PublicAccessBlockConfiguration"].items()
        }
        s3.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration=configuration)
    if "OwnershipControls" in properties:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=properties["OwnershipControls"])


def s3_bucket_policy(template: Template, client: Clients, logical_id: str) -> None:
    """The policy without its TLS-only Deny: moto enforces bucket policies, and its endpoint here
    is plain HTTP on loopback, so that statement would refuse every call."""
    properties = _properties(template, logical_id)
    document = dict(properties["PolicyDocument"])
    statements = document.get("Statement", [])
    document["Statement"] = [
        statement
        for statement in (statements if isinstance(statements, list) else [statements])
        if "aws:SecureTransport" not in json.dumps(statement.get("Condition", {}))
    ]
    if document["Statement"]:
        client("s3").put_bucket_policy(Bucket=properties["Bucket"], Policy=json.dumps(document))


_USER_POOL_SETTINGS: Final = (
    "Policies",
    "DeletionProtection",
    "AutoVerifiedAttributes",
    "AliasAttributes",
    "UsernameAttributes",
    "VerificationMessageTemplate",
    "MfaConfiguration",
    "UserAttributeUpdateSettings",
    "DeviceConfiguration",
    "EmailConfiguration",
    "UserPoolTags",
    "AdminCreateUserConfig",
    "Schema",
    "UserPoolAddOns",
    "UsernameConfiguration",
    "AccountRecoverySetting",
    "UserPoolTier",
)


def cognito_user_pool(template: Template, client: Clients, logical_id: str) -> None:
    """The pool with the template's settings (its Lambda trigger is not wired: moto runs none)."""
    properties = _properties(template, logical_id)
    name = str(properties.get("UserPoolName") or f"{template.stack_name}-{logical_id}")
    cognito = client("cognito-idp")
    pools = cognito.get_paginator("list_user_pools").paginate(MaxResults=60)
    pool_id = next(
        (p["Id"] for page in pools for p in page.get("UserPools", []) if p.get("Name") == name), None
    )
    if pool_id is None:
        request = {key: properties[key] for key in _USER_POOL_SETTINGS if key in properties}
        if "LambdaConfig" in properties:
            _warn(f"{logical_id}: LambdaConfig (Cognito triggers) is not emulated locally")
        pool_id = cognito.create_user_pool(PoolName=name, **request)["UserPool"]["Id"]
    provider = f"cognito-idp.{template.region}.amazonaws.com/{pool_id}"
    for attribute, value in {
        "Ref": pool_id,
        "UserPoolId": pool_id,
        "Arn": f"arn:aws:cognito-idp:{template.region}:{template.account_id}:userpool/{pool_id}",
        "ProviderName": provider,
        "ProviderURL": f"https://{provider}",
    }.items():
        template.set_attribute(logical_id, attribute, value)


_CLIENT_SETTINGS: Final = (
    "GenerateSecret",
    "RefreshTokenValidity",
    "AccessTokenValidity",
    "IdTokenValidity",
    "TokenValidityUnits",
    "ReadAttributes",
    "WriteAttributes",
    "ExplicitAuthFlows",
    "SupportedIdentityProviders",
    "CallbackURLs",
    "LogoutURLs",
    "AllowedOAuthFlows",
    "AllowedOAuthScopes",
    "AllowedOAuthFlowsUserPoolClient",
    "PreventUserExistenceErrors",
    "EnableTokenRevocation",
)


def cognito_user_pool_client(template: Template, client: Clients, logical_id: str) -> None:
    """The app client; without ReadAttributes it may read every attribute, as in Cognito (moto
    would put none into the ID token)."""
    properties = _properties(template, logical_id)
    name = str(properties.get("ClientName") or f"{template.stack_name}-{logical_id}")
    pool_id = str(properties["UserPoolId"])
    cognito = client("cognito-idp")
    pages = cognito.get_paginator("list_user_pool_clients").paginate(UserPoolId=pool_id, MaxResults=60)
    found = [
        c["ClientId"] for page in pages for c in page.get("UserPoolClients", []) if c["ClientName"] == name
    ]
    if found:
        client_id = str(found[0])
    else:
        request = {key: properties[key] for key in _CLIENT_SETTINGS if key in properties}
        request.setdefault("ReadAttributes", [*STANDARD_ATTRIBUTES, *_custom_attributes(cognito, pool_id)])
        answer = cognito.create_user_pool_client(UserPoolId=pool_id, ClientName=name, **request)
        client_id = str(answer["UserPoolClient"]["ClientId"])
    template.set_attribute(logical_id, "Ref", client_id)
    template.set_attribute(logical_id, "ClientId", client_id)


def _custom_attributes(cognito: Any, pool_id: str) -> list[str]:
    schema = cognito.describe_user_pool(UserPoolId=pool_id)["UserPool"].get("SchemaAttributes") or []
    return [str(item["Name"]) for item in schema if str(item.get("Name", "")).startswith("custom:")]


# In this order: Cognito's client names its pool.
ADAPTERS: Final[dict[str, Callable[[Template, Clients, str], None]]] = {
    "AWS::DynamoDB::Table": dynamodb_table,
    "AWS::S3::Bucket": s3_bucket,
    "AWS::S3::BucketPolicy": s3_bucket_policy,
    "AWS::Cognito::UserPool": cognito_user_pool,
    "AWS::Cognito::UserPoolClient": cognito_user_pool_client,
}


def run_adapters(template: Template, client: Clients) -> dict[str, str]:
    """Runs the adapter of every resource that has one; returns logical id -> physical id of the
    resources only an adapter creates."""
    created: dict[str, str] = {}
    for type_, adapter in ADAPTERS.items():
        for logical_id in template.resources_of_type(type_):
            try:
                adapter(template, client, logical_id)
            except ClientError as error:
                if type_.startswith("AWS::Cognito::"):
                    raise
                _warn(f"{logical_id}: {error}")  # a setting moto does not take; the resource exists
                continue
            if type_.startswith("AWS::Cognito::"):
                created[logical_id] = str(template.attribute(logical_id, "Ref"))
    return created
