"""Text from outside (a server's reply) cut to a size in bytes, as DynamoDB counts an item."""

from __future__ import annotations

MARK = " […]"


def cut_to_bytes(text: str, limit: int) -> str:
    """`text` if its UTF-8 form fits in `limit` bytes, else its longest prefix that fits with
    the marker."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    room = max(limit - len(MARK.encode()), 0)
    return data[:room].decode("utf-8", "ignore") + MARK
