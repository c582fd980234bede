"""Where the service's resources are: read from the environment template.yaml gives every function."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    mail_table: str
    files_table: str
    pull_state_table: str
    bucket: str
    team_secret_prefix: str
    event_bus: str = ""
    system_secret_name: str = ""
    # An extra trust anchor for the mail servers' TLS (the local stack's own CA); empty in the cloud.
    tls_ca_file: str = ""
    pull_queue_url: str = ""
    # Where mail that ended failed after its retries is also put (SQS queue URL), and the table
    # of the send API's Idempotency-Key records.
    outbox_dlq_url: str = ""
    idempotency_table: str = ""
    # System mail (functions/system_mail): see services/system.py.
    system_recipient_limit: int = 5
    system_templates_prefix: str = ""
    store_system_mail_secrets: bool = False
    system_mail_key_arn: str = ""

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        return cls(
            mail_table=env.get("MAIL_TABLE", ""),
            files_table=env.get("FILES_TABLE", ""),
            pull_state_table=env.get("PULL_STATE_TABLE", ""),
            bucket=env.get("MAIL_BUCKET", ""),
            team_secret_prefix=env.get("TEAM_SECRET_PREFIX", "mail-service/teams/"),
            event_bus=env.get("MAIL_EVENT_BUS", ""),
            system_secret_name=env.get("SYSTEM_MAIL_SECRET_NAME", ""),
            tls_ca_file=env.get("MAIL_TLS_CA_FILE", ""),
            pull_queue_url=env.get("PULL_QUEUE_URL", ""),
            outbox_dlq_url=env.get("OUTBOX_DLQ_URL", ""),
            idempotency_table=env.get("IDEMPOTENCY_TABLE", ""),
            system_recipient_limit=int(env.get("SYSTEM_MAIL_RECIPIENT_LIMIT", "5")),
            system_templates_prefix=env.get("SYSTEM_TEMPLATES_PREFIX", ""),
            store_system_mail_secrets=env.get("STORE_SYSTEM_MAIL_SECRETS", "false").lower() == "true",
            system_mail_key_arn=env.get("SYSTEM_MAIL_KEY_ARN", ""),
        )
