"""One configuration object: every setting read once from the environment, typed, with units in its name, and
documented in one generated table."""

from __future__ import annotations

from pathlib import Path

import pytest

from tidebase import ConfigurationError, Settings, Tidebase
from tidebase.settings import table

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_the_environment_is_read_with_units_and_types() -> None:
    """Millisecond variables become seconds, numbers and booleans are typed, DATABASE_URL is the fallback of
    TIDEBASE_DATABASE_URL, a zero statement timeout means no bound, and unset variables keep the defaults."""
    settings = Settings.from_env({
        "DATABASE_URL": "postgresql://u@h/db", "TIDEBASE_LEASE_MS": "45000", "TIDEBASE_RUN_LEASE_MS": "1500",
        "TIDEBASE_RECONCILER": "0", "TIDEBASE_MAX_BODY_BYTES": "1024", "TIDEBASE_STATEMENT_TIMEOUT_MS": "0",
    })
    assert settings.database_url == "postgresql://u@h/db"
    assert (settings.http_lease_seconds, settings.lease_seconds) == (45.0, 1.5)
    assert settings.reconciler is False and settings.max_body_bytes == 1024
    assert settings.statement_timeout_seconds is None
    assert settings.connect_timeout_seconds == Settings().connect_timeout_seconds


@pytest.mark.parametrize(("name", "value"), [("TIDEBASE_LEASE_MS", "soon"), ("TIDEBASE_RECONCILER", "maybe"),
                                             ("TIDEBASE_MAX_BODY_BYTES", "-1")])
def test_a_value_a_setting_does_not_take_names_the_variable(name: str, value: str) -> None:
    """A malformed or negative value raises ConfigurationError naming the variable and what it takes."""
    with pytest.raises(ConfigurationError, match=name):
        Settings.from_env({name: value})


def test_secrets_stay_out_of_the_repr() -> None:
    """The API key, the webhook and Studio secrets and the DSN (which may hold a password) never appear in repr."""
    settings = Settings(database_url="postgresql://u:pw-secret@h/db", api_key="key-secret",
                        webhook_secret="hook-secret", studio_secret="studio-secret")
    text = repr(settings)
    for value in ("pw-secret", "key-secret", "hook-secret", "studio-secret"):
        assert value not in text


def test_keywords_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tidebase(...) starts from the environment and its keywords override it; 0 disables the statement bound."""
    monkeypatch.setenv("TIDEBASE_RUN_LEASE_MS", "9000")
    monkeypatch.setenv("TIDEBASE_MAX_PAYLOAD_BYTES", "2048")
    tide = Tidebase("postgresql://u@h/db", max_payload_bytes=4096, statement_timeout=0)
    assert tide.settings.lease_seconds == 9.0 and tide.settings.max_payload_bytes == 4096
    assert tide.settings.statement_timeout_seconds is None and tide.settings.database_url == "postgresql://u@h/db"


def test_the_documented_table_is_the_generated_one() -> None:
    """docs/configuration.md shows exactly the table `python -m tidebase.settings` prints."""
    text = DOC.read_text("utf-8")
    marker = "<!-- generated: settings (python -m tidebase.settings) -->\n"
    generated = text.split(marker, 1)[1].split("<!-- end -->")[0]
    assert generated == table()
