"""cocotb testbench of the RMMU (``rmmu``), checked against :class:`attnforge.golden.rmmu.RMMUModel`.

Every row group has its own bench: descriptors on ``g__<i>__cmd``, activation and weight beats
(formatted by the golden model, with *random* padding so that the hardware's K and N masking is
exercised) on ``a`` and ``w`` with random gaps, results taken from ``o`` under random stalls and
compared beat by beat by a scoreboard. Groups run concurrently; a descriptor that claims rows of
a running group waits, one that breaks a bound gets an error beat.
"""

from dataclasses import replace

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge

from ..golden.numbers import Precision, value_range
from ..golden.rmmu import Descriptor, RMMUModel, peak_macs
from ..rtl.rmmu import act_layout, cmd_layout, result_layout, weight_layout
from .kit import Bench, corner_ints, scale

#: The quick subset a mutant run uses (``make mutants``).
MUTANT_TESTS = ("random_concurrent_groups", "bad_descriptors", "reset_mid_operation",
                "extremes_at_max_k", "rows_from_every_group", "requant_vectors")

#: Output-lane inputs ``(x, out_fmt, shift)`` on which a mutant of the shared output lane
#: (``LaneOut``: round, saturate, mask) differs from the original, as Yosys ``sat`` found them
#: for the survivors of ``MUTANTS=30 MUTANT_SEED=1 make mutants UNITS=rmmu``
#: (:func:`attnforge.testbench.mutants.counterexample`: #29, ``cnot0`` on bit 2 of the
#: saturation comparison, ``rtl/numbers.py:50``, requantizing to INT8 by 8). Random
#: requantization meets such an accumulator value with a probability of about 2**-14 per
#: lane; :func:`requant_vectors` produces each one as a 1 x K x 1 GEMM.
KILL_LANE_VECTORS = (
    (-9600, Precision.INT8, 8),
)

#: Descriptor classes (:func:`descriptor_class`).
DESCRIPTORS = ("good", "nrows = 0", "rows beyond the array", "m out of range",
               "k out of range", "n out of range")


def descriptor_class(model, desc):
    """Which of :data:`DESCRIPTORS` ``desc`` is (the RMMU's checks, in the golden order)."""
    if desc.nrows == 0:
        return "nrows = 0"
    if desc.row0 + desc.nrows > model.rows:
        return "rows beyond the array"
    for name, bound in (("m", model.max_m), ("k", model.max_k), ("n", model.max_n)):
        if not 1 <= getattr(desc, name) <= bound:
            return f"{name} out of range"
    return "good"


def edge_class(value, tile):
    """A dimension against its tile: ``1``, ``tile``, ``tile + 1`` or ``other``."""
    return "1" if value == 1 else "tile" if value == tile else \
        "tile + 1" if value == tile + 1 else "other"


def group_rows(rng, rows, groups, group):
    """A random row range for ``group``: mostly inside its share of the rows (so groups run
    side by side), sometimes all rows (so it must wait for the others)."""
    if groups == 1 or rng.random() < 0.1:
        lo, hi = 0, rows
    else:
        lo, hi = group * rows // groups, (group + 1) * rows // groups
        hi = max(hi, lo + 1)
    row0 = rng.randint(lo, hi - 1)
    return row0, rng.randint(1, hi - row0)


