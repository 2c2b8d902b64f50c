"""Every registered unit's Verilog passes ``verilator --lint-only -Wall`` with the documented
waivers (testbench/runner.py: VERILATOR_WAIVERS), at its defaults and at every parameter point
of its regression."""

import pytest

from attnforge.rtl import UNITS
from attnforge.rtl.unit import SimPoint
from attnforge.testbench.runner import lint

POINTS = list({(unit.name, repr(sorted(point.params.items()))): (unit.name, point.params)
               for unit in UNITS.values() for point in (*unit.sim, SimPoint())}.values())
#: Points whose sim point is ``long`` are linted in ``make long`` too (same Verilog size).
LONG = {(unit.name, repr(sorted(point.params.items())))
        for unit in UNITS.values() for point in unit.sim if point.long}


@pytest.mark.parametrize("unit, params", [
    pytest.param(u, p, marks=pytest.mark.long) if (u, repr(sorted(p.items()))) in LONG else (u, p)
    for u, p in POINTS],
                         ids=[f"{u}-" + ("-".join(f"{k}{v}" for k, v in p.items()) or "default")
                              for u, p in POINTS])
def test_lint_clean(unit, params):
    assert lint(unit, params) == ""
