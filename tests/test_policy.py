"""The per-route policy table (stirshaken.policy), row by row."""

from __future__ import annotations

import pytest

from stirshaken.policy import Action, EntryPolicy, Policy, after_obtain, decide, parse_entry_attrs

D, S, R = Policy.DISABLED, Policy.SUPPORTED, Policy.REQUIRED


@pytest.mark.parametrize(
    ("policy", "has_identity", "expected"),
    [
        # obtain when none? | send with it? | send without when none?
        (D, True, Action.SEND_WITHOUT_IDENTITY),  # disabled: strip it
        (D, False, Action.SEND_WITHOUT_IDENTITY),  # disabled: no obtain, send without
        (S, True, Action.SEND_WITH_IDENTITY),
        (S, False, Action.SEND_WITHOUT_IDENTITY),  # supported: never obtains
        (R, True, Action.SEND_WITH_IDENTITY),
        (R, False, Action.OBTAIN),
    ],
)
def test_policy_table(policy: Policy, has_identity: bool, expected: Action) -> None:
    assert decide(EntryPolicy(policy=policy), has_identity=has_identity) is expected


def test_required_without_signing_possible_skips() -> None:
    assert decide(EntryPolicy(policy=R, ss_enabled=False), has_identity=False) is Action.SKIP
    assert decide(EntryPolicy(policy=R), has_identity=False, can_obtain=False) is Action.SKIP
    # ss_enabled=0 does not stop an Identity the call already has
    assert decide(EntryPolicy(policy=R, ss_enabled=False), has_identity=True) is Action.SEND_WITH_IDENTITY


def test_after_obtain() -> None:
    assert after_obtain(EntryPolicy(policy=R), obtained=True) is Action.SEND_WITH_IDENTITY
    assert after_obtain(EntryPolicy(policy=R), obtained=False) is Action.SKIP


@pytest.mark.parametrize(
    ("attrs", "policy", "enabled"),
    [
        ("ss_enabled=1;ss_policy=required", R, True),
        ("ss_policy=disabled;ss_enabled=0", D, False),
        ("weight=50;ss_policy=Supported", S, True),
        ("", S, True),
        (None, S, True),
        ("ss_policy=bogus", S, True),  # a typo never fails a call: the default
        ("ss_enabled=no;ss_policy=\"required\"", R, False),
        (";;=;ss_policy", S, True),
    ],
)
def test_parse_entry_attrs(attrs: str | None, policy: Policy, enabled: bool) -> None:
    assert parse_entry_attrs(attrs) == EntryPolicy(policy=policy, ss_enabled=enabled)
