"""cocotb + Verilator regression of the top-k engine and its bitonic baseline (one build per
parameter set)."""

import pytest

from attnforge.testbench.runner import run

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("unit, params", [
    ("topk", {"max_n": 32, "width": 8, "lanes": 4}),      # small: many requests, 8-bit ties
    ("topk", {"max_n": 64, "width": 16, "lanes": 16}),    # wide P, default score width
    ("topk_bitonic", {"max_n": 16, "width": 6, "lanes": 4}),
], ids=lambda x: x if isinstance(x, str) else "-".join(f"{k}{v}" for k, v in x.items()))
def test_topk(unit, params):
    run(unit, params, test_module="attnforge.testbench.topk")
