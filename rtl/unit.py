"""The unit record: everything the project knows about a generator, declared once.

A :class:`Unit` names a generator class and declares, beside it, every fact the tools need:

* its parameters (:class:`Param`), each with a **legal domain** (:class:`Range`,
  :class:`Choice`, :class:`Widths`), which may depend on parameters declared before it
  (``Range(Ref("per_beat"), 4096, multiple_of="per_beat")``); the *defaults* are the keyword-only
  defaults of the class constructor, so they are written once, in the signature;
* its testbench module and the parameter points of its cocotb regression (:class:`SimPoint`);
* its synthesis options (:class:`Synth`: hierarchical or flat, fits the ECP5 or why not);
* its formal proofs (:class:`Formal`: stream-protocol mode, depths, cover depth).

Constructors validate through the record (:meth:`Unit.validate`), so the check that raises a
``ValueError`` and the text ``attnforge units`` prints come from the same declaration; the CLI,
the runner, synthesis, formal and the benchmarks look units up in
:data:`attnforge.rtl.UNITS`; a sweep asks :meth:`Unit.legal_values` for a parameter's values::

    >>> UNITS["softmax"].legal_values("max_len", per_beat=4)[:3]
    [4, 8, 12]
"""

import inspect
from dataclasses import dataclass, field
from typing import Callable

__all__ = ["Ref", "Range", "Choice", "Widths", "Param", "SimPoint", "Synth", "Formal", "Unit"]


@dataclass(frozen=True)
class Ref:
    """A bound computed from other parameters: ``Ref("per_beat")`` is that parameter's value;
    ``Ref("2 * per_beat", lambda p: 2 * p["per_beat"])`` any expression of them (the text is
    what the error message and ``attnforge units`` show)."""
    text: str
    fn: Callable = None

    def __call__(self, params):
        return self.fn(params) if self.fn else params[self.text]


def _bound(b, params):
    return b(params) if isinstance(b, Ref) else b


def _btext(b, params=None):
    if isinstance(b, Ref):
        return b.text if params is None else f"{b.text} = {b(params)}" if b.fn else b.text
    return str(b)


