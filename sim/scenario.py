"""Scenario model: a YAML file → one frozen, validated :class:`Scenario`.

Every section's keys are the keyword arguments of the object it builds (``link:`` →
:class:`channels.link.Link`, ``channel:`` → ``channels.make_channel(kind, ...)``,
``packetizer:`` → :class:`sim.packets.PacketizerConfig`, ``receiver:`` →
:class:`sim.engine.ReceiverConfig`, each ``policies:`` item → ``sim.policies.make_policy``,
``codec.quantizer`` → ``sim.codec.quantizers.make_quantizer``), and those objects validate
their own values; this module adds the sections it owns (``images``, ``codec``, ``sweep``,
``repeats``, ...), checks for unknown keys (with a did-you-mean), resolves relative paths
against the YAML file's folder and collects **every** problem before failing with a
:class:`ScenarioError` (one line per problem: ``file: field.path = value: what is allowed``).

``sweep:`` maps dotted field paths to lists of values; the sweep points are the cartesian
product of the lists in the order the keys are written, the **last key varying fastest**
(like nested loops, or ``itertools.product``). Each point is validated as a complete
scenario. See ``docs/scenario.md`` for every field.

Reading the YAML and applying ``--set`` overrides live in :mod:`sim.scenario_yaml`, the
checking machinery the section parsers share in :mod:`sim.scenario_checks`; this module
re-exports their public names (:func:`read_yaml`, :func:`apply_overrides`,
:class:`ScenarioError`, ...).

>>> sc = load_scenario("scenarios/quickstart.yaml", overrides=["repeats=1"])   # doctest: +SKIP
>>> [p.values for p in sc.points]                                              # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sim.errors import ConfigError, LatentcastError
from sim.scenario_checks import (ScenarioError, _build, _Checker, _defaults, _hint, _is_int,
                                 _resolve_path, _show)
from sim.scenario_yaml import (SECTIONS, _pop_dotted, apply_overrides, parse_yaml_value, read_yaml,
                               set_dotted)

__all__ = [
    "Scenario", "ImagesConfig", "CodecConfig", "PolicyConfig", "Point", "ScenarioError",
    "load_scenario", "parse_scenario", "read_yaml", "apply_overrides", "parse_yaml_value",
    "set_dotted", "SECTIONS", "SWEEPABLE",
]

SWEEPABLE = ("images", "codec", "packetizer", "link", "channel", "receiver", "policies")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CODEC_KEYS = ("model", "weights", "quantizer", "entropy", "device", "dtype")
_IMAGES_KEYS = ("source", "names", "size")


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class ImagesConfig:
    """Which images to send. ``source`` is ``"samples"`` or a folder (absolute once resolved)."""

    source: str = "samples"
    names: tuple[str, ...] | None = None
    size: int = 256

    def items(self) -> list[tuple[str, Path | None]]:
        """``[(name, file or None for a sample)]`` in sending order (samples: ``names``; folder: sorted)."""
        if self.source == "samples":
            return [(n, None) for n in self.names]
        from sim.images import list_images

        return [(p.name, p) for p in list_images(self.source)]


@dataclass(frozen=True)
class CodecConfig:
    """Arguments of :func:`sim.codec.load_codec`; ``quantizer`` is a mapping with ``kind``."""

    model: str = "tiny"
    weights: str | None = None
    quantizer: tuple[tuple[str, Any], ...] = (("kind", "uniform"), ("bits", 6))
    entropy: str = "range"
    device: str = "cpu"
    dtype: str = "float32"

    def quantizer_dict(self) -> dict:
        return {k: _thaw(v) for k, v in self.quantizer}

    def load_kwargs(self) -> dict:
        """Keyword arguments for :func:`sim.codec.load_codec`."""
        return {"model": self.model, "quantizer": self.quantizer_dict(), "entropy": self.entropy,
                "weights": self.weights, "device": self.device, "dtype": self.dtype}


@dataclass(frozen=True)
class PolicyConfig:
    """One entry of ``policies``: a display ``name`` (unique), the registry ``kind`` and the policy."""

    name: str
    kind: str
    policy: Any

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, **_fields(self.policy, skip=("kind", "name"))}


@dataclass(frozen=True)
class Point:
    """One sweep point: its index, the swept values and the complete scenario there."""

    index: int
    values: tuple[tuple[str, Any], ...]
    scenario: "Scenario"

    def values_dict(self) -> dict:
        return {k: _thaw(v) for k, v in self.values}


@dataclass(frozen=True)
class Scenario:
    """A validated scenario. Sections hold the objects their YAML keys build.

    When the scenario has a ``sweep``, the sections hold the values of sweep point 0 and
    :attr:`points` holds every point's complete scenario (with an empty sweep).
    """

    name: str
    seed: int
    images: ImagesConfig
    codec: CodecConfig
    packetizer: Any
    link: Any
    channel: Any
    receiver: Any
    policies: tuple[PolicyConfig, ...]
    sweep: tuple[tuple[str, tuple], ...] = ()
    repeats: int = 1
    out: str = ""
    source: str = field(default="<scenario>", compare=False, repr=False)
    points: tuple[Point, ...] = field(default=(), compare=False, repr=False)

    @property
    def sweep_keys(self) -> list[str]:
        return [k for k, _ in self.sweep]

    def to_dict(self) -> dict:
        """Plain data that :func:`parse_scenario` turns back into an equal scenario."""
        from channels import as_config

        d = {
            "name": self.name,
            "seed": self.seed,
            "images": {"source": self.images.source,
                       **({"names": list(self.images.names)} if self.images.names is not None else {}),
                       "size": self.images.size},
            "codec": {"model": self.codec.model, "weights": self.codec.weights,
                      "quantizer": self.codec.quantizer_dict(), "entropy": self.codec.entropy,
                      "device": self.codec.device, "dtype": self.codec.dtype},
            "packetizer": _fields(self.packetizer),
            "link": as_config(self.link),
            "channel": as_config(self.channel),
            "receiver": _fields(self.receiver),
            "policies": [p.to_dict() for p in self.policies],
            "sweep": {k: [_thaw(v) for v in vals] for k, vals in self.sweep},
            "repeats": self.repeats,
            "out": self.out,
        }
        for key in self.sweep_keys:  # the sweep supplies these
            _pop_dotted(d, key)
        return d

    def to_yaml(self) -> str:
        """:meth:`to_dict` as YAML (block style, sections in their documented order)."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None,
                              allow_unicode=True, width=100)


