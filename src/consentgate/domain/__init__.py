"""Pure rules and values: events, policy, notices and `decide()`. Standard library only."""

from consentgate.domain.decide import ALLOWED_REASONS, REASONS, Decision, Record, decide
from consentgate.domain.events import (
    ConsentEvent,
    ErasureEvent,
    Event,
    ProfileEvent,
    SignalEvent,
    canonical_bytes,
    event_to_json,
    parse_event,
)
from consentgate.domain.policy import Jurisdiction, Notice, Policy, PolicyHistory, Purpose
from consentgate.domain.policy_file import default_policy_text, load_policy, parse_policy

__all__ = [
    "ALLOWED_REASONS",
    "REASONS",
    "ConsentEvent",
    "Decision",
    "ErasureEvent",
    "Event",
    "Jurisdiction",
    "Notice",
    "Policy",
    "PolicyHistory",
    "ProfileEvent",
    "Purpose",
    "Record",
    "SignalEvent",
    "canonical_bytes",
    "decide",
    "default_policy_text",
    "event_to_json",
    "load_policy",
    "parse_event",
    "parse_policy",
]
