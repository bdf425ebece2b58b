"""Receiver policies: what to do about missing packets. One file per policy.

======================  =====================================================================
``resend``              selective repeat up to ``max_rounds`` / ``deadline_s``; zeros for the rest
``none``                decode after the first pass, missing cells ``fill``-ed (zero | mean)
``complement``          decode after the first pass, missing cells repaired by ``method``
``hybrid``              resend while the deadline allows (or while more than ``max_missing``
                        is missing), then complement
======================  =====================================================================

``make_policy(kind, **kwargs)`` builds one from the scenario's keys; the engine's
contract with a policy is :class:`sim.policies.base.Policy`.
"""

from __future__ import annotations

import difflib

from sim.errors import ConfigError
from sim.policies.base import Decision, Policy, build_policy
from sim.policies.complement import Complement
from sim.policies.hybrid import Hybrid
from sim.policies.none import NoRepair
from sim.policies.resend import Resend

__all__ = ["POLICIES", "make_policy", "Policy", "Decision", "Resend", "NoRepair", "Complement", "Hybrid"]

POLICIES: dict[str, type] = {cls.kind: cls for cls in (Resend, NoRepair, Complement, Hybrid)}


def make_policy(kind: str, **kwargs) -> Policy:
    """The policy named ``kind`` with the scenario's keys; ConfigError on unknown kind/key/value."""
    cls = POLICIES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        hint = difflib.get_close_matches(str(kind), POLICIES, n=1)
        raise ConfigError(f"policy = {kind!r}: expected one of {', '.join(POLICIES)}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return build_policy(cls, kwargs)
