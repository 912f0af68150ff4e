"""The policy file of DESIGN §4: the shipped default policy, lookups and validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consentgate.domain import Policy, PolicyHistory, default_policy_text, parse_policy
from consentgate.errors import PolicyError

EU27 = [
    "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
    "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
]  # fmt: skip
EEA = [*EU27, "IS", "LI", "NO"]
NOT_EEA = ["CH", "GB", "TR", "RS", "UA", "AL", "MC", "SM", "AD", "VA"]
US_SUBDIVISIONS = ["US-CA", "US-CO", "US-CT", "US-TX", "US-NY", "US-WA", "US-DC", "US-MT"]
ELSEWHERE = ["JP", "AU", "MX", "ZA", "CN", "KR", "AR", "NG", None]


@pytest.fixture(scope="module")
def default() -> Policy:
    return parse_policy(default_policy_text())


# -- the default policy (DESIGN §4 table) -------------------------------------------------


def test_default_policy_globals(default: Policy) -> None:
    assert default.min_age == 18
    assert "ai_training" in default.purposes
    ai = default.purposes["ai_training"]
    assert ai.notice_window == timedelta(days=30)
    assert ai.eligible_sources == frozenset({"post", "comment", "article", "profile"})
    assert default.notices == ()


@pytest.mark.parametrize("region", [*EEA, "EEA", "GB", "CH", "CA", "IN"])
def test_default_opt_in_regions(default: Policy, region: str) -> None:
    assert default.mode("ai_training", region) == "opt_in"
    assert default.honor_gpc(region) is True
    assert default.request_deadline_days(region) == 30


@pytest.mark.parametrize("region", ["DE-BY", "FR-75C", "NO-03", "GB-ENG", "CA-QC", "IN-MH"])
def test_default_opt_in_subdivisions(default: Policy, region: str) -> None:
    assert default.mode("ai_training", region) == "opt_in"
    assert default.request_deadline_days(region) == 30


@pytest.mark.parametrize("region", ["US", *US_SUBDIVISIONS])
def test_default_us(default: Policy, region: str) -> None:
    assert default.mode("ai_training", region) == "opt_out"
    assert default.honor_gpc(region) is True
    assert default.request_deadline_days(region) == 45


@pytest.mark.parametrize("region", ["BR", "BR-SP"])
def test_default_brazil(default: Policy, region: str) -> None:
    assert default.mode("ai_training", region) == "opt_out"
    assert default.honor_gpc(region) is True
    assert default.request_deadline_days(region) == 15


@pytest.mark.parametrize("region", ELSEWHERE)
def test_default_unknown_or_elsewhere(default: Policy, region: str | None) -> None:
    assert default.mode("ai_training", region) == "opt_in"
    assert default.honor_gpc(region) is True
    assert default.request_deadline_days(region) == 30


def test_default_policy_text_is_the_shipped_file() -> None:
    text = default_policy_text()
    assert "[policy]" in text
    assert parse_policy(text) == parse_policy(text)


# -- lookup along subdivision -> country -> group -> "*", field by field -------------------

LOOKUP_TOML = """
[policy]
version = "lookup-1"
min_age = 18

[purposes.ai_training]
title = "AI training"
notice_window_days = 30
[purposes.ai_training.modes]
"*" = "opt_in"
EEA = "opt_out"
DE = "excluded"
"DE-BY" = "opt_in"
US = "opt_out"
"US-CA" = "excluded"

[purposes.genai_features]
title = "GenAI features"
notice_window_days = 7
[purposes.genai_features.modes]
"*" = "excluded"
"FR-75C" = "opt_out"

