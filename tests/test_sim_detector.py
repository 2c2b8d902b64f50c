"""cocotb + Verilator regression of the detector + lane scheduler (one build per parameter set)."""

import pytest

from attnforge.testbench.runner import run

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("params", [
    {"parallel": 4, "max_len": 32, "score_bits": 4, "lanes": 3},  # C > P (vec8, blocks), INT4
    {"parallel": 8, "max_len": 32, "score_bits": 8, "lanes": 4},  # C <= P and C > P, INT8
], ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()) or "default")
def test_detector(params):
    run("detector", params, test_module="attnforge.testbench.detector")
