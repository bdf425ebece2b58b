"""Channel and link models, one file per model, found by name in :data:`CHANNELS`.

>>> import numpy as np
>>> ch = make_channel("gilbert_elliott", loss=0.1, burst=4)
>>> state = ch.start(np.random.default_rng(7))
>>> lost, delivered = state.transmit([b"a", b"b", b"c"])

See :mod:`channels.base` for the interface and ``docs/channels.md`` for the models,
their YAML keys and closed forms.
"""

from __future__ import annotations

import difflib

from channels.awgn import AWGN
from channels.base import Channel, ChannelState, as_config, build, run_lengths
from channels.bernoulli import Bernoulli
from channels.bsc import BSC
from channels.gilbert_elliott import GilbertElliott
from channels.link import Link, make_link
from channels.trace import Trace
from sim.errors import ConfigError

__all__ = [
    "CHANNELS", "make_channel", "make_link", "as_config", "run_lengths", "Channel", "ChannelState",
    "Bernoulli", "GilbertElliott", "Trace", "BSC", "AWGN", "Link",
]

CHANNELS: dict[str, type] = {
    cls.kind: cls for cls in (Bernoulli, GilbertElliott, Trace, BSC, AWGN)
}


def make_channel(kind: str, **kwargs) -> Channel:
    """The channel named ``kind`` built from the scenario's ``channel:`` keys (less ``kind``).

    Raises
    ------
    ConfigError
        Unknown kind (listing the known ones, with a did-you-mean), unknown or missing
        keys, or a value out of range.
    """
    cls = CHANNELS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        hint = difflib.get_close_matches(str(kind), CHANNELS, n=1)
        raise ConfigError(f"channel.kind = {kind!r}: expected one of {', '.join(CHANNELS)}"
                          + (f" (did you mean {hint[0]!r}?)" if hint else ""))
    return build(cls, "channel", kwargs)
