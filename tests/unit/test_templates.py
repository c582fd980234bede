from pathlib import Path

import pytest
from mailcore.errors import InvalidInput, TeamConfigInvalid
from mailcore.templates import PLACEHOLDER, MailTemplates

from tests.fakes import MemoryBlobs, MemoryRateLimits

SHIPPED = Path(__file__).resolve().parents[2] / "functions" / "system_mail" / "templates"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_every_shipped_template_has_a_subject_a_text_and_an_html_body():
    names = MailTemplates(SHIPPED).shipped_names()
    assert {"password_recovery", "notification", "verification", "invitation"} <= set(names)
    for name in names:
        assert {path.name for path in (SHIPPED / name).iterdir()} >= {"subject.txt", "text.txt", "html.html"}


def test_html_is_autoescaped_and_text_is_not():
    rendering = MailTemplates(SHIPPED).render(
        "password_recovery", {"name": "<b>Bo</b> & co", "reset_url": "https://x.test/r?a=1&b=2"}
    )
    assert "Hello <b>Bo</b> & co," in rendering.sent.body_text
    assert "Hello &lt;b&gt;Bo&lt;/b&gt; &amp; co," in (rendering.sent.body_html or "")
    assert 'href="https://x.test/r?a=1&amp;b=2"' in (rendering.sent.body_html or "")


def test_a_missing_variable_is_an_error_naming_it():
    with pytest.raises(InvalidInput, match="'name' is undefined") as raised:
        MailTemplates(SHIPPED).render("password_recovery", {"reset_url": "https://x.test/r"})
    assert raised.value.field == "variables"


def test_password_recovery_needs_a_reset_url_or_a_code():
    with pytest.raises(InvalidInput, match="'code' is undefined"):
        MailTemplates(SHIPPED).render("password_recovery", {"name": "Bo"})


def test_secret_variables_are_replaced_by_a_placeholder_in_the_stored_rendering():
    rendering = MailTemplates(SHIPPED).render("verification", {"name": "Bo", "code": "424242"})
    assert "424242" in rendering.sent.body_text
    stored = rendering.stored
    assert "424242" not in stored.body_text + (stored.body_html or "") + stored.subject
    assert PLACEHOLDER in stored.body_text
    assert rendering.secret_values == ("424242",)


def test_a_template_declares_more_secret_variables_in_secrets_txt(tmp_path):
    (tmp_path / "pin").mkdir()
    (tmp_path / "pin" / "subject.txt").write_text("Your PIN")
    (tmp_path / "pin" / "text.txt").write_text("PIN {{ pin }} for {{ name }}")
    (tmp_path / "pin" / "secrets.txt").write_text("pin\n")
    rendering = MailTemplates(tmp_path).render("pin", {"pin": "9911", "name": "Bo"})
    assert rendering.sent.body_text == "PIN 9911 for Bo"
    assert rendering.stored.body_text == f"PIN {PLACEHOLDER} for Bo"
    assert rendering.sent.body_html is None


def test_an_s3_object_overrides_the_shipped_template_once_the_cache_expires():
    blobs, clock = MemoryBlobs(), Clock()
    templates = MailTemplates(SHIPPED, blobs=blobs, prefix="t/", max_age=60, clock=clock)
    variables = {"title": "T", "message": "M"}
    assert templates.render("notification", variables).sent.subject == "T"
    blobs.put("t/notification/subject.txt", b"[Ops] {{ title }}", "text/plain")
    clock.now += 30
    assert templates.render("notification", variables).sent.subject == "T"  # still cached
    clock.now += 31
    assert templates.render("notification", variables).sent.subject == "[Ops] T"


def test_a_broken_template_from_s3_is_a_configuration_error():
    blobs = MemoryBlobs()
    blobs.put("t/notification/subject.txt", b"{% if %}", "text/plain")
    with pytest.raises(TeamConfigInvalid, match="notification"):
        MailTemplates(SHIPPED, blobs=blobs, prefix="t/").render(
            "notification", {"title": "T", "message": "M"}
        )


@pytest.mark.parametrize("name", ["../etc/passwd", "Nope", ""])
def test_template_names_are_plain_words(name):
    with pytest.raises(InvalidInput) as raised:
        MailTemplates(SHIPPED).render(name, {})
    assert raised.value.field == "template"


def test_the_rate_limit_counts_per_key_and_window():
    limits = MemoryRateLimits()
    taken = [limits.take("k", "2026-11-24T10", limit=2, expires_at=0) for _ in range(3)]
    assert taken == [True, True, False]
    assert limits.take("k", "2026-11-24T11", limit=2, expires_at=0)
    assert limits.take("other", "2026-11-24T10", limit=2, expires_at=0)
