"""MAC: golden model by hand, quick Amaranth-simulator runs against it, parameter checks."""

import random
from pathlib import Path

import numpy as np
import pytest
from amaranth.sim import Simulator

from attnforge.golden.mac import MACModel, Word, lane_bits, tile_matrix
from attnforge.golden.numbers import Precision, pack
from attnforge.rtl.mac import MAC, FX16MAC, SeparateMAC
from attnforge.testbench.mac import random_program
from attnforge.testbench.quick import sink, source


# -- golden model ------------------------------------------------------------------------------

def test_golden_int2_tile_by_hand():
    # W[i][j] = 1 on the diagonal, -2 in column 0 of row 7; a = [1, -1, 0, 1, -2, 1, 1, -2]
    rows = [pack([1 if j == i else 0 for j in range(8)], "INT2") for i in range(8)]
    rows[7] = pack([-2, 0, 0, 0, 0, 0, 0, 1], "INT2")
    a = pack([1, -1, 0, 1, -2, 1, 1, -2], "INT2")
    out = MACModel().run([rows], [Word(a, Precision.INT2, swap=True)])
    assert out[0]["lanes"] == [1, -1, 0, 1, -2, 1, 1, -2 * 1 + 1 * -2]


def test_golden_fx16_requant():
    # 1.5 * -2.25 = -3.375 in Q8.8 -> -864; twice accumulated: -6.75 -> -1728
    w, a = int(pack([384], "FX16")), int(pack([-576], "FX16"))
    words = [Word(a, swap=True, last=False, requant=True), Word(a, last=True)]
    out = MACModel(frac_bits=8).run([[w]], words)
    assert out[0]["lanes"][0] == -1728 and out[0]["requant"]
    raw = MACModel(frac_bits=8).run([[w]], [Word(a, swap=True)])
    assert raw[0]["lanes"][0] == 384 * -576


def test_golden_matches_dense_matmul():
    rng = np.random.default_rng(3)
    for prec in Precision:
        n, lo, hi = prec.lanes, -(1 << (prec.bits - 1)), (1 << (prec.bits - 1))
        W = rng.integers(lo, hi, size=(n, n))
        A = rng.integers(lo, hi, size=(5, n))
        words = [Word(int(pack(r, prec)), prec, swap=(k == 0), last=(k == 4))
                 for k, r in enumerate(A)]
        out = MACModel().run([list(pack(W, prec))], words)
        assert out[0]["lanes"][:n] == list((W @ A.T).sum(axis=1))
        assert (tile_matrix(list(pack(W, prec)), prec) == W).all()


def test_golden_error_and_unwritten_rows():
    m = MACModel(max_depth=2)
    word = Word(int(pack([1] * 8, "INT2")), Precision.INT2, swap=True, last=False)
    out = m.run([[int(pack([1] * 8, "INT2"))]],          # only row 0 written
                [word, Word(word.data, last=False), Word(word.data, last=True)])
    assert out[0]["error"] and out[0]["lanes"] == [24, 0, 0, 0, 0, 0, 0, 0]
    assert lane_bits(1024) == (42, 27, 20, 20, 17, 17, 17, 17)


# -- quick Amaranth-simulator runs ---------------------------------------------------------------

def simulate(dut, tiles, words, *, seed=0, gaps=0.3, stalls=0.3):
    """Drive ``dut`` with the program under random gaps/stalls; return the result payloads."""
    rng = random.Random(seed)
    n_expected = sum(w.last for w in words)
    got = []

    tile_rows = [{"data": row, "last": k == len(rows) - 1}
                 for rows in tiles for k, row in enumerate(rows)]
    act_words = [{"data": w.data, "mode": w.mode, "last": w.last, "swap": w.swap,
                  "requant": w.requant} for w in words]

    def result(payload):
        return {"mode": Precision(payload.mode), "requant": bool(payload.requant),
                "error": bool(payload.error), "lanes": [int(x) for x in payload.lanes]}

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(source(dut.w, tile_rows, rng, gaps))
    sim.add_testbench(source(dut.a, act_words, rng, gaps))
    sim.add_testbench(sink(dut.o, got, n_expected, rng, stalls, result))
    sim.run_until(1e-8 * (10 * len(words) + 100))
    return got


