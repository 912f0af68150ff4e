"""The decision rule of DESIGN §3, rule by rule and point by point, written from the spec.

Every one of the 18 reason codes is reached, the order of the table is checked where two
rules could both match, and each "Precise point" of §3 has its own cases.

The test policy (``POLICY_TOML``) in one picture::

    ai_training      "*" opt_in, EEA opt_in, US opt_out, US-NY opt_in, BR opt_out,
                     JP opt_out, CH excluded; window 30 days; eligible post/comment/article/profile
    genai_features   "*" opt_in, US opt_out, JP opt_out; window 30 days; no eligible_sources
    jurisdictions    "*" honor_gpc; US-TX and JP do not honour GPC
    notices          N0 2020-01-01 [genai_features]
                     N1 2021-01-01 [ai_training, genai_features]      -> D(ai_training)
                     N2 2025-01-01 [ai_training, genai_features],
                                   reconsent [ai_training]            -> R(ai_training)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from consentgate.domain import (
    ConsentEvent,
    Decision,
    ErasureEvent,
    Event,
    Policy,
    PolicyHistory,
    ProfileEvent,
    Record,
    SignalEvent,
    decide,
    parse_policy,
)
from consentgate.errors import UnknownPurposeError

# The public contract of §3, spelled out here rather than imported from the implementation.
REASONS = (
    "missing_subject",
    "invalid_record",
    "unknown_subject",
    "erased",
    "minor",
    "region_excluded",
    "source_not_eligible",
    "withdrawn",
    "refused",
    "gpc",
    "consented",
    "sensitive",
    "reconsent_required",
    "no_consent",
    "not_disclosed",
    "notice_period",
    "collected_before_notice",
    "default_allowed",
)
ALLOWED = {"consented", "default_allowed"}

US_1 = timedelta(microseconds=1)

POLICY_TOML = """
[policy]
version = "test-1"
min_age = 18

[purposes.ai_training]
title = "Generative AI model training"
notice_window_days = 30
eligible_sources = ["post", "comment", "article", "profile"]
[purposes.ai_training.modes]
"*" = "opt_in"
EEA = "opt_in"
US = "opt_out"
"US-NY" = "opt_in"
BR = "opt_out"
JP = "opt_out"
CH = "excluded"

[purposes.genai_features]
title = "GenAI features"
notice_window_days = 30
[purposes.genai_features.modes]
"*" = "opt_in"
US = "opt_out"
JP = "opt_out"

[jurisdictions."*"]
honor_gpc = true
request_deadline_days = 30
[jurisdictions.US]
request_deadline_days = 45
[jurisdictions."US-TX"]
honor_gpc = false
[jurisdictions.JP]
honor_gpc = false

[[notices]]
version = "n0"
effective = 2020-01-01T00:00:00Z
purposes = ["genai_features"]
reconsent = []

[[notices]]
version = "n1"
effective = 2021-01-01T00:00:00Z
purposes = ["ai_training", "genai_features"]
reconsent = []

[[notices]]
version = "n2"
effective = 2025-01-01T00:00:00Z
purposes = ["ai_training", "genai_features"]
reconsent = ["ai_training"]
"""


def ts(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


D_AI = ts(2021, 1, 1)  # disclosure start of ai_training (N1)
R_AI = ts(2025, 1, 1)  # re-consent notice for ai_training (N2)
T = ts(2025, 6, 1)  # default evaluation time
C = ts(2024, 1, 1)  # default collection time
ADULT = date(1980, 1, 1)
CHILD = date(2010, 1, 1)
S = "m1"


def prof(
    at: datetime, region: str | None = None, birth: date | None = None, subject: str = S
) -> ProfileEvent:
    return ProfileEvent(subject=subject, at=at, region=region, birth_date=birth)


def grant(at: datetime, purpose: str = "ai_training") -> ConsentEvent:
    return ConsentEvent(subject=S, at=at, purpose=purpose, choice="granted")


def withdraw(at: datetime, purpose: str = "ai_training") -> ConsentEvent:
    return ConsentEvent(subject=S, at=at, purpose=purpose, choice="withdrawn")


def refuse(at: datetime, purpose: str = "ai_training") -> ConsentEvent:
    return ConsentEvent(subject=S, at=at, purpose=purpose, choice="refused")


def gpc(at: datetime) -> SignalEvent:
    return SignalEvent(subject=S, at=at, signal="gpc")


def erase(at: datetime) -> ErasureEvent:
    return ErasureEvent(subject=S, at=at)


def rec(
    c: datetime | None = C,
    source: str | None = "post",
    sensitive: bool = False,
    subject: str | None = S,
) -> Record:
    return Record(subject=subject, collected_at=c, source=source, sensitive=sensitive)


def home(region: str | None, birth: date | None = ADULT) -> ProfileEvent:
    """The member's first profile event, long before everything else."""
    return prof(ts(2019, 1, 1), region, birth)


POLICY = parse_policy(POLICY_TOML)
REC = rec()
ONLINE = None


def run(
    events: Sequence[Event],
    record: Record | None = REC,
    *,
    at: datetime = T,
    purpose: str = "ai_training",
    policy: Policy | PolicyHistory = POLICY,
) -> Decision:
    d = decide(events=events, policy=policy, purpose=purpose, at=at, record=record)
    assert d.reason in REASONS, d
    assert d.allowed == (d.reason in ALLOWED), d
    return d


@dataclass(frozen=True)
class Case:
    events: Sequence[Event]
    expected: str
    record: Record | None = REC
    at: datetime = T
    purpose: str = "ai_training"


def case(
    id: str,
    events: Sequence[Event],
    expected: str,
    record: Record | None = REC,
    at: datetime = T,
    purpose: str = "ai_training",
    bug: str = "",
) -> object:
    marks = [pytest.mark.xfail(strict=True, reason="BUG: " + bug)] if bug else []
    return pytest.param(Case(events, expected, record, at, purpose), id=id, marks=marks)


US = home("US")
DE = home("DE")
CH = home("CH")
JP = home("JP")
TX = home("US-TX")
NY = home("US-NY")
NOWHERE = home(None)  # only a birth date: region unknown

