"""The unit record: domains, legal values, validation messages, and the docs that quote it."""

from pathlib import Path

import pytest

from attnforge.rtl import UNITS, build
from attnforge.rtl.unit import Choice, Param, Range, Ref, Unit, Widths

DOCS = Path(__file__).resolve().parent.parent / "docs"


@pytest.mark.parametrize("name", [n for n, u in UNITS.items() if u.baseline_of is None])
def test_doc_page_quotes_the_record(name):
    """Each unit's doc page carries its parameter table exactly as the record declares it
    (regenerate with ``attnforge units --markdown NAME``)."""
    assert UNITS[name].param_table() in (DOCS / f"{name}.md").read_text()


@pytest.mark.parametrize("name", list(UNITS))
def test_defaults_are_legal_and_build(name):
    unit = UNITS[name]
    assert unit.validate() == unit.defaults
    assert type(unit.build()) is unit.cls
    assert unit.cls.record is unit or unit.baseline_of


@pytest.mark.parametrize("name", list(UNITS))
def test_every_sim_point_is_legal(name):
    for point in UNITS[name].sim:
        UNITS[name].validate(**point.params)


def test_range_domain():
    r = Range(Ref("p"), 64, multiple_of="p")
    assert list(r.values({"p": 16})) == [16, 32, 48, 64]
    with pytest.raises(ValueError, match=r"^x must be a multiple of p \(16\), not 20$"):
        r.check("x", 20, {"p": 16})
    with pytest.raises(ValueError, match=r"^x must be an integer in \[16, 64\], not 8$"):
        r.check("x", 8, {"p": 16})
    with pytest.raises(ValueError, match=r"^x must be an integer in \[16, 64\], not True$"):
        r.check("x", True, {"p": 16})
    assert Range(1, 100, pow2=True).values({}) == [1, 2, 4, 8, 16, 32, 64]
    assert Range(1, Ref("d"), divides="d").values({"d": 12}) == [1, 2, 3, 4, 6, 12]
    assert r.text() == "an integer in [p, 64], a multiple of p"
    fn = Range(Ref("2 * p", lambda q: 2 * q["p"]), 8)
    assert list(fn.values({"p": 3})) == [6, 7, 8]


def test_choice_and_widths():
    with pytest.raises(ValueError, match=r"^x must be one of 1, 2, not 3$"):
        Choice((1, 2)).check("x", 3, {})
    with pytest.raises(ValueError, match=r"^w must be a tuple of 1 to 8 distinct integers in"):
        Widths(1, 16).check("w", (2, 2), {})


def test_legal_values_is_one_call():
    assert list(UNITS["softmax"].legal_values("max_len", lanes=4))[:3] == [4, 8, 12]
    assert UNITS["topk_bitonic"].legal_values("max_n", per_beat=8)[:2] == [16, 32]
    assert UNITS["progressive_quant"].legal_values("macs", dim=6) == [1, 2, 3, 6]
    with pytest.raises(ValueError, match="per_beat must be one of"):
        UNITS["topk"].legal_values("max_n", per_beat=3)


def test_unknown_parameter_is_one_line():
    with pytest.raises(ValueError, match=r"^mac has no parameter 'nope' \(parameters: "):
        build("mac", nope=1)
    with pytest.raises(ValueError, match=r"^unit must be one of "):
        build("nosuchunit")


def test_record_must_match_the_constructor():
    class Gen:
        def __init__(self, *, a=1, b=2):
            pass
    with pytest.raises(TypeError, match="differ"):
        Unit("gen", Gen, "x", (Param("a", Range(0, 3)),))
    unit = Unit("gen", Gen, "x", (Param("b", Range(0, 3)), Param("a", Range(0, Ref("b")))))
    assert unit.defaults == {"b": 2, "a": 1}
    with pytest.raises(ValueError, match=r"^a must be an integer in \[0, 0\], not 1$"):
        unit.validate(b=0)
