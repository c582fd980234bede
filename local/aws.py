"""Creates the template's AWS resources in a moto server, and the Cognito helpers of the local stack.

`create_resources` turns the template's tables, bucket, queues, event bus and Cognito user pool into
moto resources with exactly the template's settings (as far as moto supports them), records the
values only known afterwards (stream ARNs, pool and client ids, queue URLs) on the `Template`, and
can run again against a moto that already has them.

moto's Cognito (5.2) signs every pool's tokens with one fixed RSA key (kid "dummy", private key
shipped inside moto) and serves the public half at `{endpoint}/{pool_id}/.well-known/jwks.json`. Its
ID tokens carry iss = https://cognito-idp.{region}.amazonaws.com/{pool_id} (the real issuer, not the
endpoint), aud = client id, token_use = "id", sub, iat, auth_time, exp (+1 h), jti, origin_jti,
cognito:username (the sub when the pool's usernames are emails, then also "email"), the client's
ReadAttributes that the user has, and cognito:groups as a JSON list when the user is in a group.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

import boto3
from botocore.exceptions import ClientError, ParamValidationError
from moto.server import ThreadedMotoServer

from local.moto_atomic import make_dynamodb_atomic
from local.template import Template

__all__ = ["cognito_user", "create_resources", "id_token", "start_moto_server"]

# Standard attributes a real app client may read when its ReadAttributes is not set (real Cognito
# then lets it read them all; moto would put none of them into the ID token).
_STANDARD_ATTRIBUTES = (
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
    print(f"local.aws: {message}", file=sys.stderr)


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _pick(properties: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: properties[name] for name in names if name in properties}


def _string(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


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


def create_resources(template: Template, session: boto3.Session, endpoint_url: str) -> dict[str, str]:
    """Creates (or finds) every supported resource of the template in moto; returns logical id ->
    physical name (table, bucket, queue and bus names, group names) or id (user pool, client)."""
    created: dict[str, str] = {}

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=endpoint_url, region_name=template.region)

    for logical_id in template.resources_of_type("AWS::DynamoDB::Table"):
        created[logical_id] = _table(template, client("dynamodb"), logical_id)
    for logical_id in template.resources_of_type("AWS::S3::Bucket"):
        created[logical_id] = _bucket(template, client("s3"), logical_id)
    for logical_id in template.resources_of_type("AWS::S3::BucketPolicy"):
        _bucket_policy(template, client("s3"), logical_id)
    queues = template.resources_of_type("AWS::SQS::Queue")
    if queues:
        sqs = client("sqs")
        for logical_id in queues:  # first every queue, then the redrive policies naming them
            created[logical_id] = _queue(template, sqs, logical_id, with_redrive=False)
        for logical_id in queues:
            _queue(template, sqs, logical_id, with_redrive=True)
    for logical_id in template.resources_of_type("AWS::Events::EventBus"):
        created[logical_id] = _event_bus(template, client("events"), logical_id)
    for logical_id in template.resources_of_type("AWS::KMS::Key"):
        created[logical_id] = _kms_key(template, client("kms"), logical_id)
    cognito_types = (
        "AWS::Cognito::UserPool",
        "AWS::Cognito::UserPoolClient",
        "AWS::Cognito::UserPoolGroup",
    )
    if any(template.resources_of_type(type_) for type_ in cognito_types):
        cognito = client("cognito-idp")
        for logical_id in template.resources_of_type("AWS::Cognito::UserPool"):
            created[logical_id] = _user_pool(template, cognito, logical_id)
        for logical_id in template.resources_of_type("AWS::Cognito::UserPoolClient"):
            created[logical_id] = _user_pool_client(template, cognito, logical_id)
        for logical_id in template.resources_of_type("AWS::Cognito::UserPoolGroup"):
            created[logical_id] = _user_pool_group(template, cognito, logical_id)
    return created


def _properties(template: Template, logical_id: str) -> dict[str, Any]:
    resolved = template.resolve(template.resources[logical_id].get("Properties") or {})
    return resolved if isinstance(resolved, dict) else {}


def _throughput(value: dict[str, Any]) -> dict[str, int]:
    return {key: int(number) for key, number in value.items()}


def _table(template: Template, dynamodb: Any, logical_id: str) -> str:
    properties = _properties(template, logical_id)
    name = template.physical_name(logical_id)
    billing = str(properties.get("BillingMode", "PROVISIONED"))
    try:
        table = dynamodb.describe_table(TableName=name)["Table"]
        _check_table(logical_id, table, properties)
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": properties["KeySchema"],
            "AttributeDefinitions": properties["AttributeDefinitions"],
            "BillingMode": billing,
        }
        if "ProvisionedThroughput" in properties:
            request["ProvisionedThroughput"] = _throughput(properties["ProvisionedThroughput"])
        if properties.get("GlobalSecondaryIndexes"):
            indexes = []
            for index in properties["GlobalSecondaryIndexes"]:
                spec = _pick(index, ("IndexName", "KeySchema", "Projection", "OnDemandThroughput"))
                if "ProvisionedThroughput" in index:
                    spec["ProvisionedThroughput"] = _throughput(index["ProvisionedThroughput"])
                indexes.append(spec)
            request["GlobalSecondaryIndexes"] = indexes
        if properties.get("LocalSecondaryIndexes"):
            request["LocalSecondaryIndexes"] = [
                _pick(index, ("IndexName", "KeySchema", "Projection"))
                for index in properties["LocalSecondaryIndexes"]
            ]
        stream = properties.get("StreamSpecification")
        if stream and stream.get("StreamViewType"):
            request["StreamSpecification"] = {
                "StreamEnabled": True,
                "StreamViewType": stream["StreamViewType"],
            }
        sse = properties.get("SSESpecification")
        if sse:
            request["SSESpecification"] = {
                "Enabled": sse.get("SSEEnabled") in (True, "true"),
                **_pick(sse, ("SSEType", "KMSMasterKeyId")),
            }
        for key in ("TableClass", "DeletionProtectionEnabled", "Tags"):
            if key in properties:
                request[key] = properties[key]
        table = dynamodb.create_table(**request)["TableDescription"]
    ttl = properties.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled") in (True, "true"):
        current = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        if current.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
    recovery = properties.get("PointInTimeRecoverySpecification") or {}
    if recovery.get("PointInTimeRecoveryEnabled") in (True, "true"):
        try:
            dynamodb.update_continuous_backups(
                TableName=name,
                PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
            )
        except ClientError as error:  # not worth failing the local stack for
            _warn(f"{logical_id}: point-in-time recovery not set: {error}")
    template.set_attribute(logical_id, "Arn", table["TableArn"])
    if table.get("LatestStreamArn"):
        template.set_attribute(logical_id, "StreamArn", table["LatestStreamArn"])
    return name


def _check_table(logical_id: str, table: dict[str, Any], properties: dict[str, Any]) -> None:
    """An existing table is reused; say so when it no longer matches the template."""
    wanted = {index["IndexName"] for index in properties.get("GlobalSecondaryIndexes") or []}
    actual = {index["IndexName"] for index in table.get("GlobalSecondaryIndexes") or []}
    if table.get("KeySchema") != properties.get("KeySchema") or wanted != actual:
        _warn(
            f"{logical_id}: existing table {table['TableName']} differs from the template "
            "(key schema or indexes); restart moto to recreate it"
        )


def _bucket(template: Template, s3: Any, logical_id: str) -> str:
    properties = _properties(template, logical_id)
    name = template.physical_name(logical_id)
    request: dict[str, Any] = {"Bucket": name}
    if template.region != "us-east-1":
        request["CreateBucketConfiguration"] = {"LocationConstraint": template.region}
    try:
        s3.create_bucket(**request)
    except ClientError as error:
        if _error_code(error) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    versioning = properties.get("VersioningConfiguration")
    if versioning:
        s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning["Status"]})

    def optional(what: str, call: Any, **kwargs: Any) -> None:
        try:
            call(Bucket=name, **kwargs)
        except (ClientError, ParamValidationError) as error:  # moto stores these, acts on none
            _warn(f"{logical_id}: {what} not set: {error}")

    if "BucketEncryption" in properties:
        rules = [
            {
                ("ApplyServerSideEncryptionByDefault" if k == "ServerSideEncryptionByDefault" else k): v
                for k, v in rule.items()
            }
            for rule in properties["BucketEncryption"].get("ServerSideEncryptionConfiguration") or []
        ]
        optional("encryption", s3.put_bucket_encryption, ServerSideEncryptionConfiguration={"Rules": rules})
    if "PublicAccessBlockConfiguration" in properties:
        optional(
            "public access block",
            s3.put_public_access_block,
            PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"],
        )
    if "OwnershipControls" in properties:
        optional(
            "ownership controls",
            s3.put_bucket_ownership_controls,
            OwnershipControls=properties["OwnershipControls"],
        )
    if "CorsConfiguration" in properties:
        rules = [_cors_rule(rule) for rule in properties["CorsConfiguration"].get("CorsRules") or []]
        optional("CORS", s3.put_bucket_cors, CORSConfiguration={"CORSRules": rules})
    if "LifecycleConfiguration" in properties:
        rules = [_lifecycle_rule(rule) for rule in properties["LifecycleConfiguration"].get("Rules") or []]
        optional(
            "lifecycle",
            s3.put_bucket_lifecycle_configuration,
            LifecycleConfiguration={"Rules": rules},
        )
    template.set_attribute(logical_id, "Arn", f"arn:aws:s3:::{name}")
    return name


def _cors_rule(rule: dict[str, Any]) -> dict[str, Any]:
    renamed = {"ExposedHeaders": "ExposeHeaders", "Id": "ID", "MaxAge": "MaxAgeSeconds"}
    return {renamed.get(key, key): (int(value) if key == "MaxAge" else value) for key, value in rule.items()}


def _lifecycle_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """CloudFormation's lifecycle rule shape -> the S3 API's."""
    result: dict[str, Any] = {"Status": rule.get("Status", "Enabled")}
    if "Id" in rule:
        result["ID"] = rule["Id"]
    result["Filter"] = {"Prefix": rule["Prefix"]} if "Prefix" in rule else {"Prefix": ""}
    expiration: dict[str, Any] = {}
    if "ExpirationInDays" in rule:
        expiration["Days"] = int(rule["ExpirationInDays"])
    if "ExpirationDate" in rule:
        expiration["Date"] = rule["ExpirationDate"]
    if "ExpiredObjectDeleteMarker" in rule:
        expiration["ExpiredObjectDeleteMarker"] = rule["ExpiredObjectDeleteMarker"] in (True, "true")
    if expiration:
        result["Expiration"] = expiration
    if "AbortIncompleteMultipartUpload" in rule:
        days = int(rule["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"])
        result["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": days}
    noncurrent = dict(rule.get("NoncurrentVersionExpiration") or {})
    if "NoncurrentVersionExpirationInDays" in rule:
        noncurrent["NoncurrentDays"] = rule["NoncurrentVersionExpirationInDays"]
    if noncurrent:
        result["NoncurrentVersionExpiration"] = {key: int(value) for key, value in noncurrent.items()}
    return result


def _bucket_policy(template: Template, s3: Any, logical_id: str) -> None:
    properties = _properties(template, logical_id)
    document = dict(properties["PolicyDocument"])
    # moto enforces bucket policies, and its endpoint here is plain HTTP on loopback: a statement
    # denying insecure transport would refuse every call, so the local stack leaves those out.
    statements = document.get("Statement", [])
    document["Statement"] = [
        statement
        for statement in (statements if isinstance(statements, list) else [statements])
        if "aws:SecureTransport" not in json.dumps(statement.get("Condition", {}))
    ]
    if not document["Statement"]:
        return
    try:
        s3.put_bucket_policy(Bucket=properties["Bucket"], Policy=json.dumps(document))
    except ClientError as error:
        _warn(f"{logical_id}: bucket policy not set: {error}")


_QUEUE_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "DelaySeconds",
    "FifoQueue",
    "FifoThroughputLimit",
    "KmsDataKeyReusePeriodSeconds",
    "KmsMasterKeyId",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy",
    "RedrivePolicy",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)


def _queue(template: Template, sqs: Any, logical_id: str, *, with_redrive: bool) -> str:
    properties = _properties(template, logical_id)
    name = template.physical_name(logical_id)
    attributes = {key: _string(value) for key, value in _pick(properties, _QUEUE_ATTRIBUTES).items()}
    if not with_redrive:
        attributes.pop("RedrivePolicy", None)
        attributes.pop("RedriveAllowPolicy", None)
    try:
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attributes.pop("FifoQueue", None)  # fixed at creation
        if attributes:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    except ClientError as error:
        if _error_code(error) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
            raise
        request: dict[str, Any] = {"QueueName": name, "Attributes": attributes}
        if properties.get("Tags"):
            request["tags"] = {tag["Key"]: str(tag["Value"]) for tag in properties["Tags"]}
        url = sqs.create_queue(**request)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    template.set_attribute(logical_id, "Ref", url)
    template.set_attribute(logical_id, "QueueUrl", url)
    template.set_attribute(logical_id, "Arn", arn)
    template.set_attribute(logical_id, "QueueName", name)
    return name


def _kms_key(template: Template, kms: Any, logical_id: str) -> str:
    """A symmetric key, found again by its alias `alias/<physical name>` (no key policy: moto
    does not enforce them)."""
    properties = _properties(template, logical_id)
    alias = "alias/" + template.physical_name(logical_id)
    try:
        key_id = kms.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"]
    except ClientError as error:
        if _error_code(error) != "NotFoundException":
            raise
        key_id = kms.create_key(Description=str(properties.get("Description", "")))["KeyMetadata"]["KeyId"]
        kms.create_alias(AliasName=alias, TargetKeyId=key_id)
    template.set_attribute(logical_id, "Ref", key_id)
    template.set_attribute(
        logical_id, "Arn", f"arn:aws:kms:{template.region}:{template.account_id}:key/{key_id}"
    )
    return str(key_id)


def _event_bus(template: Template, events: Any, logical_id: str) -> str:
    properties = _properties(template, logical_id)
    name = template.physical_name(logical_id)
    try:
        request: dict[str, Any] = {"Name": name}
        if properties.get("Tags"):
            request["Tags"] = properties["Tags"]
        arn = events.create_event_bus(**request)["EventBusArn"]
    except ClientError as error:
        if _error_code(error) != "ResourceAlreadyExistsException":
            raise
        arn = events.describe_event_bus(Name=name)["Arn"]
    template.set_attribute(logical_id, "Arn", arn)
    template.set_attribute(logical_id, "Name", name)
    return name


_USER_POOL_SETTINGS = (
    "Policies",
    "DeletionProtection",
    "AutoVerifiedAttributes",
    "AliasAttributes",
    "UsernameAttributes",
    "SmsVerificationMessage",
    "EmailVerificationMessage",
    "EmailVerificationSubject",
    "VerificationMessageTemplate",
    "SmsAuthenticationMessage",
    "MfaConfiguration",
    "UserAttributeUpdateSettings",
    "DeviceConfiguration",
    "EmailConfiguration",
    "SmsConfiguration",
    "UserPoolTags",
    "AdminCreateUserConfig",
    "Schema",
    "UserPoolAddOns",
    "UsernameConfiguration",
    "AccountRecoverySetting",
    "UserPoolTier",
)


def _user_pool(template: Template, cognito: Any, logical_id: str) -> str:
    properties = _properties(template, logical_id)
    name = template.physical_name(logical_id)
    pool_id = _find_user_pool(cognito, name)
    if pool_id is None:
        request = _pick(properties, _USER_POOL_SETTINGS)
        admin = request.get("AdminCreateUserConfig")
        if isinstance(admin, dict):  # deprecated in CloudFormation, unknown to the API
            request["AdminCreateUserConfig"] = {
                k: v for k, v in admin.items() if k != "UnusedAccountValidityDays"
            }
        if "LambdaConfig" in properties:
            _warn(f"{logical_id}: LambdaConfig (Cognito triggers) is not emulated locally")
        pool_id = cognito.create_user_pool(PoolName=name, **request)["UserPool"]["Id"]
    arn = f"arn:aws:cognito-idp:{template.region}:{template.account_id}:userpool/{pool_id}"
    provider = f"cognito-idp.{template.region}.amazonaws.com/{pool_id}"
    for attribute, value in {
        "Ref": pool_id,
        "UserPoolId": pool_id,
        "Arn": arn,
        "ProviderName": provider,
        "ProviderURL": f"https://{provider}",
    }.items():
        template.set_attribute(logical_id, attribute, value)
    return str(pool_id)


def _find_user_pool(cognito: Any, name: str) -> str | None:
    for page in cognito.get_paginator("list_user_pools").paginate(MaxResults=60):
        for pool in page.get("UserPools", []):
            if pool.get("Name") == name:
                return str(pool["Id"])
    return None


_CLIENT_SETTINGS = (
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
    "DefaultRedirectURI",
    "AllowedOAuthFlows",
    "AllowedOAuthScopes",
    "AllowedOAuthFlowsUserPoolClient",
    "PreventUserExistenceErrors",
    "EnableTokenRevocation",
    "EnablePropagateAdditionalUserContextData",
    "AuthSessionValidity",
)


def _user_pool_client(template: Template, cognito: Any, logical_id: str) -> str:
    properties = _properties(template, logical_id)
    name = template.physical_name(logical_id)
    pool_id = str(properties["UserPoolId"])
    client_id: str | None = None
    paginator = cognito.get_paginator("list_user_pool_clients")
    for page in paginator.paginate(UserPoolId=pool_id, MaxResults=60):
        for existing in page.get("UserPoolClients", []):
            if existing.get("ClientName") == name:
                client_id = str(existing["ClientId"])
    if client_id is None:
        request = _pick(properties, _CLIENT_SETTINGS)
        if "ReadAttributes" not in request:
            # Real Cognito lets a client without ReadAttributes read every attribute, so its ID
            # tokens carry email_verified and the rest; moto only puts listed ones in the token.
            request["ReadAttributes"] = [*_STANDARD_ATTRIBUTES, *_custom_attributes(template, pool_id)]
        client_id = str(
            cognito.create_user_pool_client(UserPoolId=pool_id, ClientName=name, **request)["UserPoolClient"][
                "ClientId"
            ]
        )
    template.set_attribute(logical_id, "Ref", client_id)
    template.set_attribute(logical_id, "ClientId", client_id)
    return client_id


def _custom_attributes(template: Template, pool_id: str) -> list[str]:
    for logical_id in template.resources_of_type("AWS::Cognito::UserPool"):
        if template.attribute(logical_id, "UserPoolId") == pool_id:
            schema = _properties(template, logical_id).get("Schema") or []
            standard = set(_STANDARD_ATTRIBUTES)
            return [f"custom:{item['Name']}" for item in schema if item.get("Name") not in standard]
    return []


def _user_pool_group(template: Template, cognito: Any, logical_id: str) -> str:
    properties = _properties(template, logical_id)
    name = str(properties.get("GroupName") or template.physical_name(logical_id))
    request = _pick(properties, ("Description", "Precedence", "RoleArn"))
    try:
        cognito.create_group(GroupName=name, UserPoolId=str(properties["UserPoolId"]), **request)
    except ClientError as error:
        if _error_code(error) != "GroupExistsException":
            raise
    template.set_attribute(logical_id, "Ref", name)
    return name


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
