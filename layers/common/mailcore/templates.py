"""Named mail templates (Jinja2): a subject, a text body and an HTML body each.

A template NAME is the files `NAME/subject.txt`, `NAME/text.txt` and optionally `NAME/html.html`,
plus optionally `NAME/secrets.txt` (one variable name a line: values never stored in clear, on top
of SECRET_VARIABLES). They ship in a folder next to the function; a deployment overrides or adds
templates with objects of the same names under an S3 prefix, which win over the shipped files.
Both are re-read at most every `max_age` seconds, so a changed object takes effect without a
redeploy. Variables are strict: a missing one is an error naming it, never an empty mail.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from mailcore.errors import InvalidInput, TeamConfigInvalid

if TYPE_CHECKING:
    from mailcore.storage import BlobStore

# Values of these variables open an account (codes, links, passwords): never logged or stored in clear.
SECRET_VARIABLES = frozenset(
    {"code", "reset_url", "verification_url", "link", "token", "password", "temporary_password"}
)
PLACEHOLDER = "[hidden]"
TEMPLATE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
PARTS = ("subject.txt", "text.txt", "html.html", "secrets.txt")


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    body_text: str
    body_html: str | None


@dataclass(frozen=True)
class Rendering:
    """A template rendered twice: as sent, and as stored (secret values replaced by PLACEHOLDER)."""

    sent: RenderedMail
    stored: RenderedMail
    secret_values: tuple[str, ...]


class _OverridableLoader(jinja2.BaseLoader):
    """S3 object `prefix + name` when there is one, else the shipped file; fresh for max_age seconds."""

    def __init__(
        self,
        shipped: Path,
        blobs: BlobStore | None,
        prefix: str,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shipped = shipped
        self.blobs = blobs
        self.prefix = prefix
        self.max_age = max_age
        self.clock = clock
        # Jinja caches the templates it found; this also remembers which keys S3 does not have.
        self._s3_seen: dict[str, tuple[float, str | None]] = {}

    def get_source(
        self, environment: jinja2.Environment, template: str
    ) -> tuple[str, str | None, Callable[[], bool]]:
        loaded_at = self.clock()

        def fresh() -> bool:
            return self.clock() - loaded_at < self.max_age

        if self.blobs is not None and self.prefix:
            source = self._from_s3(self.prefix + template)
            if source is not None:
                return source, None, fresh
        path = self.shipped / template
        if not path.is_file():
            raise jinja2.TemplateNotFound(template)
        return path.read_text(encoding="utf-8"), str(path), fresh

    def _from_s3(self, key: str) -> str | None:
        assert self.blobs is not None
        seen = self._s3_seen.get(key)
        if seen is not None and self.clock() - seen[0] < self.max_age:
            return seen[1]
        source = self.blobs.get(key).decode("utf-8") if self.blobs.exists(key) else None
        self._s3_seen[key] = (self.clock(), source)
        return source


class MailTemplates:
    def __init__(
        self,
        shipped: Path,
        *,
        blobs: BlobStore | None = None,
        prefix: str = "",
        max_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.shipped = shipped
        self.environment = jinja2.Environment(
            loader=_OverridableLoader(shipped, blobs, prefix, max_age, clock),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            auto_reload=True,
            keep_trailing_newline=True,
        )

    def shipped_names(self) -> list[str]:
        return sorted(path.parent.name for path in self.shipped.glob("*/subject.txt"))

    def _part(self, name: str, part: str) -> jinja2.Template | None:
        try:
            return self.environment.get_template(f"{name}/{part}")
        except jinja2.TemplateNotFound:
            return None
        except jinja2.TemplateSyntaxError as error:
            raise TeamConfigInvalid(
                f"the mail template {name!r} ({part}, line {error.lineno}) is broken: {error.message}"
            ) from None

    def secret_names(self, name: str) -> frozenset[str]:
        declared = self._part(name, "secrets.txt")
        extra = declared.render().split() if declared is not None else []
        return SECRET_VARIABLES | frozenset(extra)

    def render(self, name: str, variables: Mapping[str, Any]) -> Rendering:
        """Renders template `name`; InvalidInput (field `template` or `variables`) says what is missing."""
        if not TEMPLATE_NAME.match(name):
            raise InvalidInput(f"not a template name: {name[:70]!r}", field="template")
        subject, text, html = (self._part(name, part) for part in PARTS[:3])
        if subject is None or text is None:
            known = ", ".join(self.shipped_names())
            raise InvalidInput(f"no mail template {name!r} (there are: {known})", field="template")
        secrets = self.secret_names(name)
        hidden = {key: (PLACEHOLDER if key in secrets else value) for key, value in variables.items()}
        sent = self._render_parts(name, subject, text, html, variables)
        stored = self._render_parts(name, subject, text, html, hidden)
        secret_values = tuple(str(value) for key, value in variables.items() if key in secrets and str(value))
        # A template may show a secret in another form (upper-cased, URL-encoded); the placeholder
        # rendering never sees the value, and this is the last line of defence for plain copies.
        stored = RenderedMail(*(_without(part, secret_values) for part in _fields(stored)))
        return Rendering(sent=sent, stored=stored, secret_values=secret_values)

    @staticmethod
    def _render_parts(
        name: str,
        subject: jinja2.Template,
        text: jinja2.Template,
        html: jinja2.Template | None,
        variables: Mapping[str, Any],
    ) -> RenderedMail:
        try:
            rendered_subject = " ".join(subject.render(variables).split())
            body_text = text.render(variables)
            body_html = html.render(variables) if html is not None else None
        except jinja2.UndefinedError as error:
            # Jinja names the variable ("'reset_url' is undefined"), never a value.
            raise InvalidInput(f"template {name!r}: {error.message}", field="variables") from None
        if not rendered_subject:
            raise InvalidInput(f"template {name!r} rendered an empty subject", field="variables")
        return RenderedMail(rendered_subject, body_text, body_html)


def _fields(mail: RenderedMail) -> tuple[str, str, str | None]:
    return mail.subject, mail.body_text, mail.body_html


def _without(text: str | None, secrets: tuple[str, ...]) -> Any:
    if text is None:
        return None
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, PLACEHOLDER)
    return text
