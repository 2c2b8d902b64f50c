"""RMMU: golden model properties, quick Amaranth-simulator runs against it, parameter checks."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from attnforge.golden.numbers import Precision, requantize, unpack
from attnforge.golden.rmmu import Descriptor, RMMUModel, tile_counts
from attnforge.rtl.rmmu import RMMU
from attnforge.testbench.quick import sink, source
from attnforge.testbench.rmmu import random_operands, random_ops


# -- golden model ------------------------------------------------------------------------------

def replay(model, desc, a_beats, w_beats):
    """An independent reading of the stream contract: unpack every beat and run the
    weight-stationary dataflow pass by pass (PE tiles times row words, summed down columns)."""
    p = Precision(desc.precision)
    n = p.lanes
    t_n, t_m, passes = tile_counts(desc, model.cols, model.tile_m)
    out, ai, wi = [], 0, 0
    for nt in range(t_n):
        for mt in range(t_m):
            rows_m = min(model.tile_m, desc.m - mt * model.tile_m)
            acc = np.zeros((rows_m, model.cols, n), dtype=np.int64)
            for kp in range(passes):
                k0 = kp * desc.nrows * n
                tiles = unpack(w_beats[wi:wi + desc.nrows, :, :n], p)   # (r, c, i, j)
                wi += desc.nrows
                for mm in range(rows_m):
                    a = unpack(a_beats[ai + mm, :desc.nrows], p)         # (r, j)
                    kidx = k0 + np.arange(desc.nrows)[:, None] * n + np.arange(n)
                    a = np.where(kidx < desc.k, a, 0)                   # lanes beyond K masked
                    acc[mm] += np.einsum("rcij,rj->ci", tiles, a)
                ai += rows_m
            lanes = acc.reshape(rows_m, model.cols * n)
            width = min(model.cols * n, desc.n - nt * model.cols * n)
            lanes[:, width:] = 0
            if desc.requant:
                lanes = requantize(lanes, desc.shift, Precision(desc.out_fmt).bits)
            full = np.zeros((rows_m, model.cols * 8), dtype=np.int64)
            full[:, :lanes.shape[1]] = lanes
            out.append(full)
    assert ai == len(a_beats) and wi == len(w_beats)
    return np.concatenate(out)


@pytest.mark.parametrize("seed", range(6))
def test_golden_streams_replay_to_gemm(seed):
    # the beat formatting + the dataflow must give A @ B, even with random padding
    rng = random.Random(seed)
    model = RMMUModel(rows=4, cols=3, groups=2, tile_m=3, max_m=64, max_k=128, max_n=64)
    for desc in random_ops(rng, model, 8, group=seed % 2):
        a, b = random_operands(rng, desc)
        expected, last = model.o_beats(desc, a, b)
        pad = np.random.default_rng(seed + 100)
        got = replay(model, desc, model.a_beats(desc, a, rng=pad), model.w_beats(desc, b, rng=pad))
        assert (got == expected).all() and last[-1] and last.sum() == 1


def test_golden_by_hand():
    # INT8, 1 row x 1 col: n = 2, one pass covers K = 2; C = [[1, 2], [3, 4]] @ [[5, 6], [7, -8]]
    model = RMMUModel(rows=1, cols=1, groups=1, tile_m=2, max_m=4, max_k=4, max_n=4)
    desc = Descriptor(0, 1, Precision.INT8, 2, 2, 2)
    a, b = np.array([[1, 2], [3, 4]]), np.array([[5, 6], [7, -8]])
    lanes, last = model.o_beats(desc, a, b)
    assert lanes[:, :2].tolist() == [[19, -10], [43, -14]] and not lanes[:, 2:].any()
    assert model.w_beats(desc, b)[0, 0, :2].tolist() == [(5 & 255) | (7 << 8), 6 | ((-8 & 255) << 8)]
    q = model.gemm(Descriptor(0, 1, Precision.INT8, 2, 2, 2, True, Precision.INT4, 2), a, b)
    assert q.tolist() == [[5, -2], [7, -4]]         # 19/4 = 4.75 -> 5 -> sat 7; -14/4 -> -4


def test_golden_rejects():
    model = RMMUModel(rows=4, cols=2, max_m=8, max_k=8, max_n=8)
    ok = dict(row0=0, nrows=4, precision=Precision.INT4, m=8, k=8, n=8)
    assert model.error(Descriptor(**ok)) is None
    for bad in [dict(nrows=0), dict(row0=1), dict(m=0), dict(m=9), dict(k=9), dict(n=0)]:
        lanes, last = model.o_beats(Descriptor(**{**ok, **bad}), None, None)
        assert model.error(Descriptor(**{**ok, **bad})) and lanes is None and last.tolist() == [True]


# -- quick Amaranth-simulator runs ---------------------------------------------------------------

def simulate(dut, model, program, *, seed=0, gaps=0.3, stalls=0.3, limit=20000):
    """Run ``program`` = {group: [(desc, a, b), ...]} with random gaps/stalls; returns
    {group: [(lanes, last, error), ...]} of every output beat."""
    rng = random.Random(seed)
    got = {g: [] for g in program}
    sim = Simulator(dut)
    sim.add_clock(1e-8)

    for g, ops in program.items():
        port = dut.g[g]
        cmds, acts, wts = [], [], []
        for desc, a, b in ops:
            cmds.append({"row0": desc.row0, "nrows": desc.nrows, "precision": desc.precision,
                         "m": desc.m, "k": desc.k, "n": desc.n, "requant": desc.requant,
                         "out_fmt": desc.out_fmt, "shift": desc.shift})
            if model.error(desc):
                continue
            acts += [{"data": [int(x) for x in beat]}
                     for beat in model.a_beats(desc, a, rng=np.random.default_rng(1))]
            wts += [{"data": [[int(x) for x in tile] for tile in beat]}
                    for beat in model.w_beats(desc, b, rng=np.random.default_rng(2))]
        for stream, beats in ((port.cmd, cmds), (port.a, acts), (port.w, wts)):
            sim.add_testbench(source(stream, beats, rng, gaps))
        n_out = sum(len(model.o_beats(d, a, b)[1]) for d, a, b in ops)
        sim.add_testbench(sink(port.o, got[g], n_out, rng, stalls, lambda p: (
            [int(x) for x in p.lanes], bool(p.last), bool(p.error))))
    sim.run_until(1e-8 * limit)
    return got


def expected_beats(model, ops):
    out = []
    for desc, a, b in ops:
        lanes, last = model.o_beats(desc, a, b)
        if lanes is None:
            out.append(([0] * (model.cols * 8), True, True))
        else:
            out += [(row.tolist(), bool(l), False) for row, l in zip(lanes, last)]
    return out


SMALL = dict(rows=3, cols=2, groups=2, tile_m=3, max_m=16, max_k=64, max_n=32)


def test_rtl_two_groups_concurrent():
    rng = random.Random(11)
    model = RMMUModel(**SMALL)
    program = {0: [(d, *random_operands(rng, d)) for d in random_ops(rng, model, 5, group=0)],
               1: [(d, *random_operands(rng, d)) for d in random_ops(rng, model, 5, group=1)]}
    got = simulate(RMMU(**SMALL), model, program, seed=3)
    for g, ops in program.items():
        assert got[g] == expected_beats(model, ops), f"group {g}"


def test_rtl_broken_golden_is_caught():
    rng = random.Random(12)
    model = RMMUModel(**SMALL)
    ops = [(d, *random_operands(rng, d)) for d in random_ops(rng, model, 2, group=0)]
    want = expected_beats(model, ops)
    want[0][0][0] += 1
    assert simulate(RMMU(**SMALL), model, {0: ops}, seed=4)[0] != want


# -- generator parameters ------------------------------------------------------------------------

def test_properties():
    rmmu = RMMU(rows=4, cols=2, groups=3, tile_m=5, max_k=1024)
    assert (rmmu.rows, rmmu.cols, rmmu.groups, rmmu.tile_m, rmmu.max_k) == (4, 2, 3, 5, 1024)
    assert rmmu.out_bits == 42 == RMMUModel(max_k=1024).out_bits
    assert [rmmu.peak_macs(p) for p in Precision] == [8, 32, 128, 512]
    assert RMMU().peak_macs(Precision.INT2) == 32 * 16 * 64


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": 0}, r"rows must be an integer in \[1, 64\], not 0"),
    ({"rows": 65}, r"rows must be an integer in \[1, 64\], not 65"),
    ({"cols": 2.0}, r"cols must be an integer in \[1, 64\], not 2.0"),
    ({"rows": 4, "groups": 5}, r"groups must be an integer in \[1, 4\], not 5"),
    ({"groups": 9}, r"groups must be an integer in \[1, 8\], not 9"),
    ({"tile_m": 0}, r"tile_m must be an integer in \[1, 1024\], not 0"),
    ({"max_m": 65536}, r"max_m must be an integer in \[1, 65535\], not 65536"),
    ({"max_k": True}, r"max_k must be an integer in \[1, 65535\], not True"),
    ({"max_n": -1}, r"max_n must be an integer in \[1, 65535\], not -1"),
])
def test_init_wrong_params(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RMMU(**kwargs)
