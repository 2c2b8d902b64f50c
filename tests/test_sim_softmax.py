"""cocotb + Verilator regression of the softmax (one build per parameter set)."""

import pytest

from attnforge.testbench.runner import lint, run

pytestmark = pytest.mark.sim

PARAMS = [
    {},                                                    # defaults: 4 lanes, rows up to 64
    {"lanes": 3, "max_len": 12, "in_bits": 8, "in_frac": 4, "out_frac": 6, "table_bits": 8,
     "index_bits": 4},
]


@pytest.mark.parametrize("params", PARAMS,
                         ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()) or "default")
def test_softmax(params):
    assert lint("softmax", params) == ""
    run("softmax", params)
