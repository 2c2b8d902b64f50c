"""The cocotb regression on Verilator: every unit at every parameter point its record lists
(:attr:`attnforge.rtl.unit.Unit.sim`), one Verilator build per point, all its cocotb tests (or
the subset the point names)."""

import pytest

from attnforge.rtl import UNITS
from attnforge.testbench.runner import run

pytestmark = pytest.mark.sim

POINTS = [(unit.name, point) for unit in UNITS.values() for point in unit.sim]


@pytest.mark.parametrize("unit, point", [
    pytest.param(u, p, marks=pytest.mark.long) if p.long else (u, p) for u, p in POINTS],
    ids=[f"{u}-{p.label}" for u, p in POINTS])
def test_cocotb(unit, point):
    run(unit, point.params, testcase=list(point.testcases) if point.testcases else None)