CASES = [
    # 1 missing_subject
    case("missing_subject", [US], "missing_subject", rec(subject=None)),
    case("missing_subject_empty_string", [US], "missing_subject", rec(subject="")),
    case("missing_subject_beats_invalid_record", [US], "missing_subject", rec(None, subject=None)),
    # 2 invalid_record
    case("invalid_record_no_collection_time", [US], "invalid_record", rec(None)),
    case("invalid_record_collected_after_T", [US], "invalid_record", rec(T + US_1)),
    case("collected_exactly_at_T_is_valid", [US], "default_allowed", rec(T)),
    case("invalid_record_beats_unknown_subject", [], "invalid_record", rec(None)),
    case("invalid_record_beats_erased", [US, erase(C)], "invalid_record", rec(T + US_1)),
    # 3 unknown_subject
    case("unknown_subject_no_events", [], "unknown_subject"),
    case("unknown_subject_online", [], "unknown_subject", ONLINE),
    case("unknown_subject_only_events_after_T", [prof(T + US_1, "US", ADULT)], "unknown_subject"),
    case(
        "unknown_subject_other_purpose_after_T",
        [grant(T + US_1, "genai_features")],
        "unknown_subject",
    ),
    case("known_by_a_profile_event_at_T", [prof(T, "US", ADULT)], "default_allowed"),
    case("known_by_a_grant_only_region_unknown", [grant(ts(2025, 2, 1))], "consented"),
    case("known_by_a_gpc_signal_only", [gpc(ts(2025, 2, 1))], "gpc"),
    # 4 erased
    case("erased", [US, erase(ts(2025, 2, 1))], "erased"),
    case("erased_exactly_at_T", [US, erase(T)], "erased"),
    case("erased_online", [US, erase(ts(2025, 2, 1))], "erased", ONLINE),
    case("erased_only_event", [erase(ts(2025, 2, 1))], "erased"),
    case("erasure_after_T_ignored", [US, erase(T + US_1)], "default_allowed"),
    case("erased_beats_minor", [home("US", CHILD), erase(ts(2025, 2, 1))], "erased"),
    case("erased_beats_region_excluded", [CH, erase(ts(2025, 2, 1))], "erased"),
    case("erased_beats_later_grant", [DE, erase(ts(2025, 2, 1)), grant(ts(2025, 3, 1))], "erased"),
    # 5 minor
    case("minor_at_T", [home("US", CHILD)], "minor"),
    case("minor_online", [home("US", CHILD)], "minor", ONLINE),
    case("minor_beats_region_excluded", [home("CH", CHILD)], "minor"),
    case("minor_beats_source_not_eligible", [home("US", CHILD)], "minor", rec(source="dm")),
    case("minor_beats_consent", [home("DE", CHILD), grant(ts(2025, 2, 1))], "minor"),
    case(
        "minor_at_collection_only_stays_excluded",
        [home("US", date(2006, 3, 1))],  # 17 at c = 2024-01-01, 19 at T
        "minor",
    ),
    case(
        "minor_at_collection_only_even_with_grant",
        [home("DE", date(2006, 3, 1)), grant(ts(2025, 2, 1))],
        "minor",
    ),
    case(
        "adult_on_18th_birthday_at_collection",
        [home("US", date(2006, 1, 1))],  # exactly 18 on c's UTC date
        "default_allowed",
    ),
    case(
        "birth_date_unknown_is_not_minor",
        [home("US", None)],
        "default_allowed",
    ),
    case(
        "latest_birth_date_at_or_before_T_applies_also_at_c",
        [home("US", CHILD), prof(ts(2025, 3, 1), birth=ADULT)],
        "default_allowed",
    ),
    case(
        "latest_birth_date_can_make_a_minor",
        [home("US", ADULT), prof(ts(2025, 3, 1), birth=CHILD)],
        "minor",
    ),
    case(
        "birth_date_correction_after_T_ignored_adult",
        [home("US", ADULT), prof(T + US_1, birth=CHILD)],
        "default_allowed",
    ),
    case(
        "birth_date_correction_after_T_ignored_minor",
        [home("US", CHILD), prof(T + US_1, birth=ADULT)],
        "minor",
    ),
    case(
        "region_only_profile_event_keeps_birth_date",
        [home("US", CHILD), prof(ts(2024, 6, 1), region="US")],
        "minor",
    ),
    # 6 region_excluded
    case("region_excluded", [CH], "region_excluded"),
    case("region_excluded_online", [CH], "region_excluded", ONLINE),
    case("region_excluded_beats_consent", [CH, grant(ts(2025, 2, 1))], "region_excluded"),
    case("region_excluded_beats_source", [CH], "region_excluded", rec(source="dm")),
    case("region_excluded_beats_withdrawn", [CH, withdraw(ts(2025, 2, 1))], "region_excluded"),
    case(
        "excluded_at_collection_then_moved_to_opt_out",
        [CH, prof(ts(2024, 6, 1), "US")],
        "region_excluded",
    ),
    case(
        "moved_to_excluded_after_collection",
        [US, prof(ts(2025, 2, 1), "CH")],
        "region_excluded",
    ),
    case(
        "move_to_excluded_after_T_ignored",
        [US, prof(T + US_1, "CH")],
        "default_allowed",
    ),
    # 7 source_not_eligible
    case("source_not_eligible", [US], "source_not_eligible", rec(source="private_message")),
    case("source_missing_is_not_eligible", [US], "source_not_eligible", rec(source=None)),
    case(
        "source_not_eligible_beats_withdrawn",
        [US, withdraw(ts(2025, 2, 1))],
        "source_not_eligible",
        rec(source="support_chat"),
    ),
    case(
        "source_not_eligible_beats_consented",
        [DE, grant(ts(2025, 2, 1))],
        "source_not_eligible",
        rec(source="private_message"),
    ),
    case(
        "source_not_eligible_beats_sensitive",
        [US],
        "source_not_eligible",
        rec(source="private_message", sensitive=True),
    ),
    case(
        "no_eligible_sources_any_source_ok",
        [US],
        "default_allowed",
        rec(source="private_message"),
        purpose="genai_features",
    ),
    case(
        "no_eligible_sources_missing_source_ok",
        [US],
        "default_allowed",
        rec(source=None),
        purpose="genai_features",
    ),
    case("online_skips_source_rule", [US], "default_allowed", ONLINE),
    # 8 withdrawn / refused / gpc
    case("withdrawn", [DE, grant(ts(2024, 2, 1)), withdraw(ts(2025, 2, 1))], "withdrawn"),
    case("withdrawn_in_opt_out", [US, withdraw(ts(2025, 2, 1))], "withdrawn"),
    case("withdrawn_online", [US, withdraw(ts(2025, 2, 1))], "withdrawn", ONLINE),
    case(
        "withdrawn_then_granted", [DE, withdraw(ts(2025, 2, 1)), grant(ts(2025, 3, 1))], "consented"
    ),
    case("refused", [DE, refuse(ts(2025, 2, 1))], "refused"),
    case("refused_in_opt_out", [US, refuse(ts(2025, 2, 1))], "refused"),
    case("refused_then_granted", [DE, refuse(ts(2025, 2, 1)), grant(ts(2025, 3, 1))], "consented"),
    case("granted_then_refused", [DE, grant(ts(2025, 2, 1)), refuse(ts(2025, 3, 1))], "refused"),
    case("gpc_in_opt_out", [US, gpc(ts(2025, 2, 1))], "gpc"),
    case("gpc_after_grant", [DE, grant(ts(2025, 2, 1)), gpc(ts(2025, 3, 1))], "gpc"),
    case("grant_after_gpc", [DE, gpc(ts(2025, 2, 1)), grant(ts(2025, 3, 1))], "consented"),
    case(
        "gpc_applies_to_every_purpose", [US, gpc(ts(2025, 2, 1))], "gpc", purpose="genai_features"
    ),
    case("gpc_after_T_ignored", [US, gpc(T + US_1)], "default_allowed"),
    case("gpc_not_honoured_in_JP", [JP, gpc(ts(2025, 2, 1))], "default_allowed"),
    case("gpc_not_honoured_online", [JP, gpc(ts(2025, 2, 1))], "default_allowed", ONLINE),
    case(
        "gpc_not_honoured_after_grant",
        [JP, grant(ts(2025, 2, 1)), gpc(ts(2025, 3, 1))],
        "consented",
    ),
    case("gpc_not_honoured_in_US_TX_subdivision", [TX, gpc(ts(2025, 2, 1))], "default_allowed"),
    case("gpc_honoured_in_US_CA_via_star", [home("US-CA"), gpc(ts(2025, 2, 1))], "gpc"),
    case(
        "gpc_honoured_because_region_at_collection_honours",
        [US, prof(ts(2024, 6, 1), "JP"), gpc(ts(2025, 2, 1))],
        "gpc",
    ),
    case(
        "gpc_honoured_because_region_at_T_honours",
        [JP, prof(ts(2024, 6, 1), "US"), gpc(ts(2025, 2, 1))],
        "gpc",
    ),
    case(
        "gpc_honoured_in_neither_region",
        [JP, prof(ts(2024, 6, 1), "US-TX"), gpc(ts(2025, 2, 1))],
        "default_allowed",
    ),
    case(
        "withdrawal_for_other_purpose_ignored",
        [US, withdraw(ts(2025, 2, 1), "genai_features")],
        "default_allowed",
    ),
    case(
        "grant_for_other_purpose_ignored",
        [DE, grant(ts(2025, 2, 1), "genai_features")],
        "no_consent",
    ),
    # 9 consented
    case("consented", [DE, grant(ts(2025, 2, 1))], "consented"),
    case("consented_online", [DE, grant(ts(2025, 2, 1))], "consented", ONLINE),
    case("consented_grant_exactly_at_T", [DE, grant(T)], "consented"),
    case("grant_after_T_ignored", [DE, grant(T + US_1)], "no_consent"),
    case(
        "withdrawal_after_T_ignored",
        [DE, grant(ts(2025, 2, 1)), withdraw(T + US_1)],
        "consented",
    ),
    case(
        "consented_beats_sensitive",
        [DE, grant(ts(2025, 2, 1))],
        "consented",
        rec(sensitive=True),
    ),
    case(
        "consented_in_opt_out_beats_sensitive",
        [US, grant(ts(2025, 2, 1))],
        "consented",
        rec(sensitive=True),
    ),
    case(
        "consented_beats_not_disclosed",
        [US, grant(ts(2020, 3, 1))],
        "consented",
        rec(ts(2020, 2, 1)),
        at=ts(2020, 6, 1),
    ),
    case(
        "consented_beats_notice_period",
        [US, grant(ts(2021, 1, 10))],
        "consented",
        rec(ts(2021, 1, 5)),
        at=ts(2021, 1, 15),
    ),
    case(
        "consented_beats_collected_before_notice",
        [US, grant(ts(2025, 2, 1))],
        "consented",
        rec(ts(2019, 6, 1)),
    ),
    case("consented_region_unknown", [NOWHERE, grant(ts(2025, 2, 1))], "consented"),
    case(
        "consented_moved_between_opt_in_regions",
        [DE, prof(ts(2024, 6, 1), "GB"), grant(ts(2025, 2, 1))],
        "consented",
    ),
    # 10 sensitive
    case("sensitive_in_opt_out", [US], "sensitive", rec(sensitive=True)),
    case("sensitive_beats_no_consent", [DE], "sensitive", rec(sensitive=True)),
    case(
        "sensitive_beats_not_disclosed",
        [US],
        "sensitive",
        rec(ts(2020, 2, 1), sensitive=True),
        at=ts(2020, 6, 1),
    ),
    case(
        "sensitive_beats_reconsent_required",
        [DE, grant(ts(2024, 2, 1))],
        "sensitive",
        rec(sensitive=True),
    ),
    case(
        "sensitive_beats_collected_before_notice",
        [US],
        "sensitive",
        rec(ts(2019, 6, 1), sensitive=True),
    ),
    case(
        "withdrawn_beats_sensitive",
        [US, withdraw(ts(2025, 2, 1))],
        "withdrawn",
        rec(sensitive=True),
    ),
    case("gpc_beats_sensitive", [US, gpc(ts(2025, 2, 1))], "gpc", rec(sensitive=True)),
    # 11 reconsent_required (R = 2025-01-01)
    case("reconsent_required", [DE, grant(ts(2024, 2, 1))], "reconsent_required"),
    case("reconsent_required_online", [DE, grant(ts(2024, 2, 1))], "reconsent_required", ONLINE),
    case(
        "reconsent_required_grant_one_microsecond_before_R",
        [DE, grant(R_AI - US_1)],
        "reconsent_required",
    ),
    case("grant_exactly_at_R_is_valid", [DE, grant(R_AI)], "consented"),
    case("grant_after_R_is_valid", [DE, grant(ts(2025, 2, 1))], "consented"),
    case(
        "regranted_after_R",
        [DE, grant(ts(2024, 2, 1)), grant(ts(2025, 2, 1))],
        "consented",
    ),
    case(
        "reconsent_notice_not_yet_in_force",
        [DE, grant(ts(2024, 2, 1))],
        "consented",
        at=ts(2024, 12, 1),
    ),
    case(
        "reconsent_notice_in_force_from_its_instant",
        [DE, grant(ts(2024, 2, 1))],
        "reconsent_required",
        rec(ts(2024, 6, 1)),
        at=R_AI,
    ),
    case(
        "reconsent_notice_names_other_purpose_only",
        [DE, grant(ts(2024, 2, 1), "genai_features")],
        "consented",
        purpose="genai_features",
    ),
    case(
        "older_withdrawal_becomes_latest_choice_again",
        [DE, withdraw(ts(2023, 1, 1)), grant(ts(2024, 2, 1))],
        "withdrawn",
    ),
    case(
        "older_refusal_becomes_latest_choice_again",
        [DE, refuse(ts(2023, 1, 1)), grant(ts(2024, 2, 1))],
        "refused",
    ),
    case(
        "older_gpc_becomes_latest_choice_again",
        [DE, gpc(ts(2023, 1, 1)), grant(ts(2024, 2, 1))],
        "gpc",
    ),
    case(
        "older_withdrawal_in_opt_out_becomes_latest_choice_again",
        [US, withdraw(ts(2023, 1, 1)), grant(ts(2024, 2, 1))],
        "withdrawn",
    ),
    case("refusal_before_R_still_counts", [DE, refuse(ts(2024, 2, 1))], "refused"),
    case("withdrawal_before_R_still_counts", [US, withdraw(ts(2024, 2, 1))], "withdrawn"),
    case(
        "invalidated_grant_in_opt_out_falls_through_to_default",
        [US, grant(ts(2024, 2, 1))],
        "default_allowed",
    ),
    # 12 no_consent
    case("no_consent", [DE], "no_consent"),
    case("no_consent_online", [DE], "no_consent", ONLINE),
    case("no_consent_region_unknown", [NOWHERE], "no_consent"),
    case("no_consent_region_unknown_online", [NOWHERE], "no_consent", ONLINE),
    case("no_consent_subdivision_overrides_country", [NY], "no_consent"),
    case("no_consent_GB", [home("GB")], "no_consent"),
    case(
        "no_consent_moved_from_opt_in_to_opt_out",
        [DE, prof(ts(2024, 6, 1), "US")],
        "no_consent",
    ),
    case(
        "no_consent_moved_from_opt_out_to_opt_in",
        [US, prof(ts(2025, 2, 1), "DE")],
        "no_consent",
    ),
    case(
        "no_consent_beats_not_disclosed",
        [DE],
        "no_consent",
        rec(ts(2020, 2, 1)),
        at=ts(2020, 6, 1),
    ),
    # 13 not_disclosed
    case(
        "not_disclosed_no_notice_in_force",
        [US],
        "not_disclosed",
        rec(ts(2019, 3, 1)),
        at=ts(2019, 6, 1),
    ),
    case(
        "not_disclosed_notice_in_force_omits_purpose",
        [US],
        "not_disclosed",
        rec(ts(2020, 2, 1)),
        at=ts(2020, 6, 1),
    ),
    case("not_disclosed_online", [US], "not_disclosed", ONLINE, at=ts(2020, 6, 1)),
    case(
        "disclosed_for_the_other_purpose",
        [US],
        "default_allowed",
        rec(ts(2020, 2, 1)),
        at=ts(2020, 6, 1),
        purpose="genai_features",
    ),
    case(
        "not_disclosed_one_microsecond_before_notice",
        [US],
        "not_disclosed",
        rec(ts(2020, 2, 1)),
        at=D_AI - US_1,
    ),
    # 14 notice_period (D = 2021-01-01, window 30 x 24 h)
    case("notice_period_from_D", [US], "notice_period", rec(D_AI), at=D_AI),
    case(
        "notice_period_last_microsecond",
        [US],
        "notice_period",
        rec(D_AI),
        at=D_AI + timedelta(days=30) - US_1,
    ),
    case(
        "notice_period_over_at_exactly_30x24h",
        [US],
        "default_allowed",
        rec(D_AI),
        at=D_AI + timedelta(hours=30 * 24),
    ),
    case(
        "notice_period_beats_collected_before_notice",
        [US],
        "notice_period",
        rec(ts(2020, 6, 1)),
        at=ts(2021, 1, 15),
    ),
    case("notice_period_online", [US], "notice_period", ONLINE, at=ts(2021, 1, 15)),
    case("after_notice_period_online", [US], "default_allowed", ONLINE, at=ts(2021, 1, 31)),
    # 15 collected_before_notice
    case("collected_before_notice", [US], "collected_before_notice", rec(D_AI - US_1)),
    case("collected_exactly_at_D", [US], "default_allowed", rec(D_AI)),
    case(
        "collected_before_any_notice",
        [US],
        "collected_before_notice",
        rec(ts(2019, 6, 1)),
    ),
    case(
        "collected_when_notice_omitted_purpose",
        [US],
        "collected_before_notice",
        rec(ts(2020, 6, 1)),
    ),
    # 16 default_allowed
    case("default_allowed", [US], "default_allowed"),
    case("default_allowed_online", [US], "default_allowed", ONLINE),
    case("default_allowed_BR", [home("BR")], "default_allowed"),
    case("default_allowed_US_subdivision_via_country", [home("US-CA")], "default_allowed"),
    case("default_allowed_comment", [US], "default_allowed", rec(source="comment")),
    case("default_allowed_article", [US], "default_allowed", rec(source="article")),
    case("default_allowed_profile", [US], "default_allowed", rec(source="profile")),
    # region(t): latest profile event setting region at or before t, else earliest <= T
    case(
        "region_at_c_falls_back_to_earliest_profile_opt_out",
        [prof(ts(2024, 3, 1), "US", ADULT), prof(ts(2024, 9, 1), "US-CA")],
        "default_allowed",
    ),
    case(
        "region_at_c_falls_back_to_earliest_profile_opt_in",
        [prof(ts(2024, 3, 1), "DE", ADULT), prof(ts(2024, 9, 1), "US")],
        "no_consent",
    ),
    case(
        "region_at_c_fallback_ignores_profile_events_without_region",
        [prof(ts(2022, 1, 1), None, ADULT), prof(ts(2024, 3, 1), "US")],
        "default_allowed",
    ),
    case(
        "region_at_c_fallback_ignores_profile_after_T",
        [prof(ts(2024, 3, 1), "US", ADULT), prof(T + US_1, "DE")],
        "default_allowed",
    ),
    case(
        "region_fallback_tie_at_the_earliest_instant_later_in_list_wins_opt_out",
        [prof(ts(2024, 3, 1), "DE", ADULT), prof(ts(2024, 3, 1), "US")],
        "default_allowed",
    ),
    case(
        "region_fallback_tie_at_the_earliest_instant_later_in_list_wins_opt_in",
        [prof(ts(2024, 3, 1), "US", ADULT), prof(ts(2024, 3, 1), "DE")],
        "no_consent",
    ),
    case(
        "invalidated_grant_for_other_purpose_is_not_reconsent_required",
        [DE, grant(ts(2024, 2, 1), "genai_features")],
        "no_consent",
    ),
    case(
        "region_set_exactly_at_c_counts_for_c",
        [DE, prof(C, "US")],
        "default_allowed",
    ),
    case(
        "region_set_just_after_c_does_not_count_for_c",
        [DE, prof(C + US_1, "US")],
        "no_consent",
    ),
    case(
        "birth_date_only_profile_does_not_clear_region",
        [home("US"), prof(ts(2023, 1, 1), None, date(1985, 1, 1))],
        "default_allowed",
    ),
    case(
        "profile_tie_later_in_list_wins_opt_in",
        [prof(ts(2019, 1, 1), "US", ADULT), prof(ts(2019, 1, 1), "DE")],
        "no_consent",
    ),
    case(
        "profile_tie_later_in_list_wins_opt_out",
        [prof(ts(2019, 1, 1), "DE", ADULT), prof(ts(2019, 1, 1), "US")],
        "default_allowed",
    ),
    case(
        "profile_tie_later_in_list_wins_birth_date",
        [prof(ts(2019, 1, 1), "US", ADULT), prof(ts(2019, 1, 1), None, CHILD)],
        "minor",
    ),
    case(
        "profile_tie_later_in_list_wins_birth_date_adult",
        [prof(ts(2019, 1, 1), "US", CHILD), prof(ts(2019, 1, 1), None, ADULT)],
        "default_allowed",
    ),
    # instants, not wall-clock strings: the same instant written with another offset
    case(
        "withdrawal_at_T_written_with_an_offset_counts",
        [US, withdraw(T.astimezone(timezone(timedelta(hours=2))))],
        "withdrawn",
    ),
    case(
        "withdrawal_after_T_written_with_an_earlier_looking_offset_ignored",
        [US, withdraw((T + US_1).astimezone(timezone(timedelta(hours=-8))))],
        "default_allowed",
    ),
    case(
        "tie_across_offsets_is_a_tie",
        [
            DE,
            withdraw(ts(2025, 3, 1, 2).astimezone(timezone(timedelta(hours=5)))),
            grant(ts(2025, 3, 1, 2)),
        ],
        "withdrawn",
    ),
    case(
        "later_grant_with_an_offset_is_later",
        # 2025-03-01T03:00+02:00 is 01:00Z, after the 00:30Z withdrawal
        [
            DE,
            withdraw(ts(2025, 3, 1, 0, 30)),
            grant(datetime(2025, 3, 1, 3, 0, tzinfo=timezone(timedelta(hours=2)))),
        ],
        "consented",
    ),
    case(
        "earlier_grant_with_an_offset_is_earlier",
        # 2025-03-01T01:00+02:00 is Feb 28 23:00Z, before the 00:30Z withdrawal... of Mar 1
        [
            DE,
            withdraw(ts(2025, 3, 1, 0, 30)),
            grant(datetime(2025, 3, 1, 1, 0, tzinfo=timezone(timedelta(hours=2)))),
        ],
        "withdrawn",
    ),
    # online: c = T, so only the region at T counts
    case(
        "online_moved_to_opt_out_uses_region_at_T",
        [DE, prof(ts(2025, 2, 1), "US")],
        "default_allowed",
        ONLINE,
    ),
    case("record_moved_to_opt_out_uses_strictest", [DE, prof(ts(2025, 2, 1), "US")], "no_consent"),
    case(
        "online_gpc_honoured_only_by_region_at_T",
        [US, prof(ts(2025, 2, 1), "JP"), gpc(ts(2025, 3, 1))],
        "default_allowed",
        ONLINE,
    ),
    case(
        "record_gpc_honoured_by_region_at_c",
        [US, prof(ts(2025, 2, 1), "JP"), gpc(ts(2025, 3, 1))],
        "gpc",
    ),
    case(
        "online_minor_judged_at_T_only",
        [home("US", date(2006, 3, 1))],
        "default_allowed",
        ONLINE,
    ),
]


