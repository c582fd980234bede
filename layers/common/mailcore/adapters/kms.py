"""KMS: the codes Cognito encrypts with the AWS Encryption SDK under the stack's key (port CodeDecrypter)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from mailcore.errors import TeamConfigInvalid


class KmsCodeDecrypter:
    def __init__(self, key_arn: str) -> None:
        self.key_arn = key_arn

    @cached_property
    def _sdk(self) -> tuple[Any, Any]:
        # Made on first use, once per process: the provider keeps its KMS client.
        import aws_encryption_sdk
        from aws_encryption_sdk.identifiers import CommitmentPolicy

        if not self.key_arn:
            raise TeamConfigInvalid("SYSTEM_MAIL_KEY_ARN is not set: the Cognito code cannot be decrypted")
        client = aws_encryption_sdk.EncryptionSDKClient(
            commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_ALLOW_DECRYPT
        )
        provider = aws_encryption_sdk.StrictAwsKmsMasterKeyProvider(key_ids=[self.key_arn])
        return client, provider

    def decrypt(self, ciphertext: bytes) -> bytes:
        client, provider = self._sdk
        plaintext, _ = client.decrypt(source=ciphertext, key_provider=provider)
        return bytes(plaintext)
