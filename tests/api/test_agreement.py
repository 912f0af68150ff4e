"""The API and the CLI agree, and both agree with the domain oracle: the same
events, sent through `POST /v1/events` and through `consentgate events import`,
give the same decisions through `POST /v1/decisions`, `GET .../decision` and
`consentgate decide`."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from pathlib import Path

import consentgate
from consentgate.api import Settings, create_app
from consentgate.domain.decide import decide
from consentgate.domain.events import parse_event
from consentgate.domain.policy import PolicyHistory
from consentgate.domain.timeutil import format_ts
from tests.api.live import serve
from tests.ledger.eventgen import INSTANTS, POLICY, random_history
from tests.test_cli import cli

SUBJECTS = 60
WHEN = (*INSTANTS, datetime(2026, 6, 1, tzinfo=UTC))


def test_api_cli_and_oracle_agree(tmp_path: Path, db_url: str) -> None:
    rng = random.Random(5)
    histories = {f"s{i:03d}": random_history(rng, f"s{i:03d}") for i in range(SUBJECTS)}
    every = [e for h in histories.values() for e in h]
    # The CLI's ledger: a SQLite file, events imported from a file.
    cli_db = f"sqlite:///{tmp_path / 'cli.db'}"
    (tmp_path / "policy.toml").write_text(POLICY)
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in every))
    assert cli("init", db=cli_db).returncode == 0
    assert cli("policy", "apply", str(tmp_path / "policy.toml"), db=cli_db).returncode == 0
    assert cli("events", "import", str(tmp_path / "events.jsonl"), db=cli_db).returncode == 0
    # The API's ledger (on each backend): the same events, posted in batches.
    with consentgate.open(db_url) as ledger:
        ledger.apply_policy(POLICY)
        key = consentgate_key(ledger)
        policies = ledger.policy_history()
    app = create_app(Settings(db_url=db_url, rate_per_second=10_000.0, rate_burst=10_000))
    with serve(app) as base:
        import httpx

        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}) as api:
            for i in range(0, len(every), 50):
                r = api.post("/v1/events", json={"events": every[i : i + 50]})
                assert r.status_code == 200, r.text
            for at in WHEN:
                for purpose in ("ai_training", "genai_features"):
                    r = api.post(
                        "/v1/decisions",
                        json={"purpose": purpose, "subjects": [*histories, "nobody"],
                              "at": format_ts(at)},
                    )  # fmt: skip
                    batch = {d["subject"]: d["reason"] for d in r.json()["decisions"]}
                    assert batch.pop("nobody") == "unknown_subject"
                    oracle = {
                        s: oracle_reason(h, policies, purpose, at) for s, h in histories.items()
                    }
                    assert batch == oracle, (purpose, at)
            # Single decisions and the CLI, for a sample.
            for subject in list(histories)[:4]:
                for at in WHEN[-2:]:
                    single = api.get(
                        f"/v1/subjects/{subject}/decision",
                        params={"purpose": "ai_training", "at": format_ts(at)},
                    ).json()
                    run = cli(
                        "decide", subject, "--purpose", "ai_training", "--at", format_ts(at),
                        "--json", db=cli_db,
                    )  # fmt: skip
                    assert run.returncode == 0, run.stderr
                    by_cli = json.loads(run.stdout)
                    assert (single["allowed"], single["reason"]) == (
                        by_cli["allowed"], by_cli["reason"]
                    )  # fmt: skip
    app.state.services.ledger.close()


def oracle_reason(
    history: list[dict[str, str]], policies: PolicyHistory, purpose: str, at: datetime
) -> str:
    """`decide()` on the member's events; a member erased at any time is `erased`
    wherever they have events (Ledger.decide: eligibility is unprovable without the
    birth date and region the erasure destroyed)."""
    reason = decide(
        events=[parse_event(e) for e in history], policy=policies, purpose=purpose, at=at
    ).reason
    if reason != "unknown_subject" and any(e["type"] == "erasure" for e in history):
        return "erased"
    return reason


def consentgate_key(ledger: consentgate.Ledger) -> str:
    from consentgate.access import KeyStore

    return KeyStore(ledger.engine).create(name="both", scopes=["ingest", "decide"]).token
