"""Per-route STIR/SHAKEN policy: what one routing attempt does with the call's Identity.

A routing group is a list of vendor entries tried in order.  Each entry has
``ss_enabled`` (0/1: may a signing request be made for it) and ``ss_policy``.
For every attempt the policy table decides (the Sippy/1CallConnect table,
standards.md §8.5)::

    policy     | obtain one when the call | send with the call's | send without one
               | has no Identity yet?     | Identity?            | when there is none?
    -----------+--------------------------+----------------------+--------------------
    disabled   | no                       | no (strip it)        | yes
    supported  | no                       | yes                  | yes
    required   | yes                      | yes                  | no: skip the entry

The "call's Identity" is the one it already has: received and usable after
verification, or obtained earlier for this call (an earlier entry).
``ss_enabled=0`` means no signing request is ever made for that entry, so a
``required`` entry without one is skipped.

Everything here is pure: :func:`decide` before an attempt, and
:func:`after_obtain` once an obtain came back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Policy(enum.Enum):
    DISABLED = "disabled"
    SUPPORTED = "supported"
    REQUIRED = "required"


DEFAULT_POLICY = Policy.SUPPORTED


class Action(enum.Enum):
    """What to do for one attempt."""

    SEND_WITH_IDENTITY = "send-with-identity"
    """Relay carrying the call's Identity (and its Date)."""
    SEND_WITHOUT_IDENTITY = "send-without-identity"
    """Relay with every Identity header removed."""
    OBTAIN = "obtain"
    """Get an Identity (sign, or ask the AS), then call :func:`after_obtain`."""
    SKIP = "skip"
    """Do not send to this entry; try the next one."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryPolicy:
    """The STIR/SHAKEN attributes of one dispatcher entry."""

    policy: Policy = DEFAULT_POLICY
    ss_enabled: bool = True


def parse_entry_attrs(attrs: str | None) -> EntryPolicy:
    """Read ``ss_enabled`` / ``ss_policy`` from a dispatcher attrs string.

    ``"ss_enabled=1;ss_policy=required;weight=50"`` -> required, enabled.
    Unknown keys are ignored; missing or unreadable values take the
    defaults (``supported``, enabled), so a typo never makes a call fail:
    an unreadable ``ss_policy`` is treated as ``supported``.
    """
    policy = DEFAULT_POLICY
    enabled = True
    for item in (attrs or "").split(";"):
        key, sep, value = item.partition("=")
        if not sep:
            continue
        key = key.strip().lower()
        value = value.strip().strip('"').lower()
        if key == "ss_policy":
            try:
                policy = Policy(value)
            except ValueError:
                policy = DEFAULT_POLICY
        elif key == "ss_enabled":
            enabled = value not in ("0", "no", "false", "off")
    return EntryPolicy(policy=policy, ss_enabled=enabled)


def decide(entry: EntryPolicy, *, has_identity: bool, can_obtain: bool = True) -> Action:
    """The policy table for one attempt.

    *can_obtain* is False when no signing request can be made at all (global
    provider ``disabled``); ``ss_enabled=0`` on the entry has the same effect.
    """
    if entry.policy is Policy.DISABLED:
        return Action.SEND_WITHOUT_IDENTITY
    if has_identity:
        return Action.SEND_WITH_IDENTITY
    if entry.policy is Policy.SUPPORTED:
        return Action.SEND_WITHOUT_IDENTITY
    # required, and the call has no Identity
    if entry.ss_enabled and can_obtain:
        return Action.OBTAIN
    return Action.SKIP


def after_obtain(entry: EntryPolicy, *, obtained: bool) -> Action:
    """The outcome of an :data:`Action.OBTAIN`: send signed, or skip the entry."""
    if obtained:
        return Action.SEND_WITH_IDENTITY
    if entry.policy is Policy.REQUIRED:
        return Action.SKIP
    return Action.SEND_WITHOUT_IDENTITY