@pytest.mark.parametrize("c", CASES)
def test_decision_table(c: Case) -> None:
    d = run(c.events, c.record, at=c.at, purpose=c.purpose)
    assert d.reason == c.expected
    assert d.allowed == (c.expected in ALLOWED)


def test_every_reason_code_is_reached_by_the_table() -> None:
    reached = {p.values[0].expected for p in CASES}  # type: ignore[attr-defined]
    assert reached == set(REASONS)


def test_naive_collection_time_is_an_unreadable_record() -> None:
    # §3 rule 2: "the record's collection time is missing, unreadable, or after T";
    # fail closed rather than guess a timezone.
    naive = datetime(2024, 1, 1)  # noqa: DTZ001 - the point of the test
    assert run([US], rec(naive)).reason == "invalid_record"


def test_unknown_purpose_is_an_error() -> None:
    with pytest.raises(UnknownPurposeError) as info:
        run([US], purpose="ads_targeting")
    assert info.value.field == "purpose"
    assert info.value.found == "ads_targeting"


def test_events_may_be_any_iterable() -> None:
    events = [DE, grant(ts(2025, 2, 1))]
    d = decide(events=iter(events), policy=POLICY, purpose="ai_training", at=T, record=REC)
    assert d == Decision(allowed=True, reason="consented")