def _thaw(v):
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    if isinstance(v, dict):
        return {k: _thaw(x) for k, x in v.items()}
    return v


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _fields(obj, skip=()) -> dict:
    """A dataclass instance's init fields as a YAML mapping (paths as str)."""
    if not dataclasses.is_dataclass(obj):
        return {}
    out = {}
    for f in dataclasses.fields(obj):
        if f.init and f.name not in skip and not f.name.startswith("_"):
            value = getattr(obj, f.name)
            out[f.name] = _thaw(value) if not isinstance(value, Path) else str(value)
    return out


# ------------------------------------------------------------------------------ parsing


def _parse_images(chk: _Checker, raw, base: Path) -> ImagesConfig | None:
    from sim.images import SAMPLE_NAMES, list_images

    d = chk.mapping("images", raw)
    if d is None or not chk.keys("images", d, _IMAGES_KEYS):
        return None
    ok = True
    source = d.get("source", "samples")
    names = d.get("names")
    size = d.get("size", 256)
    if not isinstance(source, str) or not source:
        chk.bad("images.source", source, "expected 'samples' or a folder of images (relative to the scenario file)")
        ok = False
    elif source != "samples":
        folder = _resolve_path(base, source)
        try:
            list_images(folder)
        except LatentcastError as err:
            chk.line(f"images.source = {source!r}: {err}")
            ok = False
        source = folder
        if names is not None:
            chk.bad("images.names", names, "only with images.source: samples (a folder sends all its images)")
            ok = False
    if source == "samples":
        if names is None:
            names = list(SAMPLE_NAMES)
        if not isinstance(names, list) or not names:
            chk.bad("images.names", names, f"expected a non-empty list of sample names from: {', '.join(SAMPLE_NAMES)}")
            ok = False
        else:
            for i, n in enumerate(names):
                if n not in SAMPLE_NAMES:
                    chk.bad(f"images.names[{i}]", n,
                            f"expected one of {', '.join(SAMPLE_NAMES)}{_hint(n, SAMPLE_NAMES)}")
                    ok = False
            dup = sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})
            if dup:
                chk.bad("images.names", names, f"each image once; repeated: {', '.join(dup)}")
                ok = False
    if not _is_int(size) or size < 16 or size > 8192 or size % 8:
        chk.bad("images.size", size, "expected an integer multiple of 8 in [16, 8192] (pixels)")
        ok = False
    if not ok:
        return None
    return ImagesConfig(source, tuple(names) if source == "samples" else None, size)


