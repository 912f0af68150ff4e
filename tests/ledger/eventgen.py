"""Seeded random consent histories that reach every rule, for engine-vs-oracle checks."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from consentgate.domain.timeutil import format_ts

START = datetime(2023, 6, 1, tzinfo=UTC)
REGIONS = ("US-CA", "US-TX", "US", "DE", "FR", "GB", "BR", "BR-SP", "IN", "JP", "CH", "NO")

# A policy with every situation: excluded, opt-in, opt-out regions; GPC not honoured in
# BR; a break in disclosure; a notice requiring re-consent.
POLICY = """
[policy]
version = "contract-1"
min_age = 18
effective = 2020-01-01T00:00:00Z

[purposes.ai_training]
notice_window_days = 30
eligible_sources = ["post", "comment"]
[purposes.ai_training.modes]
"*" = "opt_in"
US = "opt_out"
BR = "opt_out"
JP = "excluded"
"US-TX" = "opt_in"

[purposes.genai_features]
[purposes.genai_features.modes]
"*" = "opt_out"

[jurisdictions."*"]
honor_gpc = true
request_deadline_days = 30
[jurisdictions.BR]
honor_gpc = false

[[notices]]
version = "n1"
effective = 2024-01-01T00:00:00Z
purposes = ["ai_training", "genai_features"]

[[notices]]
version = "n2"
effective = 2024-04-01T00:00:00Z
purposes = ["genai_features"]

[[notices]]
version = "n3"
effective = 2024-06-01T00:00:00Z
purposes = ["ai_training", "genai_features"]

[[notices]]
version = "n4"
effective = 2025-01-01T00:00:00Z
purposes = ["ai_training", "genai_features"]
reconsent = ["ai_training"]
"""

# Evaluation instants: before any notice, in the disclosure break, inside a notice
# window, after it, right at the re-consent notice, and later.
INSTANTS = tuple(
    datetime(*parts, tzinfo=UTC)  # type: ignore[misc]
    for parts in (
        (2023, 12, 1),
        (2024, 1, 15),
        (2024, 5, 1),
        (2024, 6, 20),
        (2024, 8, 1),
        (2025, 1, 1),
        (2025, 3, 1),
        (2026, 1, 1),
    )
)


def _instant(rng: random.Random) -> datetime:
    # A coarse grid (whole days, sometimes the same day) so that ties really happen.
    return START + timedelta(days=rng.randrange(0, 950))


def random_history(rng: random.Random, subject: str) -> list[dict[str, str]]:
    """One subject's events, in recording order (not sorted by time)."""
    out: list[dict[str, str]] = []
    first = _instant(rng)  # a second profile event at the same instant makes a tie
    for i in range(rng.randrange(1, 4)):
        at = first if i == 0 or rng.random() < 0.3 else _instant(rng)
        ev = {"type": "profile", "subject": subject, "at": format_ts(at)}
        if rng.random() < 0.85:
            ev["region"] = rng.choice(REGIONS)
        if rng.random() < 0.5 or "region" not in ev:
            year = rng.choice((1960, 1990, 2000, 2006, 2007, 2008))
            ev["birth_date"] = f"{year}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 28):02d}"
        out.append(ev)
    shared = _instant(rng)  # reused below to force same-instant ties
    for _ in range(rng.randrange(0, 6)):
        at = shared if rng.random() < 0.3 else _instant(rng)
        roll = rng.random()
        if roll < 0.7:
            out.append(
                {
                    "type": "consent",
                    "subject": subject,
                    "at": format_ts(at),
                    "purpose": rng.choice(("ai_training", "ai_training", "genai_features")),
                    "choice": rng.choice(("granted", "granted", "withdrawn", "refused")),
                }
            )
        elif roll < 0.95:
            out.append({"type": "signal", "subject": subject, "at": format_ts(at), "signal": "gpc"})
        else:
            out.append({"type": "erasure", "subject": subject, "at": format_ts(at)})
    rng.shuffle(out)
    return out