def random_ops(rng, model, count, *, group=0, bad=0.0, max_dim=None):
    """``count`` random descriptors for ``group``: every precision, edge shapes (K = 1, one
    pass exactly, M = N = 1, M just over an M-tile, N just over an N-tile), random requantization,
    and with probability ``bad`` a descriptor the hardware must reject."""
    cap = max_dim or 3 * model.tile_m
    ops = []
    for _ in range(count):
        p = rng.choice(list(Precision))
        row0, nrows = group_rows(rng, model.rows, model.groups, group)
        kpass, ntile = nrows * p.lanes, model.cols * p.lanes
        m = rng.choice([1, model.tile_m, model.tile_m + 1, rng.randint(1, cap)])
        k = rng.choice([1, kpass, kpass + 1, rng.randint(1, 3 * kpass)])
        n = rng.choice([1, ntile, ntile + 1, rng.randint(1, 2 * ntile)])
        m, k, n = min(m, model.max_m), min(k, model.max_k), min(n, model.max_n)
        requant = rng.random() < 0.5
        fmt = rng.choice(list(Precision))
        shift = rng.choice([0, rng.randint(0, 2 * p.bits + 4), 63])
        if rng.random() < bad:
            which = rng.choice(["nrows", "rows", "m", "k", "n"])
            if which == "nrows":
                nrows = 0
            elif which == "rows":
                row0, nrows = model.rows - 1, 2
            else:
                dims = {"m": m, "k": k, "n": n}
                bound = {"m": model.max_m, "k": model.max_k, "n": model.max_n}[which]
                fits = bound + 1 < (1 << bound.bit_length())        # the field can hold it
                dims[which] = bound + 1 if fits and rng.random() < 0.5 else 0
                m, k, n = dims["m"], dims["k"], dims["n"]
        ops.append(Descriptor(row0, nrows, p, m, k, n, requant, fmt, shift))
    return ops


def random_operands(rng, desc, corner=0.3):
    """Random ``A`` (M x K) and ``B`` (K x N) of the descriptor's precision with edge values."""
    p = Precision(desc.precision)
    if desc.m == 0 or desc.k == 0 or desc.n == 0:
        return None, None
    a = np.array(corner_ints(rng, p.bits, desc.m * desc.k, corner)).reshape(desc.m, desc.k)
    b = np.array(corner_ints(rng, p.bits, desc.k * desc.n, corner)).reshape(desc.k, desc.n)
    return a, b


def cmd_fields(desc):
    return {"row0": desc.row0, "nrows": desc.nrows, "precision": desc.precision, "m": desc.m,
            "k": desc.k, "n": desc.n, "requant": desc.requant, "out_fmt": desc.out_fmt,
            "shift": desc.shift}


def model_of(unit):
    return RMMUModel(rows=unit.rows, cols=unit.cols, groups=unit.groups, tile_m=unit.tile_m,
                     max_m=unit.max_m, max_k=unit.max_k, max_n=unit.max_n)


class RMMUBench(Bench):
    """Drivers, monitors and scoreboards of every row group (:attr:`groups`, one
    :class:`Group` each) on one :class:`~attnforge.testbench.kit.Bench`: one clock, one reset
    that every group's sources, monitor and scoreboard obey."""

    def __init__(self, dut, *, gaps=0.3, stalls=0.3):
        super().__init__(dut, "rmmu", gaps=gaps, stalls=stalls)
        self.model = model_of(self.unit)
        self.pad = np.random.default_rng(self.rng.randrange(1 << 30))
        self.groups = [Group(self, g) for g in range(self.unit.groups)]
        # Contract bins: descriptor classes; precision x requantization; output format and
        # shift when requantizing; M, K, N at their tile edges (K against one pass of the rows
        # used, N against one N-tile); descriptors on the group's share of the rows or beyond (they
        # may wait for the other groups).
        P = [p.name for p in Precision]
        self.coverpoint("descriptor", DESCRIPTORS)
        self.coverpoint("precision_requant", [(p, r) for p in P for r in (0, 1)])
        self.coverpoint("out_fmt", P)
        self.coverpoint("shift", ["0", "63", "other"])
        for dim in "mkn":
            self.coverpoint(f"{dim}_edge", ["1", "tile", "tile + 1", "other"])
        if self.unit.groups > 1:
            self.coverpoint("rows_claimed", ["own share", "beyond own share"])

    def cover_descriptor(self, desc, group):
        """Sample one descriptor into the bins declared in ``__init__``."""
        what = descriptor_class(self.model, desc)
        self.cover("descriptor", what)
        if what != "good":
            return
        p = Precision(desc.precision)
        self.cover("precision_requant", (p.name, int(desc.requant)))
        if desc.requant:
            self.cover("out_fmt", Precision(desc.out_fmt).name)
            self.cover("shift", "0" if desc.shift == 0 else "63" if desc.shift == 63
                       else "other")
        self.cover("m_edge", edge_class(desc.m, self.model.tile_m))
        self.cover("k_edge", edge_class(desc.k, desc.nrows * p.lanes))
        self.cover("n_edge", edge_class(desc.n, self.model.cols * p.lanes))
        if self.unit.groups > 1:
            rows, groups = self.model.rows, self.unit.groups
            lo, hi = group * rows // groups, max((group + 1) * rows // groups,
                                                 group * rows // groups + 1)
            self.cover("rows_claimed", "own share" if lo <= desc.row0 and
                       desc.row0 + desc.nrows <= hi else "beyond own share")


