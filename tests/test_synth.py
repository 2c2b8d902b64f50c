"""Synthesis smoke test: the Yosys flow runs and its figures are sane (not a benchmark)."""

import pytest

from attnforge.synth.yosys import FF_TRANSISTORS, synthesize

pytestmark = pytest.mark.synth


def test_synthesize_fx16_mac():
    fig = synthesize("mac_fx16", {"max_depth": 4})
    assert fig["cells"] > 1000 and fig["depth"] > 10
    # acc (34) + weights (2 x 16) + pipeline/output registers: FFs are counted
    assert fig["ffs"] > 34 + 32
    assert fig["transistors"] == fig["logic_transistors"] + FF_TRANSISTORS * fig["ffs"]
