"""Sweep and search specs: a TOML file, validated whole before any work starts.

A spec names the generator (the ``lane`` unit, :func:`attnforge.sweep.lanepoint.lane_record`),
narrows its parameters and lists the run-time knobs and the workload::

    name = "lane"                    # output folder build/sweeps/<name>/
    seed = 1                         # RTL-check sample, search seeds

    [generator]                      # unit = "lane"; each parameter: a list of values,
    unit = "lane"                    # one value, or "all" (its legal domain, from the record,
    rows = [4, 8]                    # given the parameters declared before it); unlisted
    d = 32                           # parameters stay at their defaults
    max_t = 64

    [runtime]                        # the lane's run-time knobs (:data:`RUNTIME`)
    sparsity = ["dense", 0.5, 0.75]
    block = [8, 16]

    [workload]                       # real heads (golden/fixtures): fixtures, layers, T
    fixtures = ["long_printing"]
    layers = [2]
    seq_len = 64

    [rtl_check]                      # model vs RTL on a sample of points (sweep only)
    sample = 2
    cycle_ratio = [1.0, 1.0]         # RTL cycles / model cycles must lie in this band
                                     # (default: equal; the model is the RTL's schedule)

    [search]                         # `attnforge search` only (attnforge.sweep.search)
    ...

Every error is one line naming the key and its legal values (:class:`SpecError`, a
``ValueError``; the CLI prints it and exits 2): an unknown section, unit or parameter, a value
outside its legal domain, an empty space, malformed TOML.
"""

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..paths import digest

__all__ = ["SpecError", "Knob", "RUNTIME", "Spec", "load_spec", "parse_spec", "parse_workload"]

SECTIONS = ("name", "seed", "generator", "runtime", "workload", "rtl_check", "area", "search")


class SpecError(ValueError):
    """A bad spec: one line naming the key and the legal values."""


@dataclass(frozen=True)
class Knob:
    """A run-time knob: its legal values in words and the check of one value."""
    legal: str
    ok: object

    def check(self, key, value):
        if not self.ok(value):
            raise SpecError(f"{key}: must be {self.legal}, not {value!r}")


def _num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


#: The lane's run-time knobs (docs/sweep.md). ``sparsity``: fraction of blocks pruned per block
#: row (top-k, ``golden.attention.keep_count``) or "dense" (dense mode, the baseline);
#: ``block``: BxB granularity; ``est_bits``: estimate precision; ``sigma``: projected dims / d;
#: ``int8_quantile``: HB-BSSA per-block precision bound, a kept block whose sum of squared
#: estimates is at or below this quantile of the head's kept-block norms runs at INT8 ("off":
#: every block at FX16).
RUNTIME = {
    "sparsity": Knob('"dense" or a number in [0, 1)',
                     lambda x: x == "dense" or (_num(x) and 0 <= x < 1)),
    "block": Knob("one of 8, 16, 32", lambda x: x in (8, 16, 32) and not isinstance(x, bool)),
    "est_bits": Knob("one of 2, 4, 8", lambda x: x in (2, 4, 8) and not isinstance(x, bool)),
    "sigma": Knob("a number in (0, 1]", lambda x: _num(x) and 0 < x <= 1),
    "int8_quantile": Knob('"off" or a number in [0, 1]',
                          lambda x: x == "off" or (_num(x) and 0 <= x <= 1)),
}
#: Knobs a dense point ignores.
SPARSE_ONLY = ("block", "est_bits", "sigma", "int8_quantile")
RUNTIME_DEFAULTS = {"sparsity": 0.75, "block": 8, "est_bits": 4, "sigma": 0.25,
                    "int8_quantile": "off"}

WORKLOAD = {"fixtures": None, "layers": None, "heads": None, "seq_len": None}
WORKLOAD_DEFAULTS = {"fixtures": ["long_printing"], "layers": [2], "heads": None, "seq_len": 64}
RTL_CHECK_DEFAULTS = {"sample": 2, "cycle_ratio": [1.0, 1.0]}
AREA_DEFAULTS = {"ecp5": False}


@dataclass
class Spec:
    """A validated spec: ``generators`` (list of full parameter dicts of ``unit``), ``runtime``
    (list of knob dicts), ``workload``, ``rtl_check``, ``area``, ``search`` (raw table)."""
    name: str
    seed: int
    unit: str
    generators: list
    runtime: list
    workload: dict
    rtl_check: dict
    area: dict
    search: dict = field(default_factory=dict)
    path: Path = None

    def points(self):
        """Every (generator, runtime) combination (dense once per generator) as a point dict with a stable ``id`` (a
        digest of its parameters: the same point has the same id in every sweep, which is what
        ``--resume`` matches on)."""
        out, first = [], self.runtime[0]
        for gen, run in itertools.product(self.generators, self.runtime):
            if run["sparsity"] == "dense" and any(run[k] != first[k] for k in SPARSE_ONLY):
                continue                      # dense ignores the sparse knobs: one point
            pid = digest(self.unit, gen, run, self.workload)
            out.append({"id": pid, "unit": self.unit, "gen": gen, "run": run,
                        "seed": self.seed})
        return out


