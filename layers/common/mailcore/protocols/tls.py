"""TLS for the mail servers: always verified, with an optional extra trust anchor."""

from __future__ import annotations

import ssl
from functools import cache


@cache
def client_tls_context(extra_ca_file: str = "") -> ssl.SSLContext:
    """The system trust store, plus `extra_ca_file` (the local stack's CA) when given."""
    context = ssl.create_default_context()
    if extra_ca_file:
        context.load_verify_locations(cafile=extra_ca_file)
    return context
