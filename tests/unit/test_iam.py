"""The local IAM evaluator (local/iam.py): what a call asks for, and what a role's policies answer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from local import iam
from local.aws import create_resources, start_moto_server
from local.template import Template

ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "123456789012"
REGION = "us-east-1"


def allow(action: str, resource: str, **extra: object) -> dict[str, object]:
    return {"Statement": [{"Effect": "Allow", "Action": action, "Resource": resource, **extra}]}


def test_a_question_mark_matches_exactly_one_character():
    policy = allow("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:*:*:secret:system-??????")
    assert (
        iam.evaluate(
            (policy,), "secretsmanager:GetSecretValue", "arn:aws:secretsmanager:r:a:secret:system-AbCdEf"
        )
        == "Allow"
    )
    assert (
        iam.evaluate(
            (policy,), "secretsmanager:GetSecretValue", "arn:aws:secretsmanager:r:a:secret:system-AbCdE"
        )
        == "ImplicitDeny"
    )


def test_actions_match_without_case_and_resources_with_case():
    policy = allow("SQS:SendMessage*", "arn:aws:sqs:r:a:Queue")
    assert iam.evaluate((policy,), "sqs:SendMessageBatch", "arn:aws:sqs:r:a:Queue") == "Allow"
    assert iam.evaluate((policy,), "sqs:SendMessage", "arn:aws:sqs:r:a:queue") == "ImplicitDeny"


def test_an_explicit_deny_wins_over_an_allow():
    deny = {"Statement": [{"Effect": "Deny", "Action": "s3:*", "Resource": "*"}]}
    assert iam.evaluate((allow("s3:GetObject", "*"), deny), "s3:GetObject", "arn:aws:s3:::b/k") == "Deny"


def test_a_deny_on_insecure_transport_does_not_apply_to_the_sdk_over_https():
    deny = {
        "Statement": [
            {
                "Effect": "Deny",
                "Action": "s3:*",
                "Resource": "*",
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ]
    }
    assert iam.evaluate((allow("s3:GetObject", "*"), deny), "s3:GetObject", "arn:aws:s3:::b/k") == "Allow"


def test_a_condition_operator_not_evaluated_locally_fails_loudly():
    policy = allow("s3:GetObject", "*", Condition={"DateGreaterThan": {"aws:CurrentTime": "2020-01-01"}})
    with pytest.raises(ValueError, match="DateGreaterThan"):
        iam.evaluate((policy,), "s3:GetObject", "arn:aws:s3:::b/k")


def test_a_transaction_asks_for_each_action_it_carries_on_each_table():
    items = [
        {"Put": {"TableName": "mail", "Item": {}}},
        {"Update": {"TableName": "state", "Key": {}}},
        {"ConditionCheck": {"TableName": "mail", "Key": {}}},
    ]
    asked = iam.requested(
        "dynamodb", "TransactWriteItems", {"TransactItems": items}, region=REGION, account=ACCOUNT
    )
    table = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/"
    assert asked == [
        ("dynamodb:PutItem", table + "mail"),
        ("dynamodb:UpdateItem", table + "state"),
        ("dynamodb:ConditionCheckItem", table + "mail"),
    ]


def test_a_query_on_an_index_asks_for_the_index():
    asked = iam.requested(
        "dynamodb", "Query", {"TableName": "mail", "IndexName": "ByTeam"}, region=REGION, account=ACCOUNT
    )
    assert asked == [("dynamodb:Query", f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/mail/index/ByTeam")]


def test_a_queue_url_and_a_secret_name_become_their_arns():
    url = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/pulls"
    assert iam.requested("sqs", "SendMessageBatch", {"QueueUrl": url}, region=REGION, account=ACCOUNT) == [
        ("sqs:SendMessage", f"arn:aws:sqs:{REGION}:{ACCOUNT}:pulls")
    ]
    (asked,) = iam.requested(
        "secretsmanager", "GetSecretValue", {"SecretId": "teams/a"}, region=REGION, account=ACCOUNT
    )
    assert (
        asked[1].startswith(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:teams/a-")
        and len(asked[1].rsplit("-", 1)[1]) == 6
    )


def test_a_call_outside_the_role_fails_with_access_denied_before_it_is_sent():
    iam.install()
    role = iam.Principal("Reader", "reader-role", REGION, ACCOUNT, (allow("s3:ListBucket", "*"),))
    with mock_aws():
        s3 = boto3.session.Session().client("s3", region_name=REGION)
        s3.create_bucket(Bucket="mail-bucket")
        with iam.acting_as(role):
            s3.list_objects_v2(Bucket="mail-bucket")
            with pytest.raises(ClientError) as denied:
                s3.put_object(Bucket="mail-bucket", Key="k", Body=b"x")
        assert denied.value.response["Error"]["Code"] == "AccessDenied"
        assert "reader-role/Reader is not authorized to perform: s3:PutObject" in str(denied.value)
        assert s3.list_objects_v2(Bucket="mail-bucket").get("KeyCount") == 0  # the write never reached S3


def test_every_function_runs_under_the_role_moto_cloudformation_created_with_its_arns():
    template = Template.load(ROOT / "template.yaml", stack_name="iam-check")
    server, endpoint = start_moto_server()
    try:
        session = boto3.Session(
            aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION
        )
        create_resources(template, session, endpoint)
        roles = session.client("iam", endpoint_url=endpoint)
        for function_id in template.functions():
            role = template.execution_role(function_id)
            assert re.fullmatch(f"iam-check-{function_id}Role-[A-Z0-9]{{12}}", role.role_name)
            created = roles.list_role_policies(RoleName=role.role_name)["PolicyNames"]
            stored = [roles.get_role_policy(RoleName=role.role_name, PolicyName=name) for name in created]
            # moto's CloudFormation stores the document as a dict; its IAM hands back the repr
            documents = [ast.literal_eval(str(policy["PolicyDocument"])) for policy in stored]
            assert list(role.policies) == documents
        # Only the console calls no AWS service (its app client's id comes from the template).
        ungranted = {
            function_id
            for function_id in template.functions()
            if not template.execution_role(function_id).policies
        }
        assert ungranted == {"ConsoleFunction"}
    finally:
        server.stop()