# -- ties at the same instant: withdrawn > refused > gpc > grant ----------------------------

TIE = ts(2025, 3, 1)
KIND = {
    "granted": grant(TIE),
    "withdrawn": withdraw(TIE),
    "refused": refuse(TIE),
    "gpc": gpc(TIE),
}


@pytest.mark.parametrize(
    ("kinds", "expected"),
    [
        (("withdrawn", "granted"), "withdrawn"),
        (("refused", "granted"), "refused"),
        (("gpc", "granted"), "gpc"),
        (("withdrawn", "refused"), "withdrawn"),
        (("withdrawn", "gpc"), "withdrawn"),
        (("refused", "gpc"), "refused"),
        (("granted", "gpc", "refused", "withdrawn"), "withdrawn"),
        (("granted", "gpc", "refused"), "refused"),
        (("granted", "granted"), "consented"),
    ],
)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("region", ["DE", "US"])
def test_ties_resolve_to_the_restrictive_choice(
    kinds: tuple[str, ...], expected: str, reverse: bool, region: str
) -> None:
    choices = [KIND[k] for k in kinds]
    if reverse:
        choices.reverse()
    # an older, opposite choice must not matter
    older = [grant(ts(2025, 2, 1))]
    assert run([home(region), *older, *choices]).reason == expected


