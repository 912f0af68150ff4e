"""Properties of `decide()` (DESIGN §3) over generated event histories."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consentgate.domain import (
    ConsentEvent,
    Decision,
    ErasureEvent,
    Event,
    Policy,
    ProfileEvent,
    Record,
    SignalEvent,
    decide,
    default_policy_text,
    parse_policy,
)

REASONS = {
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
}
BEFORE_CHOICE = {  # rules 1-7: may pre-empt the latest choice
    "missing_subject",
    "invalid_record",
    "unknown_subject",
    "erased",
    "minor",
    "region_excluded",
    "source_not_eligible",
}
ALLOWED = {"consented", "default_allowed"}
PURPOSES = ("ai_training", "genai_features")

POLICY_TOML = """
[policy]
version = "prop-1"
min_age = 18

[purposes.ai_training]
title = "AI training"
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
CH = "excluded"

[jurisdictions."*"]
honor_gpc = true
request_deadline_days = 30
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
effective = 2022-06-01T00:00:00Z
purposes = ["genai_features"]
reconsent = []

[[notices]]
version = "n3"
effective = 2023-01-01T00:00:00Z
purposes = ["ai_training", "genai_features"]
reconsent = ["ai_training"]
"""
POLICY = parse_policy(POLICY_TOML)
# The shipped default policy plus one notice disclosing ai_training, so that opt-out
# regions can actually reach default_allowed.
DEFAULT_WITH_NOTICE = parse_policy(
    default_policy_text()
    + """
