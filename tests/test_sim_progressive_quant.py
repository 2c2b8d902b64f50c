"""cocotb + Verilator regression of the progressive-quantization unit (one build per parameter
set: 4 + 4 planes in 64-bit words, and 6 + 4 planes in 32-bit words with narrower formats)."""

import re

import pytest

from attnforge.testbench.runner import lint, run

pytestmark = pytest.mark.sim

PARAMS = [
    {},                                # defaults: dim 8, 4 MACs, 4 + 4 planes, w 64, max_len 16
    {"dim": 6, "macs": 3, "q_bits": 6, "msb_bits": 6, "lsb_bits": 4, "word_bits": 32,
     "lanes": 3, "max_len": 12, "in_bits": 12, "in_frac": 4, "out_frac": 6, "score_shift": 2},
]


def lint_warnings(params):
    """Lint warnings other than DECLFILENAME. The unit instantiates the Softmax and the
    bitwidth converter as submodules, which Amaranth writes into the same file as
    `progressive_quant.softmax` / `progressive_quant.conv`; Verilator's file-naming style
    warning about that is the only one tolerated (until the project waives it)."""
    text = lint("progressive_quant", params)
    warnings = re.findall(r"^%Warning-(\w+):.*$", text, re.M)
    assert text == "" or warnings, text
    return [w for w in warnings if w != "DECLFILENAME"]


@pytest.mark.parametrize("params", PARAMS,
                         ids=lambda p: "-".join(f"{k}{v}" for k, v in p.items()) or "default")
def test_progressive_quant(params):
    assert lint_warnings(params) == []
    run("progressive_quant", params)