@pytest.mark.parametrize("reverse", [False, True])
def test_tie_with_unhonoured_gpc_is_a_grant(reverse: bool) -> None:
    choices = [grant(TIE), gpc(TIE)]
    if reverse:
        choices.reverse()
    assert run([JP, *choices]).reason == "consented"


@pytest.mark.parametrize("reverse", [False, True])
def test_tie_with_invalidated_grant_is_ignored(reverse: bool) -> None:
    # grant and withdrawal at the same instant before R; a later re-grant after R wins.
    choices = [grant(ts(2024, 2, 1)), withdraw(ts(2024, 2, 1))]
    if reverse:
        choices.reverse()
    assert run([DE, *choices]).reason == "withdrawn"
    assert run([DE, *choices, grant(ts(2025, 2, 1))]).reason == "consented"


# -- age: whole years on the UTC date ----------------------------------------------------


@pytest.mark.parametrize(
    ("birth", "at", "expected"),
    [
        (date(2007, 6, 1), ts(2025, 6, 1), "default_allowed"),
        (date(2007, 6, 1), ts(2025, 5, 31, 23, 59, 59, 999999), "minor"),
        (date(2007, 6, 1), ts(2025, 6, 1, 23, 59, 59), "default_allowed"),
        # 01:00 at +02:00 is 23:00 UTC on May 31: still 17 on the UTC date
        (
            date(2007, 6, 1),
            datetime(2025, 6, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))),
            "minor",
        ),
        # 23:00 at -02:00 is 01:00 UTC on June 1: 18 on the UTC date
        (
            date(2007, 6, 1),
            datetime(2025, 5, 31, 23, 0, tzinfo=timezone(timedelta(hours=-2))),
            "default_allowed",
        ),
        # born on Feb 29: 18 whole years are completed on March 1 of a common year
        (date(2008, 2, 29), ts(2026, 2, 28, 12), "minor"),
        (date(2008, 2, 29), ts(2026, 3, 1), "default_allowed"),
        (date(2004, 2, 29), ts(2022, 2, 28, 23, 59, 59), "minor"),
        (date(2004, 2, 29), ts(2022, 3, 1), "default_allowed"),
        # on a leap year the Feb 29 birthday exists
        (date(2006, 2, 28), ts(2024, 2, 28), "default_allowed"),
        (date(2006, 3, 1), ts(2024, 2, 29, 23, 59), "minor"),
        (date(2006, 3, 1), ts(2024, 3, 1), "default_allowed"),
        # 17 years and 364 days
        (date(2007, 12, 31), ts(2025, 12, 30), "minor"),
        (date(2007, 12, 31), ts(2025, 12, 31), "default_allowed"),
    ],
)
def test_age_is_whole_years_on_the_utc_date_online(
    birth: date, at: datetime, expected: str
) -> None:
    events = [prof(ts(2019, 1, 1), "US", birth)]
    assert run(events, ONLINE, at=at).reason == expected


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        (ts(2025, 5, 31, 23, 59, 59, 999999), "minor"),
        (ts(2025, 6, 1), "default_allowed"),
        (datetime(2025, 6, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))), "minor"),
    ],
)
def test_age_at_collection_time(c: datetime, expected: str) -> None:
    events = [prof(ts(2019, 1, 1), "US", date(2007, 6, 1))]
    assert run(events, rec(c), at=ts(2026, 1, 1)).reason == expected


