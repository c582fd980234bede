"""MIME: outgoing mail built (`build`), received mail parsed (`parse`)."""

from mailcore.mime.build import OutgoingAttachment, build_message, new_message_id
from mailcore.mime.parse import ParsedAttachment, ParsedMail, parse_message

__all__ = [
    "OutgoingAttachment",
    "ParsedAttachment",
    "ParsedMail",
    "build_message",
    "new_message_id",
    "parse_message",
]