def _parse_codec(chk: _Checker, raw, base: Path) -> CodecConfig | None:
    from sim.codec import CODEC_MODELS, DTYPES, check_dtype
    from sim.codec.entropy import make_entropy_coder
    from sim.codec.quantizers import QUANTIZERS, make_quantizer

    d = chk.mapping("codec", raw)
    if d is None or not chk.keys("codec", d, _CODEC_KEYS):
        return None
    ok = True
    model = d.get("model", "tiny")
    weights = d.get("weights")
    entropy = d.get("entropy", "range")
    device = d.get("device", "cpu")
    if model not in CODEC_MODELS:
        chk.bad("codec.model", model, f"expected one of {', '.join(CODEC_MODELS)}{_hint(model, CODEC_MODELS)}")
        ok = False
    if weights is not None:
        if not isinstance(weights, str) or not weights:
            chk.bad("codec.weights", weights,
                    "expected a weights file/folder (relative to the scenario file) or a hub id")
            ok = False
        else:
            local = Path(_resolve_path(base, weights))
            if local.exists():
                weights = str(local)
            elif model == "tiny":
                chk.bad("codec.weights", weights, f"file not found (looked for {local})")
                ok = False
            # sd-vae / taesd: a hub id, loaded only when the run starts
    elif model in ("sd-vae", "taesd"):
        chk.bad("codec.weights", weights, f"codec.model {model!r} needs weights: a local folder or a hub id")
        ok = False
    if not isinstance(device, str) or not re.match(r"^(cpu|cuda(:\d+)?|mps)$", device):
        chk.bad("codec.device", device, "expected cpu, cuda, cuda:N or mps")
        ok = False
    dtype = d.get("dtype", "float32")
    problem = check_dtype(model, device, dtype) if isinstance(dtype, str) else f"expected one of {', '.join(DTYPES)}"
    if problem:
        chk.bad("codec.dtype", dtype, problem)
        ok = False
    q = chk.mapping("codec.quantizer", d.get("quantizer", {"kind": "uniform", "bits": 6}))
    if q is None:
        ok = False
    else:
        q = dict(q)
        kind = q.pop("kind", "uniform")
        if kind not in QUANTIZERS:
            chk.bad("codec.quantizer.kind", kind, f"expected one of {', '.join(QUANTIZERS)}{_hint(kind, QUANTIZERS)}")
            ok = False
        else:
            built = _build(chk, "codec.quantizer", QUANTIZERS[kind], q,
                           factory=lambda **kw: make_quantizer(kind, **kw))
            if built is None:
                ok = False
            else:  # resolved: the kind's declared defaults, then what the file gives
                q = {"kind": kind, **_defaults(QUANTIZERS[kind]), **q}
    try:
        make_entropy_coder(entropy)
    except (LatentcastError, ValueError, TypeError) as err:
        chk.foreign("codec.entropy", err, ())
        ok = False
    if not ok:
        return None
    return CodecConfig(model, weights, tuple((k, _freeze(v)) for k, v in q.items()), entropy, device, dtype)