class Group:
    """The streams of one row group: ``cmd``, ``a``, ``w`` sources and the ``o`` monitor with
    its scoreboard (every result beat compared in order)."""

    def __init__(self, bench, group):
        u = bench.unit
        self.bench, self.group, self.model, self.rng = bench, group, bench.model, bench.rng
        prefix = f"g__{group}__"
        self.cmd = bench.source(prefix + "cmd", cmd_layout(u.rows, u.max_m, u.max_k, u.max_n))
        self.a = bench.source(prefix + "a", act_layout(u.rows))
        self.w = bench.source(prefix + "w", weight_layout(u.cols))
        self.o, self.board = bench.sink(prefix + "o", result_layout(u.cols, u.out_bits),
                                        self.compare, name=f"rmmu.g{group}.o")
        self.ops = 0

    @staticmethod
    def compare(expected, actual):
        lanes, last, error, where = expected
        got = ([int(x) for x in actual.lanes], bool(actual.last), bool(actual.error))
        if got == (lanes, last, error):
            return None
        if (got[1], got[2]) != (last, error):
            return f"{where}: last/error expected {(last, error)}, got {(got[1], got[2])}"
        diff = [j for j, (x, y) in enumerate(zip(lanes, got[0])) if x != y]
        return f"{where}: {len(diff)} lanes differ, first: lane {diff[0]} expected " \
               f"{lanes[diff[0]]}, got {got[0][diff[0]]}"

    def play(self, desc, a=None, b=None):
        """Queue one operation and expect its output beats."""
        if a is None and not self.model.error(desc):
            a, b = random_operands(self.rng, desc)
        self.cmd.send(cmd_fields(desc))
        self.bench.cover_descriptor(desc, self.group)
        lanes, last = self.model.o_beats(desc, a, b)
        where = f"g{self.group} operation {self.ops} {desc}"
        self.ops += 1
        if lanes is None:
            self.board.expect(([0] * (self.bench.unit.cols * 8), True, True, where))
            return
        for i, (row, l) in enumerate(zip(lanes, last)):
            self.board.expect((row.tolist(), bool(l), False, f"{where} beat {i}"))
        self.a.send_all({"data": [int(x) for x in beat]}
                        for beat in self.model.a_beats(desc, a, rng=self.bench.pad))
        self.w.send_all({"data": [[int(x) for x in tile] for tile in beat]}
                        for beat in self.model.w_beats(desc, b, rng=self.bench.pad))


def budget(model, ops):
    """Generous cycle budget for ``ops`` (every beat may wait through gaps and stalls)."""
    beats = sum(len(model.a_beats(d, np.zeros((d.m, d.k), np.int64)))
                + len(model.w_beats(d, np.zeros((d.k, d.n), np.int64)))
                for d in ops if not model.error(d))
    return 20 * beats + 200 * len(ops) + 1000


