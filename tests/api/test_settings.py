"""Settings are validated once, naming the field; the environment maps onto them."""

from __future__ import annotations

from pathlib import Path

import pytest

from consentgate.api import Settings
from consentgate.domain.errors import InputError


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_per_second", 0.0),
        ("rate_burst", 0),
        ("session_ttl_seconds", 0),
        ("max_session_ttl_seconds", 100_000),
        ("key_cache_seconds", -1.0),
        ("signing_key", Path("/nonexistent/key")),
    ],
)
def test_bad_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(InputError) as caught:
        Settings(**{field: value})  # type: ignore[arg-type]
    assert caught.value.field == field


def test_settings_from_the_environment() -> None:
    env = {
        "CONSENTGATE_DB": "sqlite:///x.db",
        "CONSENTGATE_RATE_PER_SECOND": "12.5",
        "CONSENTGATE_RATE_BURST": "20",
        "CONSENTGATE_KEY_CACHE_SECONDS": "0",
    }
    settings = Settings.from_env(env)
    assert (settings.db_url, settings.rate_per_second, settings.rate_burst) == (
        "sqlite:///x.db",
        12.5,
        20,
    )
    assert settings.key_cache_seconds == 0
    with pytest.raises(InputError) as caught:
        Settings.from_env({"CONSENTGATE_RATE_BURST": "many"})
    assert caught.value.field == "CONSENTGATE_RATE_BURST"
