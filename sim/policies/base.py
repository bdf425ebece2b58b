"""What a receiver policy sees and does, and the checks every policy shares.

The engine consults a policy at each *decision point*: the moment the receiver has
detected that a transmission pass is over (all its packets arrived, the pass's last packet
arrived after a gap, or the loss timer fired) with data cells still missing. The policy
answers one question — resend the missing data packets now (True), or decode with what
has arrived (False) — and names the complement method that repairs the missing cells
(:meth:`Policy.repairer`). The repair stage groups the transmissions that need a repair
(:func:`needs_repair`) and calls the method's ``batch`` on them; :meth:`Policy.repair` is the
same for one latent.

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

from sim.complement.method import ComplementMethod
from sim.errors import ConfigError

__all__ = ["Decision", "Policy", "Repairing", "build_policy", "check_int", "check_seconds", "check_choice",
           "check_share", "check_method", "needs_repair", "apply_method"]


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
    complements: ClassVar[bool]

    @property
    def cutoff_s(self) -> float | None:
        """Hard deadline, simulated seconds since the first bit: decode then at the latest."""
        ...

    def decide(self, d: Decision) -> bool:
        """True: NACK the missing data packets now; False: decode with what has arrived."""
        ...

    def repairer(self, method: ComplementMethod | None = None) -> ComplementMethod:
        """The method that repairs this policy's missing cells.

        ``method`` is the policy's complement method built once per run
        (``sim.complement.make_method(policy.method, codec, ...)``); policies without a
        ``method`` ignore it, the others fall back to the registry's when it is None.
        """
        ...

    def repair(self, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator,
               method: ComplementMethod | None = None, noise_std: float = 0.0) -> tuple[np.ndarray, bool]:
        """(latent (C, h, w) float32 with missing cells filled, complemented?): :func:`apply_method`
        with :meth:`repairer`; complemented only where the policy :attr:`complements`."""
        ...


class Repairing:
    """:meth:`Policy.repair` from the policy's :meth:`~Policy.repairer`, shared by every policy.

    ``complements`` (class attribute): whether a repair counts as complemented in the records
    (False for ``resend`` and ``none``, whose fills are the absence of a complement).
    """

    complements: ClassVar[bool] = True

    def repair(self, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator,
               method: ComplementMethod | None = None, noise_std: float = 0.0) -> tuple[np.ndarray, bool]:
        out, repaired = apply_method(self.repairer(method), latent, missing, rng, noise_std)
        return out, repaired and self.complements


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


def needs_repair(method: ComplementMethod, missing: np.ndarray) -> bool:
    """Whether ``method`` runs on a latent with ``missing`` (h, w) cells: when cells are missing,
    or always where it alters known cells (the denoising step repairs every cell)."""
    return bool(np.asarray(missing).any()) or method.alters_known


def apply_method(method: ComplementMethod, latent: np.ndarray, missing: np.ndarray, rng: np.random.Generator,
                 noise_std: float = 0.0) -> tuple[np.ndarray, bool]:
    """``(method(latent, missing, rng, noise_std), True)`` where :func:`needs_repair`; ``(latent, False)``
    otherwise."""
    if not needs_repair(method, missing):
        return np.asarray(latent, dtype=np.float32), False
    return method(latent, missing, rng, noise_std), True


def build_policy(cls, kwargs: dict):
    """``cls(**kwargs)`` with unknown keys reported as ConfigError naming ``policy.<kind>.<key>``."""
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in kwargs:
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            raise ConfigError(f"policy.{cls.kind}.{key}: unknown key; expected keys: "
                              f"{', '.join(names) or '(none)'}" + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return cls(**kwargs)