def test_min_age_comes_from_the_policy() -> None:
    pol = parse_policy(POLICY_TOML.replace("min_age = 18", "min_age = 16"))
    events = [prof(ts(2019, 1, 1), "US", date(2008, 1, 1))]  # 16 at c = 2024-06-01
    assert run(events, rec(ts(2024, 6, 1)), policy=pol).reason == "default_allowed"
    assert run(events, rec(ts(2023, 12, 31)), policy=pol).reason == "minor"
    assert run(events, rec(ts(2024, 6, 1))).reason == "minor"


# -- events after T ----------------------------------------------------------------------


def test_nothing_dated_after_T_changes_the_decision() -> None:
    base = [US, prof(ts(2024, 6, 1), "US-CA")]
    later: list[Event] = [
        erase(T + US_1),
        withdraw(T + US_1),
        refuse(T + US_1),
        gpc(T + US_1),
        prof(T + US_1, "CH", CHILD),
        prof(T + timedelta(days=1), "DE"),
    ]
    for record in (REC, ONLINE):
        before = run(base, record)
        assert before.reason == "default_allowed"
        assert run([*base, *later], record) == before
        assert run([*later, *base], record) == before


def test_region_fallback_only_considers_profiles_at_or_before_T() -> None:
    # no profile event at or before c: the fallback is the earliest profile event at or
    # before T (US); the DE event after T must not count.
    events = [prof(ts(2024, 6, 1), "US", ADULT), prof(T + US_1, "DE")]
    assert run(events, rec(ts(2024, 1, 1))).reason == "default_allowed"