@dataclass(frozen=True)
class Range:
    """An integer in ``[lo, hi]`` (each an int or a :class:`Ref`), optionally a multiple of
    ``multiple_of`` (an int or the name of a parameter), a divisor of ``divides`` (a parameter
    name), or a power of two."""
    lo: object
    hi: object
    multiple_of: object = None
    divides: str = None
    pow2: bool = False

    def text(self):
        parts = [f"an integer in [{_btext(self.lo)}, {_btext(self.hi)}]"]
        if self.multiple_of is not None:
            parts.append(f"a multiple of {self.multiple_of}")
        if self.divides is not None:
            parts.append(f"a divisor of {self.divides}")
        if self.pow2:
            parts.append("a power of two")
        return ", ".join(parts)

    def check(self, name, value, params):
        lo, hi = _bound(self.lo, params), _bound(self.hi, params)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise ValueError(f"{name} must be an integer in [{lo}, {hi}], not {value!r}")
        if self.multiple_of is not None:
            step = params[self.multiple_of] if isinstance(self.multiple_of, str) \
                else self.multiple_of
            if value % step:
                what = f"{self.multiple_of} ({step})" if isinstance(self.multiple_of, str) \
                    else str(step)
                raise ValueError(f"{name} must be a multiple of {what}, not {value!r}")
        if self.divides is not None and params[self.divides] % value:
            raise ValueError(f"{name} must divide {self.divides} ({params[self.divides]}), "
                             f"not {value!r}")
        if self.pow2 and value & (value - 1):
            raise ValueError(f"{name} must be a power of two in [{lo}, {hi}], not {value!r}")

    def values(self, params):
        lo, hi = _bound(self.lo, params), _bound(self.hi, params)
        if self.pow2:
            return [v for v in (1 << i for i in range(max(hi, 1).bit_length())) if lo <= v <= hi
                    and self._ok(v, params)]
        step = 1
        if self.multiple_of is not None:
            step = params[self.multiple_of] if isinstance(self.multiple_of, str) \
                else self.multiple_of
            lo = -(-lo // step) * step
        vals = range(lo, hi + 1, step)
        if self.divides is not None:
            return [v for v in vals if self._ok(v, params)]
        return vals

    def _ok(self, v, params):
        try:
            self.check("x", v, params)
            return True
        except ValueError:
            return False


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of values."""
    choices: tuple

    def text(self):
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def check(self, name, value, params):
        if isinstance(value, bool) or value not in self.choices:
            legal = ", ".join(repr(c) for c in self.choices)
            raise ValueError(f"{name} must be one of {legal}, not {value!r}")

    def values(self, params):
        return list(self.choices)


@dataclass(frozen=True)
class Widths:
    """A tuple of ``1..max_len`` distinct integers, each in ``[lo, hi]``."""
    lo: int
    hi: int
    max_len: int = 8

    def text(self):
        return (f"a tuple of 1 to {self.max_len} distinct integers in "
                f"[{self.lo}, {self.hi}]")

    def check(self, name, value, params):
        if not isinstance(value, tuple) or not 1 <= len(value) <= self.max_len or \
                len(set(value)) != len(value) or \
                not all(isinstance(v, int) and self.lo <= v <= self.hi for v in value):
            raise ValueError(f"{name} must be {self.text()}, not {value!r}")

    def values(self, params):
        raise ValueError("a tuple-valued parameter has no enumerable domain")


@dataclass(frozen=True)
class Param:
    """One generator parameter: its name, legal domain and meaning (the default comes from
    the constructor signature)."""
    name: str
    domain: object
    doc: str = ""


@dataclass(frozen=True)
class SimPoint:
    """One parameter set of the cocotb regression (``testcases``: a subset, else all; ``long``:
    too long for ``make test``'s 15-minute budget on a fresh clone, run by ``make long`` and
    ``make sim``)."""
    params: dict = field(default_factory=dict)
    id: str = None
    testcases: tuple = None
    long: bool = False

    @property
    def label(self):
        return self.id or "-".join(f"{k}{v}" for k, v in self.params.items()) or "default"


@dataclass(frozen=True)
class Synth:
    """Synthesis options: ``hierarchical`` keeps the module hierarchy (``stat -top`` counts
    instances; for arrays of shared modules); ``ecp5`` is ``True`` or the reason the unit is
    not placed on the ECP5; ``boards``: where its bitstream was built and fits."""
    hierarchical: bool = False
    ecp5: object = True
    #: Boards (``attnforge board build`` names) on which this unit at its default parameters,
    #: behind the UART bridge, fits and meets the board clock (measured, docs/board.md);
    #: ``()``: none or not built yet.
    boards: tuple = ()


@dataclass(frozen=True)
class Formal:
    """Formal proofs of a unit at its default parameters: the stream protocol of every output
    (``mode`` prove/bmc, ``depth``) and a cover run of ``cover_depth`` showing a stalled output
    that is then taken is reachable (0: no cover)."""
    mode: str = "prove"
    depth: int = 2
    cover_depth: int = 0


@dataclass(frozen=True)
class Unit:
    """The record of one generator (see the module docstring)."""
    name: str
    cls: type
    summary: str
    params: tuple
    sim: tuple = (SimPoint(),)
    synth: Synth = Synth()
    formal: Formal = None
    testbench: str = None
    baseline_of: str = None

    def __post_init__(self):
        declared = [p.name for p in self.params]
        if sorted(declared) != sorted(self.defaults):
            raise TypeError(f"unit {self.name}: declared parameters {declared} differ from "
                            f"{self.cls.__name__}'s keyword-only parameters {list(self.defaults)}")
        if "record" not in vars(self.cls):
            self.cls.record = self       # the class validates through its own record

    # -- reading the record --------------------------------------------------------------
    @property
    def defaults(self):
        """``{name: default}`` in the record's order (the values from the constructor
        signature; parameters a domain depends on are declared before it)."""
        sig = inspect.signature(self.cls.__init__)
        found = {p.name: p.default for p in sig.parameters.values()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY}
        return {p.name: found[p.name] for p in self.params if p.name in found} | found

    @property
    def test_module(self):
        """The cocotb test module of this unit."""
        return self.testbench or f"attnforge.testbench.{self.name}"

    def param(self, name):
        for p in self.params:
            if p.name == name:
                return p
        raise ValueError(f"{self.name} has no parameter {name!r} "
                         f"(parameters: {', '.join(self.defaults) or 'none'})")

    def domain_text(self, name):
        """The legal domain of parameter ``name`` in words (as ``attnforge units`` prints)."""
        return self.param(name).domain.text()

    def legal_values(self, name, **fixed):
        """Every legal value of parameter ``name`` with the other parameters at ``fixed`` (or
        their defaults): a ``range`` or a list, in ascending order."""
        target = self.param(name)
        full = {**self.defaults, **fixed}
        for p in self.params:                # the parameters its domain may depend on
            if p is target:
                break
            p.domain.check(p.name, full[p.name], full)
        return target.domain.values(full)

    def param_table(self):
        """The Markdown table of the parameters that every unit's doc page carries (a test
        checks the page against this record; ``attnforge units --markdown`` prints it)."""
        rows = ["| parameter | default | legal values | meaning |", "|---|---|---|---|"]
        rows += [f"| `{p.name}` | {self.defaults[p.name]!r} | {p.domain.text()} | {p.doc} |"
                 for p in self.params]
        return "\n".join(rows)

    # -- checking and building -----------------------------------------------------------
    def validate(self, **params):
        """Complete ``params`` with the defaults and check each in declaration order; returns
        the full dict or raises a one-line ``ValueError`` naming the parameter, the value and
        the legal range."""
        for name in params:
            if name not in self.defaults:
                raise ValueError(f"{self.name} has no parameter {name!r} "
                                 f"(parameters: {', '.join(self.defaults) or 'none'})")
        full = {**self.defaults, **params}
        for p in self.params:
            p.domain.check(p.name, full[p.name], full)
        return full

    def build(self, **params):
        """An instance of the generator with ``params`` (the rest at their defaults)."""
        self.validate(**params)
        return self.cls(**params)