def load_spec(path):
    """Read and validate the spec at ``path`` (:func:`parse_spec`)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"spec: cannot read {path}: {exc.strerror}") from None
    spec = parse_spec(text, default_name=path.stem)
    spec.path = path
    return spec


def _as_list(key, value):
    vals = value if isinstance(value, list) else [value]
    if not vals:
        raise SpecError(f"{key}: empty list (an empty space); give at least one value")
    return vals


def _known(section, table, legal):
    for key in table:
        if key not in legal:
            raise SpecError(f"{section}.{key}: unknown key (legal: {', '.join(legal)})"
                            if section else
                            f"{key}: unknown key (legal: {', '.join(legal)})")


def parse_spec(text, default_name="sweep"):
    """Validate spec ``text`` (TOML) and return a :class:`Spec`; raises :class:`SpecError`."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"spec: malformed TOML: {exc}") from None
    _known("", raw, SECTIONS)
    name = raw.get("name", default_name)
    if not isinstance(name, str) or not name or "/" in name:
        raise SpecError(f"name: must be a non-empty string without '/', not {name!r}")
    seed = raw.get("seed", 1)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise SpecError(f"seed: must be an integer, not {seed!r}")
    unit, generators = _generators(raw.get("generator", {}))
    runtime = _runtime(raw.get("runtime", {}))
    workload = parse_workload(raw.get("workload", {}))
    rtl = {**RTL_CHECK_DEFAULTS, **_table("rtl_check", raw, RTL_CHECK_DEFAULTS)}
    if not isinstance(rtl["sample"], int) or rtl["sample"] < 0:
        raise SpecError(f"rtl_check.sample: must be an integer >= 0, not {rtl['sample']!r}")
    band = rtl["cycle_ratio"]
    if not (isinstance(band, list) and len(band) == 2 and all(map(_num, band))
            and 0 < band[0] <= band[1]):
        raise SpecError(f"rtl_check.cycle_ratio: must be [lo, hi] with 0 < lo <= hi, "
                        f"not {band!r}")
    area = {**AREA_DEFAULTS, **_table("area", raw, AREA_DEFAULTS)}
    if not isinstance(area["ecp5"], bool):
        raise SpecError(f"area.ecp5: must be true or false, not {area['ecp5']!r}")
    search = raw.get("search", {})
    if not isinstance(search, dict):
        raise SpecError("search: must be a table")
    return Spec(name, seed, unit, generators, runtime, workload, rtl, area, search)


def _table(section, raw, legal):
    table = raw.get(section, {})
    if not isinstance(table, dict):
        raise SpecError(f"{section}: must be a table")
    _known(section, table, legal)
    return table


def _generators(table):
    """Every legal combination of the unit's parameters, enumerated in the record's declaration
    order (a domain may depend on parameters declared before it)."""
    from .lanepoint import lane_record
    if not isinstance(table, dict):
        raise SpecError("generator: must be a table")
    table = dict(table)
    name = table.pop("unit", "lane")
    if name != "lane":
        raise SpecError(f"generator.unit: must be 'lane' (the unit whose cycle and accuracy "
                        f"models the sweep runs), not {name!r}")
    record = lane_record()
    legal = list(record.defaults)
    _known("generator", table, ["unit", *legal])
    combos = [{}]
    for p in record.params:
        nxt = []
        for partial in combos:
            fixed = {**record.defaults, **partial}
            key = f"generator.{p.name}"
            if p.name not in table:
                values = [record.defaults[p.name]]
            elif table[p.name] == "all":
                try:
                    values = list(record.legal_values(p.name, **partial))
                except ValueError as exc:
                    raise SpecError(f"{key}: {exc}") from None
            else:
                values = _as_list(key, table[p.name])
            for v in values:
                try:
                    p.domain.check(p.name, v, {**fixed, p.name: v})
                except ValueError as exc:
                    raise SpecError(f"{key}: {exc} (legal: {p.domain.text()})") from None
                nxt.append({**partial, p.name: v})
        combos = nxt
        if not combos:
            raise SpecError(f"generator.{p.name}: no legal value (an empty space)")
    return record.name, combos


def _runtime(table):
    if not isinstance(table, dict):
        raise SpecError("runtime: must be a table")
    _known("runtime", table, list(RUNTIME))
    lists = {}
    for key, knob in RUNTIME.items():
        vals = _as_list(f"runtime.{key}", table.get(key, RUNTIME_DEFAULTS[key]))
        for v in vals:
            knob.check(f"runtime.{key}", v)
        lists[key] = vals
    return [dict(zip(lists, combo)) for combo in itertools.product(*lists.values())]


def parse_workload(table):
    """The ``[workload]`` table checked and completed with the defaults."""
    from ..golden import minilm
    if not isinstance(table, dict):
        raise SpecError("workload: must be a table")
    _known("workload", table, list(WORKLOAD))
    w = {**WORKLOAD_DEFAULTS, **table}
    names = minilm.fixture_names()
    evaluation = [n for n in names if n not in minilm.CALIBRATION]
    for f in _as_list("workload.fixtures", w["fixtures"]):
        if f not in evaluation:
            raise SpecError(f"workload.fixtures: must be among {', '.join(evaluation)} "
                            f"(the calibration fixtures are excluded), not {f!r}")
    w["fixtures"] = _as_list("workload.fixtures", w["fixtures"])
    w["layers"] = _as_list("workload.layers", w["layers"])
    for layer in w["layers"]:
        if layer not in range(minilm.LAYERS) or isinstance(layer, bool):
            raise SpecError(f"workload.layers: must be in [0, {minilm.LAYERS - 1}], "
                            f"not {layer!r}")
    if w["heads"] is not None:
        w["heads"] = _as_list("workload.heads", w["heads"])
        for h in w["heads"]:
            if h not in minilm.FIXTURE_HEADS:
                raise SpecError(f"workload.heads: must be among "
                                f"{', '.join(map(str, minilm.FIXTURE_HEADS))}, not {h!r}")
    t = w["seq_len"]
    if not isinstance(t, int) or isinstance(t, bool) or not 8 <= t <= 256:
        raise SpecError(f"workload.seq_len: must be an integer in [8, 256] (the first T tokens "
                        f"of each fixture head), not {t!r}")
    return w