[[notices]]
version = "2020-01-01"
effective = 2020-01-01T00:00:00Z
purposes = ["ai_training", "genai_features"]
reconsent = []
"""
)

S = "m1"
EPOCH = datetime(2019, 1, 1, tzinfo=UTC)
SPAN_MINUTES = 6 * 365 * 24 * 60  # 2019 .. 2025
REGIONS = ["US", "US-CA", "US-TX", "US-NY", "DE", "FR", "GB", "CH", "BR", "JP", "IN"]
SOURCES = ["post", "comment", "profile", "private_message", None]

SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SPECIAL = [
    datetime(2021, 1, 1, tzinfo=UTC),  # D(ai_training) of the first run
    datetime(2021, 1, 31, tzinfo=UTC),  # its notice window ends
    datetime(2023, 1, 1, tzinfo=UTC),  # re-consent notice, new disclosure run
    datetime(2023, 1, 31, tzinfo=UTC),
]


def _instant(n: int) -> datetime:
    # Mostly whole days (so ties happen often), sometimes exact minutes, sometimes the
    # notice boundaries of POLICY.
    kind, value = n % 4, n // 4
    if kind == 0:
        return SPECIAL[value % len(SPECIAL)]
    if kind == 3:
        return EPOCH + timedelta(minutes=value % SPAN_MINUTES)
    return EPOCH + timedelta(days=value % (6 * 365))


instants = st.integers(0, 4 * SPAN_MINUTES).map(_instant)
birth_dates = st.integers(0, 65 * 365).map(lambda d: date(1950, 1, 1) + timedelta(days=d))


def profile_events(regions: list[str | None] | None = None) -> st.SearchStrategy[ProfileEvent]:
    pool: list[str | None] = [None, *(REGIONS if regions is None else regions)]

    def build(at: datetime, region: str | None, birth: date, keep_birth: bool) -> ProfileEvent:
        if region is not None and not keep_birth:
            return ProfileEvent(subject=S, at=at, region=region)
        return ProfileEvent(subject=S, at=at, region=region, birth_date=birth)

    return st.builds(build, instants, st.sampled_from(pool), birth_dates, st.booleans())


consent_events = st.builds(
    lambda at, p, c: ConsentEvent(subject=S, at=at, purpose=p, choice=c),
    instants,
    st.sampled_from(PURPOSES),
    st.sampled_from(["granted", "withdrawn", "refused"]),
)
signal_events = st.builds(lambda at: SignalEvent(subject=S, at=at, signal="gpc"), instants)
erasure_events = st.builds(lambda at: ErasureEvent(subject=S, at=at), instants)


def any_events(
    profiles: st.SearchStrategy[ProfileEvent] | None = None, erasures: bool = True
) -> st.SearchStrategy[list[Event]]:
    parts: list[st.SearchStrategy[Event]] = [
        profiles if profiles is not None else profile_events(),
        consent_events,
        consent_events,
        signal_events,
    ]
    if erasures:
        parts.append(erasure_events)
    return st.lists(st.one_of(*parts), max_size=12)


@st.composite
def records(draw: st.DrawFn, at: datetime) -> Record | None:
    if draw(st.booleans()):
        return None  # online decision
    c = draw(st.one_of(instants, st.just(at)))
    if draw(st.integers(0, 20)) == 0:
        c = at + timedelta(microseconds=1)
    return Record(
        subject=draw(st.sampled_from([S, S, S, S, None])),
        collected_at=draw(st.one_of(st.just(c), st.just(c), st.just(c), st.none())),
        source=draw(st.sampled_from(SOURCES)),
        sensitive=draw(st.booleans()),
    )


@st.composite
def scenarios(
    draw: st.DrawFn, events: st.SearchStrategy[list[Event]] | None = None
) -> tuple[list[Event], datetime, Record | None, str]:
    evs = draw(events if events is not None else any_events())
    at = draw(instants)
    return evs, at, draw(records(at)), draw(st.sampled_from(PURPOSES))


def run(
    events: list[Event],
    at: datetime,
    record: Record | None,
    purpose: str,
    policy: Policy = POLICY,
) -> Decision:
    return decide(events=events, policy=policy, purpose=purpose, at=at, record=record)


@SETTINGS
@given(scenarios())
def test_reason_is_a_code_and_allowed_iff_allowing_reason(
    s: tuple[list[Event], datetime, Record | None, str],
) -> None:
    d = run(*s)
    assert d.reason in REASONS
    assert d.allowed is (d.reason in ALLOWED)


@SETTINGS
@given(scenarios())
def test_decide_is_deterministic(s: tuple[list[Event], datetime, Record | None, str]) -> None:
    events, at, record, purpose = s
    first = run(events, at, record, purpose)
    assert run(list(events), at, record, purpose) == first
    assert decide(events=iter(events), policy=POLICY, purpose=purpose, at=at, record=record) == (
        first
    )


@SETTINGS
@given(
    scenarios(),
    st.lists(
        st.one_of(profile_events(), consent_events, signal_events, erasure_events), max_size=6
    ),
    st.integers(1, 10**9),
    st.data(),
)
def test_events_after_T_never_change_the_decision(
    s: tuple[list[Event], datetime, Record | None, str],
    extra: list[Event],
    offset_us: int,
    data: st.DataObject,
) -> None:
    events, at, record, purpose = s
    later = [replace(e, at=at + timedelta(microseconds=offset_us) + (e.at - EPOCH)) for e in extra]
    before = run(events, at, record, purpose)
    merged = list(events)
    for e in later:
        merged.insert(data.draw(st.integers(0, len(merged))), e)
    assert run(merged, at, record, purpose) == before


@SETTINGS
@given(scenarios(), st.integers(1, 10**8))
def test_a_withdrawal_later_than_every_choice_always_excludes(
    s: tuple[list[Event], datetime, Record | None, str], gap_us: int
) -> None:
    events, at, record, purpose = s
    latest = max((e.at for e in events), default=EPOCH)
    when = latest + timedelta(microseconds=gap_us)
    at = max(at, when)
    if record is not None and record.collected_at is not None and record.collected_at > at:
        record = replace(record, collected_at=at)
    withdrawal = ConsentEvent(subject=S, at=when, purpose=purpose, choice="withdrawn")
    d = run([*events, withdrawal], at, record, purpose)
    assert not d.allowed
    assert d.reason in BEFORE_CHOICE | {"withdrawn"}
    assert d.reason != "unknown_subject"


@SETTINGS
@given(scenarios(), st.booleans())
def test_a_withdrawal_tied_with_the_latest_choice_still_excludes(
    s: tuple[list[Event], datetime, Record | None, str], withdrawal_first: bool
) -> None:
    events, at, record, purpose = s
    latest = max((e.at for e in events), default=EPOCH)
    at = max(at, latest)
    if record is not None and record.collected_at is not None and record.collected_at > at:
        record = replace(record, collected_at=at)
    withdrawal = ConsentEvent(subject=S, at=latest, purpose=purpose, choice="withdrawn")
    merged = [withdrawal, *events] if withdrawal_first else [*events, withdrawal]
    d = run(merged, at, record, purpose)
    assert not d.allowed
    assert d.reason in BEFORE_CHOICE | {"withdrawn"}


@SETTINGS
@given(scenarios(), st.integers(0, 10**8))
def test_a_region_set_to_excluded_never_allows(
    s: tuple[list[Event], datetime, Record | None, str], back_us: int
) -> None:
    events, at, record, purpose = s
    # the member lives in CH (excluded) at T: the latest region set at or before T
    when = at - timedelta(microseconds=back_us)
    moved = ProfileEvent(subject=S, at=when, region="CH")
    kept = [e for e in events if not (isinstance(e, ProfileEvent) and e.region and e.at >= when)]
    d = run([*kept, moved], at, record, purpose)
    assert not d.allowed
    assert d.reason in {"missing_subject", "invalid_record", "erased", "minor", "region_excluded"}


@SETTINGS
@given(scenarios(any_events(profile_events(regions=[]))))
def test_unknown_region_is_never_default_allowed_under_the_default_policy(
    s: tuple[list[Event], datetime, Record | None, str],
) -> None:
    events, at, record, purpose = s
    assert all(not (isinstance(e, ProfileEvent) and e.region) for e in events)
    d = run(events, at, record, purpose, policy=DEFAULT_WITH_NOTICE)
    assert d.reason != "default_allowed"
    assert d.reason not in {"not_disclosed", "notice_period", "collected_before_notice"}


@SETTINGS
@given(scenarios(any_events(profile_events(regions=["US", "US-CA", "BR"]))))
def test_opt_out_only_member_is_never_asked_for_consent(
    s: tuple[list[Event], datetime, Record | None, str],
) -> None:
    events, at, record, purpose = s
    first = ProfileEvent(subject=S, at=EPOCH, region="US")
    d = run([first, *events], at, record, purpose, policy=DEFAULT_WITH_NOTICE)
    assert d.reason not in {"no_consent", "reconsent_required", "region_excluded"}


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False))
def test_permuting_events_with_distinct_timestamps_does_not_change_the_decision(
    s: tuple[list[Event], datetime, Record | None, str], rnd: object
) -> None:
    events, at, record, purpose = s
    seen: set[datetime] = set()
    distinct: list[Event] = []
    for e in events:
        if e.at not in seen:
            seen.add(e.at)
            distinct.append(e)
    shuffled = list(distinct)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert run(shuffled, at, record, purpose) == run(distinct, at, record, purpose)


@SETTINGS
@given(scenarios(), st.randoms(use_true_random=False))
def test_permuting_non_profile_events_does_not_change_the_decision(
    s: tuple[list[Event], datetime, Record | None, str], rnd: object
) -> None:
    # only profile events at the same instant depend on recording order
    events, at, record, purpose = s
    profiles = [e for e in events if isinstance(e, ProfileEvent)]
    others = [e for e in events if not isinstance(e, ProfileEvent)]
    rnd.shuffle(others)  # type: ignore[attr-defined]
    assert run([*others, *profiles], at, record, purpose) == run(events, at, record, purpose)


@SETTINGS
@given(scenarios())
def test_online_decision_equals_an_eligible_non_sensitive_record_collected_at_T(
    s: tuple[list[Event], datetime, Record | None, str],
) -> None:
    events, at, _, purpose = s
    online = run(events, at, None, purpose)
    as_record = run(events, at, Record(subject=S, collected_at=at, source="post"), purpose)
    assert online == as_record


@SETTINGS
@given(scenarios())
def test_sensitive_only_ever_turns_a_late_rule_into_sensitive(
    s: tuple[list[Event], datetime, Record | None, str],
) -> None:
    events, at, record, purpose = s
    if record is None:
        record = Record(subject=S, collected_at=at, source="post")
    plain = run(events, at, replace(record, sensitive=False), purpose)
    flagged = run(events, at, replace(record, sensitive=True), purpose)
    late = {
        "reconsent_required",
        "no_consent",
        "not_disclosed",
        "notice_period",
        "collected_before_notice",
        "default_allowed",
    }
    if plain.reason in late:
        assert flagged.reason == "sensitive"
    else:
        assert flagged == plain


@SETTINGS
@given(scenarios(), st.integers(0, 10**8))
def test_an_erasure_at_or_before_T_always_excludes(
    s: tuple[list[Event], datetime, Record | None, str], back_us: int
) -> None:
    events, at, record, purpose = s
    erasure = ErasureEvent(subject=S, at=at - timedelta(microseconds=back_us))
    d = run([*events, erasure], at, record, purpose)
    assert d.reason in {"missing_subject", "invalid_record", "erased"}


@SETTINGS
@given(scenarios())
def test_adding_a_grant_at_T_never_turns_allowed_into_excluded(
    s: tuple[list[Event], datetime, Record | None, str],
) -> None:
    events, at, record, purpose = s
    before = run(events, at, record, purpose)
    grant = ConsentEvent(subject=S, at=at, purpose=purpose, choice="granted")
    after = run([*events, grant], at, record, purpose)
    if before.allowed:
        assert after.allowed
    if after.reason not in BEFORE_CHOICE:
        # a grant at T is valid (no notice can be newer than T), so it is the latest
        # choice unless a restrictive choice ties with it
        assert after.reason in {"consented", "withdrawn", "refused", "gpc"}


@SETTINGS
@given(scenarios())
def test_the_other_purpose_choices_do_not_matter(
    s: tuple[list[Event], datetime, Record | None, str],
) -> None:
    events, at, record, purpose = s
    mine = [e for e in events if not (isinstance(e, ConsentEvent) and e.purpose != purpose)]
    everything = run(events, at, record, purpose)
    only_mine = run(mine, at, record, purpose)
    if any(e.at <= at for e in mine) or not any(e.at <= at for e in events):
        assert only_mine == everything
    else:  # the other purpose's choices were all that made the subject known
        assert only_mine.reason in {"missing_subject", "invalid_record", "unknown_subject"}