async def campaign(tb, count, *, bad=0.0):
    """``count`` random operations on every group at once; waits for every result."""
    total = 0
    for grp in tb.groups:
        ops = random_ops(tb.rng, tb.model, count, group=grp.group, bad=bad)
        for d in ops:
            grp.play(d)
        total += budget(tb.model, ops)
    await tb.finish(total)


@cocotb.test()
async def random_concurrent_groups(dut):
    """Random GEMMs on every group at once: all precisions, edge shapes, requantization,
    random padding, back-to-back descriptors, gaps and stalls on every stream; then, on every
    group at once, one GEMM over every row (each PE row driven by every group in turn: each
    waits for the others) and one single-row GEMM ending at each row (every group's
    accumulator reads every row as the bottom of its operation)."""
    tb = RMMUBench(dut)
    await tb.start()
    count = scale(12 if tb.unit.rows * tb.unit.cols <= 64 else 2)
    await campaign(tb, count)
    R = tb.unit.rows
    total = 0
    for grp in tb.groups:
        ops = [replace(d, row0=row0, nrows=nrows) for d, (row0, nrows) in zip(
            random_ops(tb.rng, tb.model, R + 1, group=grp.group),
            [(0, R)] + [(r, 1) for r in range(R)])]
        for d in ops:
            grp.play(d)
        total += budget(tb.model, ops)
    await tb.finish(total * len(tb.groups))
    dut._log.info("checked %s beats over %d operations",
                  [g.board.checked for g in tb.groups], sum(g.ops for g in tb.groups))


@cocotb.test()
async def bad_descriptors(dut):
    """Descriptors beyond the generated bounds get exactly one error beat and consume no
    activation or weight beats; good ones around them still compute correctly. Every kind of
    bad descriptor is sent once on group 0 first (zero rows, rows past the array, M, K and N
    of 0 and, where the field holds it, one over the bound), then a random mix."""
    tb = RMMUBench(dut)
    await tb.start()
    if tb.unit.rows * tb.unit.cols > 64:
        dut._log.info("large array: bad descriptors are exercised by the small builds")
        return
    m, g0, p = tb.model, tb.groups[0], Precision.INT8
    bad = [Descriptor(0, 0, p, 2, 2, 2), Descriptor(m.rows - 1, 2, p, 2, 2, 2)]
    for dim, bound in (("m", m.max_m), ("k", m.max_k), ("n", m.max_n)):
        for value in (0, bound + 1) if bound + 1 < (1 << bound.bit_length()) else (0,):
            dims = {"m": 2, "k": 2, "n": 2, dim: value}
            bad.append(Descriptor(0, m.rows, p, dims["m"], dims["k"], dims["n"]))
    ops = bad + random_ops(tb.rng, m, 2)
    for d in ops:
        g0.play(d)
    await tb.finish(budget(m, ops))
    await campaign(tb, 10, bad=0.4)
    assert any(g.board.checked for g in tb.groups)


@cocotb.test()
async def extremes_at_max_k(dut):
    """K = max_k with the most negative values in A and B (the largest sum) and mixed signs:
    the full-width lanes must not wrap; requantization saturates."""
    tb = RMMUBench(dut, gaps=0.1, stalls=0.1)
    await tb.start()
    unit, g0 = tb.unit, tb.groups[0]
    k = unit.max_k if unit.rows * unit.cols <= 64 else min(unit.max_k, 256)
    for p in ([Precision.FX16, Precision.INT2] if unit.rows * unit.cols > 64 else Precision):
        lo, hi = value_range(p.bits)
        n = min(unit.cols * p.lanes, unit.max_n)
        for a_val, b_val, requant in [(lo, lo, False), (lo, hi, False), (lo, lo, True)]:
            desc = Descriptor(0, unit.rows, p, 2, k, n, requant, p, 0)
            g0.play(desc, np.full((2, k), a_val), np.full((k, n), b_val))
    await tb.finish(40 * k + 4000)


