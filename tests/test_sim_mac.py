"""cocotb + Verilator regression of the MAC and its baselines (one build per parameter set)."""

import pytest

from attnforge.testbench.runner import run

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("unit, params", [
    ("mac", {}),                                  # defaults: frac_bits 8, max_depth 1024
    ("mac", {"frac_bits": 0, "max_depth": 8}),    # small depth: overflow and bounds
    ("mac_fx16", {"max_depth": 8}),
    ("mac_separate", {"frac_bits": 4, "max_depth": 8}),
], ids=lambda x: x if isinstance(x, str) else "-".join(f"{k}{v}" for k, v in x.items()) or "default")
def test_mac(unit, params):
    run(unit, params, test_module="attnforge.testbench.mac")