[jurisdictions."*"]
honor_gpc = true
request_deadline_days = 30
[jurisdictions.EEA]
honor_gpc = false
[jurisdictions.FR]
request_deadline_days = 20
[jurisdictions.US]
request_deadline_days = 45
[jurisdictions."US-TX"]
honor_gpc = false
[jurisdictions."DE-BY"]
honor_gpc = true
"""


@pytest.fixture(scope="module")
def lookup() -> Policy:
    return parse_policy(LOOKUP_TOML)


@pytest.mark.parametrize(
    ("region", "mode"),
    [
        ("DE-BY", "opt_in"),  # subdivision entry
        ("DE-BE", "excluded"),  # -> country
        ("DE", "excluded"),
        ("FR", "opt_out"),  # -> EEA group
        ("FR-75C", "opt_out"),
        ("NO", "opt_out"),
        ("IS", "opt_out"),
        ("LI", "opt_out"),
        ("CH", "opt_in"),  # not in the EEA -> "*"
        ("GB", "opt_in"),
        ("US-CA", "excluded"),
        ("US-TX", "opt_out"),
        ("US", "opt_out"),
        ("JP", "opt_in"),
        (None, "opt_in"),
    ],
)
def test_mode_lookup_chain(lookup: Policy, region: str | None, mode: str) -> None:
    assert lookup.mode("ai_training", region) == mode


@pytest.mark.parametrize("country", EEA)
def test_every_eea_country_is_in_the_group(lookup: Policy, country: str) -> None:
    expected = "excluded" if country == "DE" else "opt_out"
    assert lookup.mode("ai_training", country) == expected
    assert lookup.honor_gpc(country) is (country == "DE-BY")


@pytest.mark.parametrize("country", NOT_EEA)
def test_non_eea_countries_are_not_in_the_group(lookup: Policy, country: str) -> None:
    assert lookup.mode("ai_training", country) == "opt_in"
    assert lookup.honor_gpc(country) is True


def test_modes_are_per_purpose(lookup: Policy) -> None:
    assert lookup.mode("genai_features", "FR-75C") == "opt_out"
    assert lookup.mode("genai_features", "FR") == "excluded"
    assert lookup.mode("genai_features", "US") == "excluded"
    assert lookup.mode("genai_features", None) == "excluded"


@pytest.mark.parametrize(
    ("region", "honor", "deadline"),
    [
        ("DE-BY", True, 30),  # honor from the subdivision, deadline from "*"
        ("DE", False, 30),  # honor from EEA, deadline from "*"
        ("FR", False, 20),  # deadline from the country, honor from EEA
        ("FR-75C", False, 20),
        ("US-TX", False, 45),  # honor from the subdivision, deadline from the country
        ("US-CA", True, 45),  # honor from "*", deadline from the country
        ("US", True, 45),
        ("CH", True, 30),
        (None, True, 30),
    ],
)
def test_jurisdiction_settings_field_by_field(
    lookup: Policy, region: str | None, honor: bool, deadline: int
) -> None:
    assert lookup.honor_gpc(region) is honor
    assert lookup.request_deadline_days(region) == deadline


def test_notice_window_days_per_purpose(lookup: Policy) -> None:
    assert lookup.purposes["genai_features"].notice_window == timedelta(hours=7 * 24)


# -- notices and effective times ----------------------------------------------------------

NOTICES = """
[[notices]]
version = "2024-09-18"
effective = 2024-09-18T00:00:00Z
purposes = ["ai_training"]
reconsent = []