def _parse_channel(chk: _Checker, raw, base: Path):
    from channels import CHANNELS, make_channel

    d = chk.mapping("channel", raw)
    if d is None:
        return None
    if "kind" not in d:
        chk.line(f"channel.kind: missing (required); expected one of {', '.join(CHANNELS)}")
        return None
    params = {k: v for k, v in d.items() if k != "kind"}
    kind = d["kind"]
    if kind not in CHANNELS:
        chk.bad("channel.kind", kind, f"expected one of {', '.join(CHANNELS)}{_hint(kind, CHANNELS)}")
        return None
    if isinstance(params.get("path"), str) and params["path"]:
        params["path"] = _resolve_path(base, params["path"])
    return _build(chk, "channel", CHANNELS[kind], params, factory=lambda **kw: make_channel(kind, **kw))


_OPTION_PATHS = ("weights", "een")            # method_options keys that name local files / folders
_SD15_PATHS = ("unet", "inpaint", "canny", "empty_prompt", "een")


def _resolve_method_paths(base: Path, options):
    """``method_options`` with local paths made absolute (relative to the scenario file).

    ``weights`` (unless ``tiny`` / ``sd15``) and ``een`` always; the ``sd15`` entries only when
    the resolved path exists (otherwise they are hub ids), as ``codec.weights``.
    """
    if not isinstance(options, dict):
        return options
    out = dict(options)
    for key in _OPTION_PATHS:
        value = out.get(key)
        if isinstance(value, str) and value and not (key == "weights" and value in ("tiny", "sd15")):
            out[key] = _resolve_path(base, value)
    sd15 = out.get("sd15")
    if isinstance(sd15, dict):
        sd15 = dict(sd15)
        for key in _SD15_PATHS:
            value = sd15.get(key)
            if isinstance(value, str) and value and Path(_resolve_path(base, value)).exists():
                sd15[key] = _resolve_path(base, value)
        out["sd15"] = sd15
    return out