@cocotb.test()
async def reset_mid_operation(dut):
    """Reset while an operation is loading and computing: afterwards no beat is left over and
    new operations run from a clean state. The bench's reset flushes the sources and the
    scoreboards (the expected beats of the interrupted operation are dropped)."""
    tb = RMMUBench(dut, gaps=0, stalls=0.5)
    await tb.start()
    await tb.reset()                    # a reset of the idle unit changes nothing
    unit, g0 = tb.unit, tb.groups[0]
    desc = Descriptor(0, unit.rows, Precision.INT4, unit.tile_m + 1, 3 * unit.rows * 4, 3)
    g0.play(desc)
    while len(g0.a.accept_times) < 5:
        await RisingEdge(dut.clk)
    await tb.reset()
    await ClockCycles(dut.clk, 3)
    assert not int(dut.g__0__o__valid.value), "a result survived the reset"
    await tb.reset_while_busy(lambda: [g0.play(d) for d in random_ops(tb.rng, tb.model, 3)])
    ops = random_ops(tb.rng, tb.model, 4, group=0)
    for d in ops:
        g0.play(d)
    await tb.finish(budget(tb.model, ops))


@cocotb.test()
async def rows_from_every_group(dut):
    """Every group drives every PE row in every precision with full tiles (K = one pass over
    all rows, N = every column), first with random operands, then with their bitwise
    complements (``~x = -1 - x``; activations never 0 or -1, so every weight bit changes a
    result): each bit of each PE row's input -- weights and activations, which the RMMU
    multiplexes from the group holding the row -- is driven both 0 and 1 from every group.
    Random campaigns give a group the other groups' rows only now and then."""
    tb = RMMUBench(dut, gaps=0.1, stalls=0.1)
    await tb.start()
    u = tb.unit
    if u.rows * u.cols > 64:
        dut._log.info("large array: the row crossbar is exercised by the small builds")
        return
    ops = []
    for grp in tb.groups:
        for p in Precision:
            lo, hi = value_range(p.bits)
            k, n = min(u.rows * p.lanes, u.max_k), min(u.cols * p.lanes, u.max_n)
            desc = Descriptor(0, u.rows, p, 2, k, n)
            a = np.array([[_draw(tb.rng, lo, hi, (0, -1)) for _ in range(k)]
                          for _ in range(2)])
            b = np.array([[tb.rng.randint(lo, hi) for _ in range(n)] for _ in range(k)])
            for x, y in ((a, b), (-1 - a, -1 - b)):
                grp.play(desc, x, y)
                ops.append(desc)
    await tb.finish(budget(tb.model, ops) * len(tb.groups))


def _draw(rng, lo, hi, avoid):
    """A uniform integer in ``[lo, hi]`` not in ``avoid``."""
    while True:
        v = rng.randint(lo, hi)
        if v not in avoid:
            return v


