"""docs/formats.md's policy example is a valid policy that means what it says."""

from __future__ import annotations

import re
from pathlib import Path

from consentgate.domain.policy_file import parse_policy

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def test_policy_example_parses_and_means_what_its_comments_say() -> None:
    block = re.search(r"```toml\n(.*?)```", DOC.read_text("utf-8"), re.S)
    assert block is not None
    policy = parse_policy(block.group(1))
    assert policy.mode("ai_training", "US-TX") == "opt_in"
    assert policy.mode("ai_training", "US-CA") == "opt_out"
    assert policy.mode("ai_training", "FR") == "opt_in"
    assert policy.honor_gpc("BR") is False
    assert policy.honor_gpc("DE") is True
