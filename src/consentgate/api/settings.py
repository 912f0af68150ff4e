"""The HTTP API's settings: validated once, by the caller, never at import time."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from consentgate.domain.errors import InputError
from consentgate.ledger import DEFAULT_URL

__all__ = ["Settings"]

_ENV = "CONSENTGATE_"


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Everything `create_app` needs.

    `db_url`: the ledger. `signing_key`: the ledger's checkpoint key file (optional;
    without it ingestion signs no checkpoints). `rate_per_second` / `rate_burst`:
    the token bucket of each caller (API key, member, or client address for
    anonymous requests). `session_ttl_seconds`: the default life of a member token,
    `max_session_ttl_seconds` the longest a platform may ask for.
    `key_cache_seconds`: how long a process trusts a key it looked up (a revocation
    takes effect within this time in running servers).
    """

    db_url: str = DEFAULT_URL
    signing_key: Path | None = None
    rate_per_second: float = 200.0
    rate_burst: int = 400
    session_ttl_seconds: int = 900
    max_session_ttl_seconds: int = 3600
    key_cache_seconds: float = 5.0

    def __post_init__(self) -> None:
        checks = (
            ("rate_per_second", self.rate_per_second > 0, "a number > 0"),
            ("rate_burst", self.rate_burst >= 1, "an integer >= 1"),
            ("session_ttl_seconds", self.session_ttl_seconds > 0, "an integer > 0"),
            (
                "max_session_ttl_seconds",
                self.session_ttl_seconds <= self.max_session_ttl_seconds <= 86_400,
                "an integer between session_ttl_seconds and 86400 (one day)",
            ),
            ("key_cache_seconds", 0 <= self.key_cache_seconds <= 300, "0 to 300 seconds"),
        )
        for name, ok, expected in checks:
            if not ok:
                raise InputError(name, expected, getattr(self, name))
        if self.signing_key is not None and not Path(self.signing_key).is_file():
            raise InputError("signing_key", "an existing key file", str(self.signing_key))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from `CONSENTGATE_DB`, `CONSENTGATE_SIGNING_KEY` and
        `CONSENTGATE_<FIELD>` for the others (upper case)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            name = _ENV + ("DB" if f.name == "db_url" else f.name.upper())
            if name not in env:
                continue
            raw = env[name]
            try:
                if f.name == "signing_key":
                    values[f.name] = Path(raw)
                elif f.type in ("int",):
                    values[f.name] = int(raw)
                elif f.type in ("float",):
                    values[f.name] = float(raw)
                else:
                    values[f.name] = raw
            except ValueError:
                raise InputError(name, f"a value of type {f.type}", raw) from None
        return cls(**values)  # type: ignore[arg-type]