def gemm_terms(x, bits, max_k):
    """``(a, b)``: at most ``max_k`` pairs of signed ``bits``-bit values with
    ``sum(a_i * b_i) == x``, or None when ``x`` needs more terms."""
    lo, hi = value_range(bits)
    a, b, t = [], [], int(x)
    while not lo <= t <= hi and len(a) < max_k - 1:
        q = max(lo, min(hi, -(-t // lo) if t < 0 else t // lo))
        if q == 0:
            return None
        a.append(lo)
        b.append(q)
        t -= lo * q
    if not lo <= t <= hi:
        return None
    return a + [1], b + [t]


@cocotb.test()
async def requant_vectors(dut):
    """Each :data:`KILL_LANE_VECTORS` accumulator ``x`` made by a 1 x K x 1 FX16 GEMM on group
    0 and requantized to ``out_fmt`` by ``shift``: lane values on which the output lane's
    rounding and saturation must be exact."""
    tb = RMMUBench(dut, gaps=0.1, stalls=0.1)
    await tb.start()
    u, g0, ops = tb.unit, tb.groups[0], []
    for x, fmt, shift in KILL_LANE_VECTORS:
        terms = gemm_terms(x, Precision.FX16.bits, u.max_k)
        if terms is None:
            continue
        a, b = terms
        desc = Descriptor(0, u.rows, Precision.FX16, 1, len(a), 1, True, fmt, shift)
        g0.play(desc, np.array([a]), np.array(b).reshape(-1, 1))
        ops.append(desc)
    await tb.finish(budget(tb.model, ops))
    dut._log.info("played %d of %d lane vectors", len(ops), len(KILL_LANE_VECTORS))


#: Environment variable with the utilization runs a benchmark asks for (JSON list of runs,
#: each a list of operations ``{"group", "row0", "nrows", "precision", "m", "k", "n"}``).
BENCH_ENV = "ATTNFORGE_RMMU_BENCH"


def default_runs(unit):
    """Small utilization runs for the regression: each precision on all rows, and a mixed run
    (an INT2 estimate on a quarter of the rows beside FX16 on the rest) when groups >= 2."""
    runs = []
    for p in Precision:
        for k in (64, 256):
            if k <= unit.max_k:
                runs.append([{"group": 0, "row0": 0, "nrows": unit.rows, "precision": p.name,
                              "m": min(2 * unit.tile_m, unit.max_m), "k": k,
                              "n": min(unit.cols * p.lanes, unit.max_n)}])
    if unit.groups >= 2 and unit.rows >= 2:
        split = max(1, unit.rows // 4)
        runs.append([
            {"group": 0, "row0": 0, "nrows": split, "precision": "INT2",
             "m": min(2 * unit.tile_m, unit.max_m), "k": min(8 * split, unit.max_k),
             "n": min(unit.cols * 8, unit.max_n)},
            {"group": 1, "row0": split, "nrows": unit.rows - split, "precision": "FX16",
             "m": min(2 * unit.tile_m, unit.max_m), "k": min(4 * (unit.rows - split), unit.max_k),
             "n": min(unit.cols, unit.max_n)}])
    return runs


@cocotb.test()
async def utilization(dut):
    """No gaps, no stalls: cycles from the first descriptor accepted to the last result, for
    GEMMs on all rows per precision and for concurrent groups. Utilization = useful MACs /
    (cycles x peak MACs of the rows in use). Results are checked as everywhere else; the
    figures go to the benchmark report (``ATTNFORGE_RMMU_BENCH`` selects the runs)."""
    import json
    import os
    tb = RMMUBench(dut, gaps=0, stalls=0)
    await tb.start()
    unit, benches = tb.unit, tb.groups
    runs = json.loads(os.environ[BENCH_ENV]) if BENCH_ENV in os.environ else default_runs(unit)
    figures = []
    for ops in runs:
        descs = []
        firsts = []
        for op in ops:
            grp = benches[op["group"]]
            desc = Descriptor(op["row0"], op["nrows"], Precision[op["precision"]], op["m"],
                              op["k"], op["n"])
            firsts.append((grp, len(grp.cmd.accept_times)))
            grp.play(desc)
            descs.append(desc)
        await tb.finish(budget(tb.model, descs))
        t1 = cocotb.utils.get_sim_time("ns")
        t0 = min(grp.cmd.accept_times[i] for grp, i in firsts)
        cycles = int((t1 - t0) / 10)
        useful = sum(benches[0].model.useful_macs(d) for d in descs)
        peak = sum(peak_macs(d.nrows, unit.cols, d.precision) for d in descs)
        util = useful / (cycles * peak)
        label = " + ".join(f"{Precision(d.precision).name} rows {d.row0}-{d.row0 + d.nrows - 1}"
                           f" M={d.m} K={d.k} N={d.n}" for d in descs)
        dut._log.info("%s: %d cycles, utilization %.3f", label, cycles, util)
        figures.append({"ops": ops, "cycles": cycles, "useful_macs": useful,
                        "peak_macs_per_cycle": peak, "utilization": util})
    tb.figures({"rows": unit.rows, "cols": unit.cols, "tile_m": unit.tile_m, "runs": figures})
