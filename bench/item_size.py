"""The size DynamoDB counts for an item (in the low-level typed form), for tests and benchmarks
that check the 400 KB limit."""

from __future__ import annotations

from typing import Any

DYNAMODB_ITEM_LIMIT = 400 * 1024


def _attribute_size(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode("utf-8", "surrogatepass"))
    if kind in ("N", "B"):
        return len(inner)
    if kind == "L":
        return 3 + sum(1 + _attribute_size(item) for item in inner)
    if kind == "M":
        return 3 + sum(len(name.encode()) + 1 + _attribute_size(item) for name, item in inner.items())
    if kind in ("SS", "NS", "BS"):
        return sum(len(item.encode() if isinstance(item, str) else item) for item in inner)
    return 1


def item_size(item: dict[str, Any]) -> int:
    """The size DynamoDB counts against its 400 KB limit: names and values in UTF-8, plus 3 bytes
    per list or map and 1 per entry (an upper bound of AWS's published rules)."""
    return sum(len(name.encode()) + _attribute_size(value) for name, value in item.items())
