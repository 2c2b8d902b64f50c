"""cocotb regression of the RMMU on Verilator: a small array (full random campaign, bad
descriptors, max-K extremes, reset) and the default 32 x 16 array (one concurrent run)."""

import pytest

from attnforge.testbench.runner import run

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("params", [
    dict(rows=4, cols=2, groups=2, tile_m=4, max_m=64, max_k=64, max_n=64),
    dict(rows=3, cols=3, groups=3, tile_m=2, max_m=8, max_k=255, max_n=40),
    dict(),
], ids=["4x2", "3x3-3groups", "default-32x16"])
def test_rmmu(params):
    run("rmmu", params, test_module="attnforge.testbench.rmmu",
        testcase=None if params else ["random_concurrent_groups", "extremes_at_max_k"])