[[notices]]
version = "2025-03-01"
effective = 2025-03-01T09:00:00+01:00
purposes = ["ai_training", "genai_features"]
reconsent = ["ai_training"]
"""


def test_notices_are_parsed(lookup: Policy) -> None:
    pol = parse_policy(LOOKUP_TOML + NOTICES)
    by_version = {n.version: n for n in pol.notices}
    assert set(by_version) == {"2024-09-18", "2025-03-01"}
    first, second = by_version["2024-09-18"], by_version["2025-03-01"]
    assert first.effective == datetime(2024, 9, 18, tzinfo=UTC)
    assert first.purposes == frozenset({"ai_training"})
    assert first.reconsent == frozenset()
    assert second.effective == datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
    assert second.effective.utcoffset() is not None
    assert second.purposes == frozenset({"ai_training", "genai_features"})
    assert second.reconsent == frozenset({"ai_training"})


def test_policy_effective_field() -> None:
    text = LOOKUP_TOML.replace(
        'version = "lookup-1"', 'version = "lookup-1"\neffective = 2026-01-01T00:00:00Z'
    )
    assert parse_policy(text).effective == datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_policy(text).version == "lookup-1"


def test_policy_history_uses_the_version_in_force() -> None:
    a = parse_policy(LOOKUP_TOML)
    b = parse_policy(LOOKUP_TOML.replace('US = "opt_out"', 'US = "excluded"'))
    t1, t2 = datetime(2024, 1, 1, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    h = PolicyHistory([(t1, a), (t2, b)])
    assert h.in_force(t1 - timedelta(days=400)) is a  # none in force yet: the earliest
    assert h.in_force(t1) is a
    assert h.in_force(t2 - timedelta(microseconds=1)) is a
    assert h.in_force(t2) is b
    assert h.in_force(t2 + timedelta(days=400)) is b


# -- validation: rejected whole, every problem listed -------------------------------------

MINIMAL = """
[policy]
version = "v"
min_age = 18

[purposes.ai_training]
title = "AI training"
notice_window_days = 30
[purposes.ai_training.modes]
"*" = "opt_in"
US = "opt_out"

[jurisdictions."*"]
honor_gpc = true
request_deadline_days = 30
"""


def test_minimal_policy_is_valid() -> None:
    pol = parse_policy(MINIMAL)
    assert pol.version == "v"
    assert pol.mode("ai_training", "US-CA") == "opt_out"


def test_min_age_defaults_to_18() -> None:
    # DESIGN §4 "Global defaults: min_age = 18"
    assert parse_policy(MINIMAL.replace("min_age = 18\n", "")).min_age == 18


def test_ai_training_notice_window_defaults_to_30_days() -> None:
    pol = parse_policy(MINIMAL.replace("notice_window_days = 30\n", ""))
    assert pol.purposes["ai_training"].notice_window == timedelta(days=30)


def problems_of(text: str) -> list[str]:
    with pytest.raises(PolicyError) as info:
        parse_policy(text)
    problems = info.value.problems
    assert isinstance(problems, list)
    assert problems, "a PolicyError must list at least one problem"
    assert all(isinstance(p, str) and p for p in problems)
    return problems


def mentions(problems: list[str], *needles: str) -> bool:
    return any(all(n.lower() in p.lower() for n in needles) for p in problems)


SINGLE_PROBLEMS = [
    pytest.param(MINIMAL.replace('US = "opt_out"', 'US = "maybe"'), ("maybe",), id="unknown_mode"),
    pytest.param(MINIMAL.replace('US = "opt_out"', 'XX = "opt_out"'), ("XX",), id="unknown_region"),
    pytest.param(
        MINIMAL.replace('US = "opt_out"', '"US-ZZ" = "opt_out"'),
        ("US-ZZ",),
        id="unknown_subdivision",
    ),
    pytest.param(
        MINIMAL + '[jurisdictions."US-ZZ"]\nhonor_gpc = false\n',
        ("US-ZZ",),
        id="unknown_jurisdiction_region",
    ),
    pytest.param(
        MINIMAL
        + '[[notices]]\nversion = "n"\neffective = 2024-09-18T00:00:00\n'
        + 'purposes = ["ai_training"]\nreconsent = []\n',
        ("effective",),
        id="notice_without_timezone",
    ),
    pytest.param(
        MINIMAL
        + '[[notices]]\nversion = "n"\neffective = 2024-09-18\n'
        + 'purposes = ["ai_training"]\nreconsent = []\n',
        ("effective",),
        id="notice_date_only",
    ),
    pytest.param(
        MINIMAL
        + '[[notices]]\nversion = "n"\neffective = 2024-09-18T00:00:00Z\n'
        + 'purposes = ["ai_training", "nope"]\nreconsent = []\n',
        ("nope",),
        id="unknown_purpose_in_notice",
    ),
    pytest.param(
        MINIMAL
        + '[[notices]]\nversion = "n"\neffective = 2024-09-18T00:00:00Z\n'
        + 'purposes = ["ai_training"]\nreconsent = ["nope"]\n',
        ("nope",),
        id="unknown_purpose_in_reconsent",
    ),
    pytest.param(MINIMAL.replace('"*" = "opt_in"\n', ""), ("*",), id="missing_star_mode"),
    pytest.param(
        MINIMAL.replace('[jurisdictions."*"]\nhonor_gpc = true\nrequest_deadline_days = 30\n', ""),
        ("*",),
        id="missing_star_jurisdiction",
    ),
    pytest.param(
        MINIMAL.replace("honor_gpc = true\n", ""),
        ("honor_gpc",),
        id="star_jurisdiction_without_honor_gpc",
    ),
    pytest.param(
        MINIMAL.replace("request_deadline_days = 30\n", ""),
        ("request_deadline_days",),
        id="star_jurisdiction_without_deadline",
    ),
    pytest.param(
        MINIMAL.replace("honor_gpc = true", 'honor_gpc = "yes"'),
        ("honor_gpc",),
        id="honor_gpc_not_a_boolean",
    ),
    pytest.param(
        MINIMAL.replace("notice_window_days = 30", 'notice_window_days = "thirty"'),
        ("notice_window_days",),
        id="notice_window_not_a_number",
    ),
    pytest.param(
        MINIMAL.replace('[policy]\nversion = "v"\n', "[policy]\n"),
        ("version",),
        id="missing_version",
    ),
    pytest.param(
        MINIMAL.replace('version = "v"', 'version = "v"\neffective = 2026-01-01T00:00:00'),
        ("effective",),
        id="policy_effective_without_timezone",
    ),
    pytest.param("[policy\nversion = ", (), id="bad_toml"),
    pytest.param('[policy]\nversion = "v"\nversion = "w"\n', (), id="duplicate_key_toml"),
]


@pytest.mark.parametrize(("text", "needles"), SINGLE_PROBLEMS)
def test_each_problem_is_rejected_and_named(text: str, needles: tuple[str, ...]) -> None:
    problems = problems_of(text)
    if needles:
        assert mentions(problems, *needles), problems


def test_every_problem_is_listed_at_once() -> None:
    text = """
