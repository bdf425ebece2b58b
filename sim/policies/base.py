"""What a receiver policy sees and does, and the checks every policy shares.

The engine consults a policy at each *decision point*: the moment the receiver has
detected that a transmission pass is over (all its packets arrived, the pass's last packet
arrived after a gap, or the loss timer fired) with data cells still missing. The policy
answers one question — resend the missing data packets now (True), or decode with what
has arrived (False) — and, once decoding, repairs the missing cells.

Header packets are not the policy's business: they are fetched under every policy, since
nothing decodes without them.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from sim.errors import ConfigError

__all__ = ["Decision", "Policy", "build_policy", "check_int", "check_seconds", "check_choice", "check_share",
           "check_method", "apply_method"]


@dataclass(frozen=True)
class Decision:
    """The receiver's view at a decision point (times in simulated seconds since the first bit).

    now_s : when the decision is taken
    rounds : transmission passes so far, the first included
    missing_cells, n_cells : latent cells not yet received, and all cells
    missing_packets : data packets not yet received
    eta_s : worst-case time of the next decision point if the missing packets are resent
        now: NACK one-way (serialization + delay + jitter bound) + serialization of the
        missing packets + delay + jitter bound + the loss timer ``timeout_s``
    """

    now_s: float
    rounds: int
    missing_cells: int
    n_cells: int
    missing_packets: int
    eta_s: float

    @property
    def missing_share(self) -> float:
        return self.missing_cells / self.n_cells if self.n_cells else 0.0


@runtime_checkable
class Policy(Protocol):
    """A frozen dataclass whose fields are the scenario's YAML keys for this policy."""

    kind: ClassVar[str]

    @property
    def cutoff_s(self) -> float | None:
        """Hard deadline, simulated seconds since the first bit: decode then at the latest."""
        ...

    def decide(self, d: Decision) -> bool:
        """True: NACK the missing data packets now; False: decode with what has arrived."""
        ...

    def repair(self, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator,
               method=None) -> tuple[np.ndarray, bool]:
        """(latent (C, h, w) float32 with missing cells filled, complemented?).

        ``method`` is the policy's complement method built once per run
        (``sim.complement.make_method(policy.method, codec, ...)``); policies without a
        ``method`` ignore it, the others fall back to the registry function when it is None.
        """
        ...


# --------------------------------------------------------------------------- checks


def check_int(where: str, value, lo: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < lo:
        raise ConfigError(f"{where} = {value!r}: expected an integer ≥ {lo}")
    return int(value)


def check_seconds(where: str, value, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value <= 0):
        raise ConfigError(f"{where} = {value!r}: expected a time > 0 (seconds)"
                          + (" or null" if allow_none else ""))
    return float(value)


def check_share(where: str, value) -> float:
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real)
            or not 0.0 <= value <= 1.0):
        raise ConfigError(f"{where} = {value!r}: expected a share in [0, 1]")
    return float(value)


def check_choice(where: str, value, choices) -> str:
    if value not in choices:
        hint = difflib.get_close_matches(str(value), list(choices), n=1)
        raise ConfigError(f"{where} = {value!r}: expected one of {', '.join(choices)}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return value


def check_method(kind: str, method, options) -> dict:
    """Check a policy's ``method`` and ``method_options`` (nothing is loaded); returns the options.

    The options are :func:`sim.complement.make_method`'s keywords, checked by
    :func:`sim.complement.learned.check_options`; its errors are re-raised naming
    ``policy.<kind>.method_options.<key>``.
    """
    from sim.complement import complement_method
    from sim.complement.learned import check_options

    complement_method(method, f"policy.{kind}.method")
    options = {} if options is None else options
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ConfigError(f"policy.{kind}.method_options = {options!r}: expected a mapping of options of "
                          f"method {method!r} (docs/complement.md), e.g. {{steps: 4}}")
    try:
        return check_options(method, **options)
    except ConfigError as err:
        msg = str(err)
        if msg.startswith("complement."):
            msg = f"policy.{kind}.method_options.{msg[len('complement.'):]}"
        raise ConfigError(msg) from None


def apply_method(fn, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """``(fn(latent, missing, rng), True)`` when cells are missing or ``fn.alters_known`` (the
    denoising step repairs every cell); ``(latent, False)`` otherwise."""
    if not np.asarray(missing).any() and not getattr(fn, "alters_known", False):
        return np.asarray(latent, dtype=np.float32), False
    return fn(latent, missing, rng), True


def build_policy(cls, kwargs: dict):
    """``cls(**kwargs)`` with unknown keys reported as ConfigError naming ``policy.<kind>.<key>``."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in kwargs:
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            raise ConfigError(f"policy.{cls.kind}.{key}: unknown key; expected keys: "
                              f"{', '.join(names) or '(none)'}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return cls(**kwargs)
