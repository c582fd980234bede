"""The user pool's custom email sender (SystemMailRoot.deliver_cognito): the code Cognito encrypted
is decrypted with the stack's key and mailed to the user with the trigger's template."""

from __future__ import annotations

import base64

import pytest
from mailcore.errors import InvalidInput
from mailcore.services.system import SystemMailRequest, SystemMailResult
from mailcore.wiring.system_mail import SystemMailRoot

ATTRIBUTES = {"email": "ann@example.test", "name": "Ann"}


class RecordingMailer:
    def __init__(self) -> None:
        self.requests: list[SystemMailRequest] = []

    def deliver(
        self, request: SystemMailRequest, delivery: str | None = None, seconds_left=None
    ) -> SystemMailResult:
        self.requests.append(request)
        return SystemMailResult(status="sent", mail_id="m1")


class ReversingDecrypter:
    """Stands in for KMS: the 'ciphertext' is the code reversed."""

    def __init__(self) -> None:
        self.decrypted: list[bytes] = []

    def decrypt(self, ciphertext: bytes) -> bytes:
        self.decrypted.append(ciphertext)
        return ciphertext[::-1]


def cognito_root() -> tuple[SystemMailRoot, RecordingMailer, ReversingDecrypter]:
    mailer, decrypter = RecordingMailer(), ReversingDecrypter()
    return SystemMailRoot(mailer=mailer, decrypter=decrypter, idempotency_table=""), mailer, decrypter  # type: ignore[arg-type]


def test_a_password_recovery_mails_the_decrypted_code_to_the_user():
    root, mailer, _ = cognito_root()
    encrypted = base64.b64encode(b"654321").decode()
    result = root.deliver_cognito("CustomEmailSender_ForgotPassword", "ann", ATTRIBUTES, encrypted)
    (request,) = mailer.requests
    assert result.status == "sent" and request.template == "password_recovery"
    assert request.to == ["ann@example.test"] and request.variables["code"] == "123456"


def test_a_notification_carries_no_code_and_decrypts_nothing():
    root, mailer, decrypter = cognito_root()
    root.deliver_cognito("CustomEmailSender_AccountTakeOverNotification", "ann", ATTRIBUTES, None)
    (request,) = mailer.requests
    assert request.template == "notification" and "code" not in request.variables
    assert decrypter.decrypted == []


def test_a_code_that_is_not_base64_is_refused_naming_the_field_and_nothing_is_mailed():
    root, mailer, _ = cognito_root()
    with pytest.raises(InvalidInput) as refused:
        root.deliver_cognito("CustomEmailSender_SignUp", "ann", ATTRIBUTES, "not base64!")
    assert refused.value.field == "request.code" and mailer.requests == []