def _parse_policies(chk: _Checker, raw, base: Path = Path(".")) -> tuple[PolicyConfig, ...] | None:
    from sim.policies import POLICIES, make_policy

    if raw is None:
        chk.line(f"policies: missing (required); expected a list of policies, e.g. "
                 f"[resend, complement, none] (kinds: {', '.join(POLICIES)})")
        return None
    if isinstance(raw, (str, dict)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        chk.bad("policies", raw, f"expected a non-empty list of policies (kinds: {', '.join(POLICIES)})")
        return None
    out, ok = [], True
    for i, item in enumerate(raw):
        path = f"policies[{i}]"
        if isinstance(item, str):
            item = {"kind": item}
        if not isinstance(item, dict):
            chk.bad(path, item, "expected a policy kind (resend) or a mapping with kind and options")
            ok = False
            continue
        params = {k: v for k, v in item.items() if k not in ("kind", "name")}
        if "method_options" in params:
            params["method_options"] = _resolve_method_paths(base, params["method_options"])
        kind = item.get("kind")
        if kind is None:
            chk.line(f"{path}.kind: missing (required); expected one of {', '.join(POLICIES)}")
            ok = False
            continue
        if kind not in POLICIES:
            chk.bad(f"{path}.kind", kind, f"expected one of {', '.join(POLICIES)}{_hint(kind, POLICIES)}")
            ok = False
            continue
        name = item.get("name", kind)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            chk.bad(f"{path}.name", name, "expected a name of letters, digits, '.', '_' or '-'")
            ok = False
            continue
        policy = _build(chk, path, POLICIES[kind], params, factory=lambda _k=kind, **kw: make_policy(_k, **kw))
        if policy is None:
            ok = False
            continue
        if any(p.name == name for p in out):
            chk.bad(f"{path}.name", name, "policy names must be unique; give this variant its own "
                                          "name, e.g. {name: resend-2, kind: resend, max_rounds: 2}")
            ok = False
            continue
        out.append(PolicyConfig(name, kind, policy))
    return tuple(out) if ok else None


def _parse_point(chk: _Checker, raw: dict, base: Path, default_name: str) -> dict | None:
    """Every section of one concrete scenario (no sweep) as constructor results, or None."""
    from channels.link import Link, make_link
    from sim.engine import ReceiverConfig
    from sim.packets import MIN_PACKET_BYTES, PacketizerConfig

    chk.keys("", raw, SECTIONS)
    sec: dict[str, Any] = {}
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not _NAME_RE.match(name):
        chk.bad("name", name, "expected a name of letters, digits, '.', '_' or '-' (it names the output folder)")
    sec["name"] = name
    seed = raw.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        chk.bad("seed", seed, "expected an integer ≥ 0")
    sec["seed"] = seed
    repeats = raw.get("repeats", 1)
    if not _is_int(repeats) or repeats < 1:
        chk.bad("repeats", repeats, "expected an integer ≥ 1")
    sec["repeats"] = repeats
    out = raw.get("out")
    if out is None:
        out = f"out/{name}"
    elif not isinstance(out, str) or not out:
        chk.bad("out", out, "expected an output folder path (relative to the current directory)")
    sec["out"] = out
    sec["images"] = _parse_images(chk, raw.get("images"), base)
    sec["codec"] = _parse_codec(chk, raw.get("codec"), base)
    pk = chk.mapping("packetizer", raw.get("packetizer"))
    if pk is not None and "mtu" in pk:  # older scenarios had a second MTU here
        chk.line("packetizer.mtu: no longer a packetizer key; the link's MTU is the only MTU: set link.mtu "
                 "(bytes on the wire per packet, link.header_bytes of IP/UDP included; a packet carries at "
                 "most link.mtu − link.header_bytes bytes)")
        pk = {k: v for k, v in pk.items() if k != "mtu"}
    sec["packetizer"] = None if pk is None else _build(chk, "packetizer", PacketizerConfig, pk)
    lk = chk.mapping("link", raw.get("link"))
    if lk is not None and "link" not in raw:
        chk.line("link: missing (required); expected at least {rate_bps: ..., delay_s: ...}")
        lk = None
    sec["link"] = None if lk is None else _build(chk, "link", Link, lk, factory=make_link)
    if sec["link"] is not None and not MIN_PACKET_BYTES <= sec["link"].max_payload <= 0xFFFF:
        chk.line(f"link.mtu = {sec['link'].mtu} with link.header_bytes = {sec['link'].header_bytes} leaves "
                 f"{sec['link'].max_payload} bytes per packet; the packetizer needs {MIN_PACKET_BYTES} to 65535 "
                 f"(its 19-byte header, a 14-byte geometry record and at least 1 byte)")
    if "channel" not in raw:
        chk.line("channel: missing (required); expected e.g. {kind: bernoulli, loss: 0.05}")
        sec["channel"] = None
    else:
        sec["channel"] = _parse_channel(chk, raw["channel"], base)
    rc = chk.mapping("receiver", raw.get("receiver"))
    sec["receiver"] = None if rc is None else _build(chk, "receiver", ReceiverConfig, rc)
    sec["policies"] = _parse_policies(chk, raw.get("policies"), base)
    return sec


def _parse_sweep(chk: _Checker, raw) -> list[tuple[str, list]]:
    """The well-formed sweep entries; problems with the others are reported."""
    d = chk.mapping("sweep", raw)
    if d is None:
        return []
    out = []
    for key, values in d.items():
        path = f"sweep.{key}"
        head = str(key).split(".")[0]
        if not isinstance(key, str) or head not in SWEEPABLE or not all(str(key).split(".")):
            hint = _hint(head, SWEEPABLE) if head not in SECTIONS else ""
            chk.line(f"{path}: cannot sweep {key!r}{hint}; expected a dotted field path in "
                     f"{', '.join(SWEEPABLE)} (e.g. channel.loss, policies.0.max_rounds); "
                     f"use repeats for seeds")
            continue
        if not isinstance(values, list) or not values:
            chk.bad(path, values, "expected a non-empty list of values")
            continue
        out.append((key, values))
    return out


_REQUIRED = ("images", "codec", "packetizer", "link", "channel", "receiver", "policies")


def parse_scenario(raw: dict, source: str = "<scenario>", base_dir: str | Path = ".",
                   default_name: str = "scenario") -> Scenario:
    """Validate a scenario mapping (as read from YAML) and build the :class:`Scenario`.

    Parameters
    ----------
    raw : dict
        The YAML mapping (overrides already applied).
    source : str
        File name used at the start of every error line.
    base_dir : path
        Folder that relative input paths (``images.source``, ``channel.path``,
        ``codec.weights``) are resolved against: the scenario file's folder.
    default_name : str
        ``name`` when the mapping has none (the file's stem).

    Raises
    ------
    ScenarioError
        Listing every problem found, one per line.
    """
    base = Path(base_dir).resolve()
    chk = _Checker(source)
    if not isinstance(raw, dict):
        raise ScenarioError([f"{source}: expected a mapping of sections at the top level"])
    sweep = _parse_sweep(chk, raw.get("sweep"))  # bad entries reported and left out
    combos = list(itertools.product(*[vals for _, vals in sweep])) if sweep else [()]
    point_secs, point_errors = [], []
    for combo in combos:
        pc = _Checker(source)
        r = copy.deepcopy(raw)
        r.pop("sweep", None)
        try:
            for (key, _), value in zip(sweep, combo):
                set_dotted(r, key, copy.deepcopy(value))
        except ConfigError as err:
            pc.line(f"sweep.{err}")
            point_secs.append(None)
            point_errors.append(pc.errors)
            continue
        point_secs.append(_parse_point(pc, r, base, default_name))
        point_errors.append(pc.errors)
    common = set(point_errors[0]).intersection(*map(set, point_errors[1:])) if point_errors else set()
    seen = set()
    for i, (errs, combo) in enumerate(zip(point_errors, combos)):
        for e in errs:
            if e in seen:
                continue
            seen.add(e)
            if e in common or not sweep:
                chk.errors.append(e)
            else:
                at = ", ".join(f"{k}={_show(v)}" for (k, _), v in zip(sweep, combo))
                chk.errors.append(f"{e} (at sweep point {i}: {at})")
    if chk.errors:
        raise ScenarioError(chk.errors)

    def make(sec: dict, sw) -> Scenario:
        return Scenario(name=sec["name"], seed=sec["seed"], images=sec["images"], codec=sec["codec"],
                        packetizer=sec["packetizer"], link=sec["link"], channel=sec["channel"],
                        receiver=sec["receiver"], policies=sec["policies"], sweep=sw,
                        repeats=sec["repeats"], out=sec["out"], source=source)

    sweep_frozen = tuple((k, tuple(_freeze(v) for v in vals)) for k, vals in sweep)
    points = tuple(Point(i, tuple((k, _freeze(v)) for (k, _), v in zip(sweep, combo)), make(sec, ()))
                   for i, (sec, combo) in enumerate(zip(point_secs, combos)))
    top = make(point_secs[0], sweep_frozen)
    return dataclasses.replace(top, points=points)


def load_scenario(path: str | Path, overrides=(), seed: int | None = None) -> Scenario:
    """Read, override and validate a scenario file.

    Parameters
    ----------
    path : path
        The YAML file.
    overrides : list of str
        ``KEY=VALUE`` items (``--set``), applied in order; see :func:`apply_overrides`.
    seed : int, optional
        Replaces the scenario's ``seed`` (``--seed``).

    Raises
    ------
    ScenarioError
        Unreadable or malformed file, or every validation problem, one line each.
    """
    path = Path(path)
    raw = read_yaml(path)
    try:
        raw = apply_overrides(raw, overrides, seed)
    except ScenarioError as err:
        raise ScenarioError([f"{path}: {e}" for e in err.errors]) from None
    return parse_scenario(raw, source=str(path), base_dir=path.parent, default_name=path.stem)