# -- notices: disclosure start D, notice in force, order in the file ----------------------

RUN_TOML = """
[policy]
version = "run-1"
min_age = 18

[purposes.ai_training]
title = "AI training"
notice_window_days = 30
[purposes.ai_training.modes]
"*" = "opt_out"

[purposes.genai_features]
title = "GenAI features"
notice_window_days = 30
[purposes.genai_features.modes]
"*" = "opt_out"

[jurisdictions."*"]
honor_gpc = true
request_deadline_days = 30

[[notices]]
version = "a"
effective = 2021-01-01T00:00:00Z
purposes = ["ai_training"]
reconsent = []

[[notices]]
version = "b"
effective = 2022-01-01T00:00:00Z
purposes = ["genai_features"]
reconsent = []

[[notices]]
version = "c"
effective = 2023-01-01T00:00:00Z
purposes = ["ai_training"]
reconsent = []

[[notices]]
version = "d"
effective = 2023-06-01T00:00:00Z
purposes = ["ai_training", "genai_features"]
reconsent = []
"""
RUN_POLICY = parse_policy(RUN_TOML)


@pytest.mark.parametrize(
    ("c", "at", "expected"),
    [
        # notice a alone is in force: D = 2021-01-01
        (ts(2021, 1, 1), ts(2021, 1, 30), "notice_period"),
        (ts(2021, 1, 1), ts(2021, 1, 31), "default_allowed"),
        # notice b in force: ai_training not listed
        (ts(2021, 6, 1), ts(2022, 6, 1), "not_disclosed"),
        # run c, d: D = 2023-01-01 (not 2021-01-01, the run was broken by b)
        (ts(2022, 6, 1), ts(2024, 6, 1), "collected_before_notice"),
        (ts(2021, 6, 1), ts(2024, 6, 1), "collected_before_notice"),
        (ts(2022, 12, 31, 23, 59, 59, 999999), ts(2024, 6, 1), "collected_before_notice"),
        (ts(2023, 1, 1), ts(2024, 6, 1), "default_allowed"),
        (ts(2023, 1, 20), ts(2023, 1, 20), "notice_period"),
        (ts(2023, 1, 1), ts(2023, 1, 31), "default_allowed"),
        # D is the START of the run, not the notice in force (d, 2023-06-01)
        (ts(2023, 2, 1), ts(2024, 6, 1), "default_allowed"),
        (ts(2023, 2, 1), ts(2023, 6, 15), "default_allowed"),
    ],
)
def test_disclosure_start_is_the_start_of_the_unbroken_run(
    c: datetime, at: datetime, expected: str
) -> None:
    events = [prof(ts(2019, 1, 1), "US", ADULT)]
    assert run(events, rec(c), at=at, policy=RUN_POLICY).reason == expected


@pytest.mark.parametrize(
    ("c", "at", "expected"),
    [
        # genai_features is listed by b, omitted by c, listed again by d:
        # at 2023-03-01 the notice in force (c) does not list it.
        (ts(2022, 6, 1), ts(2023, 3, 1), "not_disclosed"),
        # d lists it again: a new run starts at 2023-06-01
        (ts(2022, 6, 1), ts(2024, 6, 1), "collected_before_notice"),
        (ts(2023, 6, 1), ts(2023, 6, 30), "notice_period"),
        (ts(2023, 6, 1), ts(2023, 7, 1), "default_allowed"),
        # while b was in force
        (ts(2022, 1, 1), ts(2022, 6, 1), "default_allowed"),
    ],
)
def test_disclosure_start_for_a_purpose_with_a_gap(
    c: datetime, at: datetime, expected: str
) -> None:
    events = [prof(ts(2019, 1, 1), "US", ADULT)]
    assert (
        run(events, rec(c), at=at, purpose="genai_features", policy=RUN_POLICY).reason == expected
    )


def test_notices_in_force_by_effective_time_not_file_order() -> None:
    blocks = RUN_TOML.split("[[notices]]")
    shuffled = blocks[0] + "".join("[[notices]]" + b for b in reversed(blocks[1:]))
    pol = parse_policy(shuffled)
    events = [prof(ts(2019, 1, 1), "US", ADULT)]
    for c, at, expected in [
        (ts(2021, 6, 1), ts(2022, 6, 1), "not_disclosed"),
        (ts(2022, 6, 1), ts(2024, 6, 1), "collected_before_notice"),
        (ts(2023, 2, 1), ts(2024, 6, 1), "default_allowed"),
        (ts(2023, 1, 1), ts(2023, 1, 20), "notice_period"),
    ]:
        assert run(events, rec(c), at=at, policy=pol).reason == expected


