"""A small OAuth2 authorisation server on 127.0.0.1, for the local stack and the tests.

It plays the provider's part for accounts in auth mode oauth2 (what Entra ID or Google do in the
cloud) and Dovecot's token check:

    POST /token       grant_type=client_credentials (client_id, client_secret) or
                      grant_type=refresh_token (refresh_token, client_id[, client_secret]);
                      answers {"access_token", "token_type", "expires_in"[, "refresh_token"]}
                      or RFC 6749 errors (400 invalid_grant / 401 invalid_client)
    POST /revoke      token=<refresh or access token> (RFC 7009): revokes it, and a refresh
                      token's access tokens with it
    POST /introspect  token=<access token> (RFC 7662) for Dovecot's oauth2 passdb
                      (introspection_mode = post): {"active": true, "username": ...} or
                      {"active": false}

Access tokens are short-lived JWTs signed with HS256 (joserfc, a dev dependency only: the service
treats tokens as opaque strings). Each client is tied to one mailbox (the `username` its tokens
are for). With `rotate_refresh_tokens`, every refresh answers a new refresh token and the old
one stops working, as some providers do.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey


@dataclass
class Client:
    client_id: str
    client_secret: str
    username: str


@dataclass
class _RefreshToken:
    client_id: str
    username: str
    active: bool = True


@dataclass
class OAuth2Server:
    """Start with `start()`; `url` is then e.g. http://127.0.0.1:PORT."""

    host: str = "127.0.0.1"
    port: int = 0
    token_lifetime: float = 300.0
    rotate_refresh_tokens: bool = False
    calls: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._key = OctKey.generate_key(256)
        self._clients: dict[str, Client] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._revoked_jti: set[str] = set()
        self._jti_of_refresh: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Per client: a lifetime other than token_lifetime, and whether to rotate its refresh tokens.
        self.lifetimes: dict[str, float] = {}
        self.rotating: set[str] = set()
        # Every token handed out, so tests can prove none of them leaks anywhere.
        self.issued: list[str] = []

    # ---------------------------------------------------------------- set-up
    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        return f"http://{self.host}:{self._server.server_address[1]}"

    @property
    def token_url(self) -> str:
        return self.url + "/token"

    @property
    def introspection_url(self) -> str:
        return self.url + "/introspect"

    def start(self) -> OAuth2Server:
        server = ThreadingHTTPServer((self.host, self.port), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="oauth2-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def add_client(
        self, username: str, *, client_id: str | None = None, client_secret: str | None = None
    ) -> Client:
        client = Client(
            client_id or "client-" + secrets.token_hex(6),
            client_secret or secrets.token_urlsafe(18),
            username.lower(),
        )
        with self._lock:
            self._clients[client.client_id] = client
        return client

    def issue_refresh_token(self, client: Client) -> str:
        """A refresh token as the provider's consent flow would hand it out once."""
        token = "rt-" + secrets.token_urlsafe(24)
        with self._lock:
            self._refresh[token] = _RefreshToken(client.client_id, client.username)
            self.issued.append(token)
        return token

    def revoke(self, token: str) -> None:
        with self._lock:
            self._revoke(token)

    def _revoke(self, token: str) -> None:
        if token in self._refresh:
            self._refresh[token].active = False
            self._revoked_jti |= self._jti_of_refresh.get(token, set())
            return
        claims = self._claims(token)
        if claims is not None:
            self._revoked_jti.add(str(claims.get("jti")))

    # ---------------------------------------------------------------- endpoints
    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        grant = form.get("grant_type", "")
        self.calls[grant or "none"] += 1
        with self._lock:
            client = self._clients.get(form.get("client_id", ""))
            if client is None:
                return 401, {"error": "invalid_client", "error_description": "unknown client"}
            if grant == "client_credentials":
                if not secrets.compare_digest(form.get("client_secret", ""), client.client_secret):
                    return 401, {"error": "invalid_client", "error_description": "wrong client secret"}
                return 200, self._access(client, None)
            if grant == "refresh_token":
                given = form.get("refresh_token", "")
                if "client_secret" in form and not secrets.compare_digest(
                    form["client_secret"], client.client_secret
                ):
                    return 401, {"error": "invalid_client", "error_description": "wrong client secret"}
                known = self._refresh.get(given)
                if known is None or not known.active or known.client_id != client.client_id:
                    return 400, {
                        "error": "invalid_grant",
                        "error_description": "the refresh token has expired or been revoked",
                    }
                answer = self._access(client, given)
                if self.rotate_refresh_tokens or client.client_id in self.rotating:
                    known.active = False
                    fresh = "rt-" + secrets.token_urlsafe(24)
                    self._refresh[fresh] = _RefreshToken(client.client_id, client.username)
                    answer["refresh_token"] = fresh
                    self.issued.append(fresh)
                return 200, answer
            return 400, {"error": "unsupported_grant_type"}

    def _access(self, client: Client, refresh_token: str | None) -> dict[str, Any]:
        lifetime = self.lifetimes.get(client.client_id, self.token_lifetime)
        now = time.time()
        jti = secrets.token_hex(8)
        claims = {
            "iss": "local-oauth2",
            "sub": client.username,
            "username": client.username,
            "azp": client.client_id,
            "iat": int(now),
            "exp": now + lifetime,
            "jti": jti,
        }
        if refresh_token is not None:
            self._jti_of_refresh.setdefault(refresh_token, set()).add(jti)
        token = jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, self._key)
        self.issued.append(token)
        return {"access_token": token, "token_type": "Bearer", "expires_in": max(1, int(lifetime))}

    def _claims(self, token: str) -> dict[str, Any] | None:
        try:
            return dict(jwt.decode(token, self._key).claims)
        except (JoseError, ValueError):
            return None

    def introspect(self, form: dict[str, str]) -> dict[str, Any]:
        self.calls["introspect"] += 1
        claims = self._claims(form.get("token", ""))
        with self._lock:
            if (
                claims is None
                or float(claims.get("exp", 0)) < time.time()
                or claims.get("jti") in self._revoked_jti
            ):
                return {"active": False}
        return {
            "active": True,
            "username": claims["username"],
            "exp": int(claims["exp"]),
            "client_id": claims["azp"],
        }


def _handler(server: OAuth2Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            path = self.path.split("?", 1)[0]
            if path == "/token":
                status, answer = server.token(form)
            elif path == "/introspect":
                status, answer = 200, server.introspect(form)
            elif path == "/revoke":
                server.revoke(form.get("token", ""))
                status, answer = 200, {}
            else:
                status, answer = 404, {"error": "not_found"}
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests carry tokens in their bodies only; nothing worth logging

    return Handler