[policy]
version = "v"
min_age = 18

[purposes.ai_training]
title = "AI training"
notice_window_days = 30
[purposes.ai_training.modes]
US = "maybe"
XX = "opt_out"

[purposes.genai_features]
title = "GenAI"
notice_window_days = 30
[purposes.genai_features.modes]
"*" = "opt_in"
"US-ZZ" = "opt_out"

[[notices]]
version = "n1"
effective = 2024-09-18T00:00:00
purposes = ["ai_training"]
reconsent = []

[[notices]]
version = "n2"
effective = 2024-10-01T00:00:00Z
purposes = ["nope"]
reconsent = []
"""
    problems = problems_of(text)
    assert mentions(problems, "maybe"), problems
    assert mentions(problems, "XX"), problems
    assert mentions(problems, "US-ZZ"), problems
    assert mentions(problems, "effective"), problems
    assert mentions(problems, "nope"), problems
    assert mentions(problems, "*"), problems  # missing "*" mode and [jurisdictions."*"]
    # missing "*" in ai_training modes + missing [jurisdictions."*"] + 5 others
    assert len(problems) >= 7, problems


def test_bad_toml_is_a_policy_error_not_a_toml_error() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy("this is = = not toml")
    assert len(info.value.problems) >= 1


def test_policy_error_message_lists_the_problems() -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(MINIMAL.replace('US = "opt_out"', 'US = "maybe"'))
    assert all(p in str(info.value) for p in info.value.problems)
