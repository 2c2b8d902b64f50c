"""Every registered unit's Verilog passes ``verilator --lint-only -Wall`` with the documented
waivers (testbench/runner.py: VERILATOR_WAIVERS)."""

import pytest

from attnforge.rtl import UNITS
from attnforge.testbench.runner import lint


@pytest.mark.parametrize("unit", list(UNITS))
def test_lint_clean(unit):
    assert lint(unit) == ""