OFFSET_TOML = RUN_TOML.replace("2021-01-01T00:00:00Z", "2021-01-01T00:00:00-05:00")


@pytest.mark.parametrize(
    ("c", "at", "expected"),
    [
        # the notice takes effect at 05:00 UTC
        (ts(2021, 1, 1, 4), ts(2021, 1, 1, 4, 59), "not_disclosed"),
        (ts(2021, 1, 1, 5), ts(2021, 1, 31, 4, 59, 59, 999999), "notice_period"),
        (ts(2021, 1, 1, 5), ts(2021, 1, 31, 5), "default_allowed"),
        (ts(2021, 1, 1, 4, 59, 59, 999999), ts(2021, 6, 1), "collected_before_notice"),
    ],
)
def test_notice_effective_with_an_offset(c: datetime, at: datetime, expected: str) -> None:
    pol = parse_policy(OFFSET_TOML)
    events = [prof(ts(2019, 1, 1), "US", ADULT)]
    assert run(events, rec(c), at=at, policy=pol).reason == expected


RECONSENT_TOML = (
    RUN_TOML
    + """
[[notices]]
version = "e"
effective = 2024-01-01T00:00:00Z
purposes = ["ai_training", "genai_features"]
reconsent = ["ai_training"]

[[notices]]
version = "f"
effective = 2024-06-01T00:00:00Z
purposes = ["ai_training", "genai_features"]
reconsent = []

[[notices]]
version = "g"
effective = 2025-01-01T00:00:00Z
purposes = ["ai_training", "genai_features"]
reconsent = ["ai_training"]
"""
)


@pytest.mark.parametrize(
    ("grant_at", "at", "expected"),
    [
        (ts(2023, 12, 31), ts(2024, 3, 1), "default_allowed"),  # invalidated by e, opt_out
        (ts(2024, 1, 1), ts(2024, 3, 1), "consented"),
        # a later notice without reconsent does not move R
        (ts(2024, 2, 1), ts(2024, 9, 1), "consented"),
        # R is the LATEST reconsent notice in force (g), not the first (e)
        (ts(2024, 2, 1), ts(2025, 2, 1), "default_allowed"),
        (ts(2025, 1, 1), ts(2025, 2, 1), "consented"),
    ],
)
def test_reconsent_cutoff_is_the_latest_reconsent_notice_in_force(
    grant_at: datetime, at: datetime, expected: str
) -> None:
    pol = parse_policy(RECONSENT_TOML)
    events = [prof(ts(2019, 1, 1), "US", ADULT), grant(grant_at)]
    assert run(events, rec(ts(2023, 2, 1)), at=at, policy=pol).reason == expected


def test_reconsent_required_only_in_opt_in() -> None:
    pol = parse_policy(RECONSENT_TOML.replace('"*" = "opt_out"', '"*" = "opt_in"', 1))
    events = [prof(ts(2019, 1, 1), "US", ADULT), grant(ts(2024, 2, 1))]
    assert run(events, rec(ts(2023, 2, 1)), at=ts(2025, 2, 1), policy=pol).reason == (
        "reconsent_required"
    )
    assert run(events, rec(ts(2023, 2, 1)), at=ts(2024, 9, 1), policy=pol).reason == "consented"


# -- policy versions ---------------------------------------------------------------------

V1_TOML = RUN_TOML.replace(
    '"*" = "opt_out"\n\n[purposes.genai', '"*" = "opt_out"\nCH = "opt_in"\n\n[purposes.genai'
)
V2_TOML = V1_TOML.replace('"*" = "opt_out"\nCH', '"*" = "excluded"\nCH')
V1_AT = ts(2022, 1, 1)
V2_AT = ts(2025, 1, 1)


def history() -> PolicyHistory:
    return PolicyHistory([(V1_AT, parse_policy(V1_TOML)), (V2_AT, parse_policy(V2_TOML))])


@pytest.mark.parametrize(
    ("c", "at", "expected"),
    [
        (ts(2023, 2, 1), ts(2024, 6, 1), "default_allowed"),  # v1 in force
        (ts(2023, 2, 1), V2_AT - US_1, "default_allowed"),
        (ts(2023, 2, 1), V2_AT, "region_excluded"),  # v2 in force from its instant
        (ts(2023, 2, 1), ts(2025, 6, 1), "region_excluded"),  # modes of the version at T, not c
        # before any version: the earliest one (v1) applies; notice a in force, D = 2021-01-01
        (ts(2021, 2, 1), ts(2021, 6, 1), "default_allowed"),
        (ts(2020, 2, 1), ts(2021, 6, 1), "collected_before_notice"),
    ],
)
def test_policy_version_in_force_at_T(c: datetime, at: datetime, expected: str) -> None:
    events = [prof(ts(2019, 1, 1), "US", ADULT)]
    assert run(events, rec(c), at=at, policy=history()).reason == expected


def test_policy_history_in_force() -> None:
    h = history()
    assert h.in_force(ts(2010, 1, 1)).mode("ai_training", "US") == "opt_out"
    assert h.in_force(V1_AT).mode("ai_training", "US") == "opt_out"
    assert h.in_force(V2_AT - US_1).mode("ai_training", "US") == "opt_out"
    assert h.in_force(V2_AT).mode("ai_training", "US") == "excluded"
    assert h.in_force(ts(2030, 1, 1)).mode("ai_training", "US") == "excluded"
    assert h.in_force(V2_AT).mode("ai_training", "CH") == "opt_in"


def test_notices_come_from_the_version_in_force() -> None:
    # v2' has no notices at all: under it nothing is disclosed.
    v2 = parse_policy(RUN_TOML.split("[[notices]]")[0])
    h = PolicyHistory([(V1_AT, parse_policy(RUN_TOML)), (V2_AT, v2)])
    events = [prof(ts(2019, 1, 1), "US", ADULT)]
    assert run(events, rec(ts(2023, 2, 1)), at=ts(2024, 6, 1), policy=h).reason == (
        "default_allowed"
    )
    assert run(events, rec(ts(2023, 2, 1)), at=ts(2025, 6, 1), policy=h).reason == ("not_disclosed")
