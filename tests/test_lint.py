"""Every registered unit's Verilog passes ``verilator --lint-only -Wall`` with the documented
waivers (testbench/runner.py: VERILATOR_WAIVERS), at its defaults and at every parameter point
of its regression."""

import pytest

from attnforge.rtl import UNITS
from attnforge.rtl.unit import SimPoint
from attnforge.testbench.runner import lint

POINTS = list({(unit.name, repr(sorted(point.params.items()))): (unit.name, point.params)
               for unit in UNITS.values() for point in (*unit.sim, SimPoint())}.values())


@pytest.mark.parametrize("unit, params", POINTS,
                         ids=[f"{u}-" + ("-".join(f"{k}{v}" for k, v in p.items()) or "default")
                              for u, p in POINTS])
def test_lint_clean(unit, params):
    assert lint(unit, params) == ""