@pytest.mark.parametrize("cls, modes", [
    (MAC, tuple(Precision)), (SeparateMAC, tuple(Precision)), (FX16MAC, (Precision.FX16,))])
def test_rtl_matches_golden(cls, modes):
    rng = random.Random(7)
    dut = cls(frac_bits=5, max_depth=4)
    tiles, words = random_program(rng, modes, 120, 6)
    expected = MACModel(frac_bits=5, max_depth=4, modes=modes).run(tiles, words)
    assert simulate(dut, tiles, words, seed=1) == expected


@pytest.mark.parametrize("frac_bits, max_depth", [(0, 1), (15, 3)])
def test_rtl_parameter_edges(frac_bits, max_depth):
    rng = random.Random(frac_bits)
    tiles, words = random_program(rng, tuple(Precision), 100, 2 * max_depth + 1)
    expected = MACModel(frac_bits=frac_bits, max_depth=max_depth).run(tiles, words)
    assert any(r["error"] for r in expected)
    assert simulate(MAC(frac_bits=frac_bits, max_depth=max_depth), tiles, words) == expected


def test_rtl_broken_golden_is_caught():
    # The comparison can fail: perturb one expected lane and the check must notice.
    rng = random.Random(8)
    tiles, words = random_program(rng, tuple(Precision), 20, 3)
    expected = MACModel(max_depth=4).run(tiles, words)
    expected[5]["lanes"][0] += 1
    assert simulate(MAC(max_depth=4), tiles, words) != expected


# -- generator parameters ------------------------------------------------------------------------

def test_properties():
    mac = MAC(frac_bits=10, max_depth=256)
    assert (mac.frac_bits, mac.max_depth, mac.acc_bits, mac.latency) == (10, 256, 40, 3)
    assert mac.modes == tuple(Precision) and FX16MAC().modes == (Precision.FX16,)


@pytest.mark.parametrize("kwargs, message", [
    ({"frac_bits": 16}, r"frac_bits must be an integer in \[0, 15\], not 16"),
    ({"frac_bits": -1}, r"frac_bits must be an integer in \[0, 15\], not -1"),
    ({"frac_bits": 2.5}, r"frac_bits must be an integer in \[0, 15\], not 2.5"),
    ({"max_depth": 0}, r"max_depth must be an integer in \[1, 16777216\], not 0"),
    ({"max_depth": True}, r"max_depth must be an integer in \[1, 16777216\], not True"),
])
def test_init_wrong_params(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MAC(**kwargs)


@pytest.mark.parametrize("cls", [MAC, FX16MAC, SeparateMAC])
def test_latency_is_measured(cls):
    """Cycles from the clock edge that accepts a packet's last word to the edge at which its
    result is taken (output always ready) equal ``latency``, and docs/mac.md states that value."""
    dut = cls(max_depth=8)
    seen = {}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.a.payload, {"data": 3, "mode": Precision.FX16, "last": 1})
        ctx.set(dut.a.valid, 1)
        cycle = 0
        while "taken" not in seen:
            _, _, a_take, o_take = await ctx.tick().sample(
                dut.a.valid & dut.a.ready, dut.o.valid & dut.o.ready)
            cycle += 1
            if a_take and "accepted" not in seen:
                seen["accepted"] = cycle
                ctx.set(dut.a.valid, 0)
            if o_take:
                seen["taken"] = cycle
            assert cycle < 20

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen["taken"] - seen["accepted"] == dut.latency == 3
    doc = (Path(__file__).parent.parent / "docs" / "mac.md").read_text()
    assert f"Latency: {dut.latency} cycles" in doc and "latency` (3)" in doc
