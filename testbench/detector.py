"""cocotb testbench of the detector + lane scheduler, checked against
:class:`attnforge.golden.detector.DetectorModel`.

Stimulus is a timing-free list of operations ``(Command, scores)``; the golden model turns it
into the expected ``mask`` and ``idx`` beats; the drivers put commands and score beats on
``cmd`` and ``i`` with random gaps while the monitors take ``mask`` and ``idx`` under random
stalls, and two scoreboards check every beat in order. :func:`random_ops`,
:func:`expected_beats`, the comparators and :func:`simulate` (the same check in the Amaranth
simulator, with the drivers of :mod:`attnforge.testbench.quick`) serve the quick tests
(``tests/test_detector.py``) and the benchmark (``benchmarks/detector.py``).
"""

import random

import cocotb
from cocotb.triggers import ClockCycles

from ..golden.detector import Command, DetectorModel, Gran, Mode
from ..golden.numbers import value_range
from ..rtl.detector import cmd_layout, idx_layout, mask_layout, score_layout
from . import quick
from .kit import Bench, scale

__all__ = ["model_of", "random_ops", "bad_ops", "cmd_fields", "expected_beats",
           "compare_mask", "compare_idx", "simulate", "declare_command_coverage",
           "cover_command", "DetectorBench"]

#: The quick subset a mutant run uses (``make mutants``).
MUTANT_TESTS = ("random_all", "corners_every_granularity", "reset_mid_stream")

#: Command classes: good, or the reason a command is bad (:func:`command_class`).
COMMANDS = ("good", "bad gran", "length 0", "length > max_len", "k = 0", "k > G")


def model_of(unit):
    """The golden model configured like the generator object ``unit`` (or a component with
    the same properties)."""
    return DetectorModel(per_beat=unit.per_beat, max_len=unit.max_len,
                         score_bits=unit.score_bits, sched_lanes=unit.sched_lanes)


def _scores(rng, bits, shape, style):
    lo, hi = value_range(bits)
    r, n = shape
    if style == "ties":                      # few distinct values: ties everywhere
        vals = sorted({rng.randint(lo, hi) for _ in range(2)} | {lo, hi})
        return [[rng.choice(vals) for _ in range(n)] for _ in range(r)]
    if style == "flat":
        v = rng.choice((lo, hi, 0, -1))
        return [[v] * n for _ in range(r)]
    edges = (lo, hi, 0, -1, 1 if hi >= 1 else 0)
    return [[rng.choice(edges) if rng.random() < 0.3 else rng.randint(lo, hi) for _ in range(n)]
            for _ in range(r)]


def random_ops(rng, model, n, *, grans=tuple(Gran), modes=tuple(Mode), bad_p=0.0,
               restart_p=0.05, lengths=None):
    """``n`` random good operations (and bad ones with probability ``bad_p``).

    Lengths mix rows shorter than P, a full ``max_len`` and uniform draws; scores mix uniform,
    corner, few-valued (ties) and constant rows; thresholds hit "keep all" (most negative),
    "keep none" (most positive + 1), a value present in the row (ties at the threshold) and
    any value of the field; k hits 1, G and uniform draws.
    """
    b, N, P = model.score_bits, model.max_len, model.per_beat
    ops = []
    for _ in range(n):
        if rng.random() < bad_p:
            ops.append(bad_ops(rng, model, 1)[0])
            continue
        gran = Gran(rng.choice(grans))
        if lengths:
            length = rng.choice(lengths)
        else:
            length = rng.choice([rng.randint(1, P), N, rng.randint(1, N), rng.randint(1, N)])
        style = rng.choice(["uniform", "uniform", "ties", "flat"])
        s = _scores(rng, b, (gran.rows, length), style)
        mode = Mode(rng.choice(modes))
        g = -(-length // gran.cols)
        lo, hi = value_range(b)
        flat = [x for r in s for x in r]
        thr = rng.choice([lo, hi + 1, rng.choice(flat), rng.choice(flat),
                          rng.randint(lo, hi), rng.randint(-(1 << b), (1 << b) - 1)])
        k = rng.choice([1, g, rng.randint(1, g), rng.randint(1, g)])
        ops.append((Command(mode=mode, gran=gran, length=length, threshold=thr, k=k,
                            restart=rng.random() < restart_p), s))
    return ops


def bad_ops(rng, model, n):
    """``n`` bad requests: gran code 6/7, length 0 or > max_len, top-k with k 0 or > G."""
    N = model.max_len
    field_max = (1 << N.bit_length()) - 1
    ops = []
    for _ in range(n):
        kind = rng.randrange(5)
        length = rng.randint(1, N)
        cmd = Command(mode=rng.choice(tuple(Mode)), gran=rng.choice(tuple(Gran)), length=length,
                      threshold=rng.randint(-(1 << model.score_bits), (1 << model.score_bits) - 1),
                      k=rng.randint(0, field_max), restart=rng.random() < 0.1)
        if kind == 0:
            cmd = Command(**{**cmd.__dict__, "gran": rng.choice((6, 7))})
        elif kind == 1:
            cmd = Command(**{**cmd.__dict__, "length": 0})
        elif kind == 2:
            cmd = Command(**{**cmd.__dict__, "length": rng.randint(N + 1, field_max)})
        else:
            g = -(-length // Gran(cmd.gran).cols)
            k = 0 if kind == 3 else rng.randint(g + 1, field_max)
            cmd = Command(**{**cmd.__dict__, "mode": Mode.TOPK, "k": k})
        ops.append((cmd, None))
    return ops


def command_class(cmd, max_len):
    """Which of :data:`COMMANDS` ``cmd`` is (the contract's checks, in the hardware's order)."""
    if int(cmd.gran) not in tuple(Gran):
        return "bad gran"
    if cmd.length == 0:
        return "length 0"
    if cmd.length > max_len:
        return "length > max_len"
    if int(cmd.mode) == Mode.TOPK:
        g = -(-cmd.length // Gran(cmd.gran).cols)
        if cmd.k == 0:
            return "k = 0"
        if cmd.k > g:
            return "k > G"
    return "good"


def declare_command_coverage(bench, model):
    """Functional coverage of the detector's command contract on ``bench`` (a
    :class:`~attnforge.testbench.kit.Bench`; shared by the detector and the sparse softmax):
    command classes, mode x granularity, row length (1, under one beat, between, max_len),
    threshold classes (keep all, keep none, a tie with a score, other), top-k k (1, G,
    between) and scheduler restarts. Sample with :func:`cover_command`."""
    bench.coverpoint("command", COMMANDS)
    bench.coverpoint("mode_gran", [(m.name, g.name) for m in Mode for g in Gran])
    bench.coverpoint("length", ["1"] + (["under a beat"] if model.per_beat > 2 else [])
                     + ["between", "max"])
    bench.coverpoint("threshold", ["keep all", "keep none", "tie", "other"])
    bench.coverpoint("topk_k", ["1", "G", "between"])
    bench.coverpoint("restart", [0, 1])


def cover_command(bench, model, cmd, scores):
    """Sample one command (and its scores) into :func:`declare_command_coverage`'s bins."""
    what = command_class(cmd, model.max_len)
    bench.cover("command", what)
    if what != "good":
        return
    n, P = cmd.length, model.per_beat
    bench.cover("mode_gran", (Mode(cmd.mode).name, Gran(cmd.gran).name))
    bench.cover("length", "1" if n == 1 else "max" if n == model.max_len else
                "under a beat" if n < P else "between")
    bench.cover("restart", int(cmd.restart))
    if int(cmd.mode) == Mode.TOPK:
        g = -(-n // Gran(cmd.gran).cols)
        bench.cover("topk_k", "1" if cmd.k == 1 else "G" if cmd.k == g else "between")
    else:
        lo, hi = value_range(model.score_bits)
        flat = {x for r in scores for x in r}
        bench.cover("threshold", "keep all" if cmd.threshold <= lo else
                    "keep none" if cmd.threshold > hi else
                    "tie" if cmd.threshold in flat else "other")


def cmd_fields(cmd):
    return {"mode": int(cmd.mode), "gran": int(cmd.gran), "length": cmd.length,
            "threshold": cmd.threshold, "k": cmd.k, "restart": int(cmd.restart)}


def expected_beats(model, ops, rng=None):
    """``(cmd payloads, score payloads, mask beats, idx beats)`` for ``ops``."""
    lo, hi = value_range(model.score_bits)
    fill = (lambda n: [rng.randint(lo, hi) for _ in range(n)]) if rng else None
    results = model.run(ops)
    cmds = [cmd_fields(c) for c, _ in ops]
    beats = [{"scores": b} for c, s in ops for b in model.input_beats(c, s, fill)]
    masks = [{"mask": r["mask"], "count": r["count"], "lane": r["lane"], "error": r["error"]}
             for r in results]
    idx = [b for r in results for b in model.idx_beats(r)]
    return cmds, beats, masks, idx


def mask_fields(actual):
    """A ``mask`` payload (cocotb view or Amaranth constant) as the model's dict."""
    return {"mask": int(actual["mask"]), "count": int(actual["count"]),
            "lane": int(actual["lane"]), "error": bool(actual["error"])}


def idx_fields(actual):
    """An ``idx`` payload (cocotb view or Amaranth constant) as the model's dict."""
    return {"index": [int(x) for x in actual["index"]], "data": [int(x) for x in actual["data"]],
            "count": int(actual["count"]), "lane": int(actual["lane"]),
            "last": bool(actual["last"]), "error": bool(actual["error"])}


def compare_mask(expected, actual):
    got = mask_fields(actual)
    return None if got == expected else f"expected {expected}, got {got}"


def compare_idx(expected, actual):
    got = idx_fields(actual)
    return None if got == expected else f"expected {expected}, got {got}"


def simulate(dut, ops, seed=0, *, gaps=0.0, stalls=0.0, max_cycles=None):
    """Run ``ops`` through ``dut`` in the Amaranth simulator: :mod:`~attnforge.testbench.quick`
    drivers with random gaps on ``cmd`` and ``i`` and stalls on ``mask`` and ``idx``; after the
    last expected beat, 5 more cycles in which no output may be valid.

    Returns a dict: ``masks`` / ``idx`` (expected), ``got_masks`` / ``got_idx`` (observed, as
    the model's dicts), ``takes`` (cycles in which a score beat was taken), ``idx_valid``
    (cycles in which ``idx`` was valid), ``cycles`` (total)."""
    rng = random.Random(seed)
    cmds, beats, masks, idx = expected_beats(model_of(dut), ops, rng)
    out = {"masks": masks, "idx": idx, "got_masks": [], "got_idx": [], "takes": [],
           "idx_valid": [], "cycles": 0}
    limit = max_cycles or 40 * (len(beats) + len(ops)) + 500

    async def watch(ctx):
        cycle = 0
        while len(out["got_masks"]) < len(masks) or len(out["got_idx"]) < len(idx):
            _, _, take, valid = await ctx.tick().sample(dut.i.valid & dut.i.ready,
                                                        dut.idx.valid)
            if take:
                out["takes"].append(cycle)
            if valid:
                out["idx_valid"].append(cycle)
            cycle += 1
            assert cycle < limit, f"detector simulation: timeout after {cycle} cycles"
        out["cycles"] = cycle
        for _ in range(5):                      # nothing extra may follow
            _, _, mv, iv = await ctx.tick().sample(dut.mask.valid, dut.idx.valid)
            assert not mv and not iv, "an output beat beyond the expected ones"

    from amaranth.sim import Simulator
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(quick.source(dut.cmd, cmds, rng, gaps))
    sim.add_testbench(quick.source(dut.i, beats, rng, gaps))
    sim.add_testbench(quick.sink(dut.mask, out["got_masks"], len(masks), rng, stalls,
                                 mask_fields))
    sim.add_testbench(quick.sink(dut.idx, out["got_idx"], len(idx), rng, stalls, idx_fields))
    sim.add_testbench(watch)
    sim.run()
    return out


class DetectorBench(Bench):
    """Drivers, monitors and scoreboards around the detector.

    The scheduler's state (lane loads) spans operations, so the bench keeps every operation
    since the last reset and expects what the model gives for the ones :meth:`play` adds; a
    reset (:meth:`Bench.reset`) starts a fresh list (:meth:`on_reset`).
    """

    def __init__(self, dut, *, gaps=0.3, stalls=0.3):
        super().__init__(dut, "detector", gaps=gaps, stalls=stalls)
        u = self.unit
        self.model = model_of(u)
        self.cmd = self.source("cmd", cmd_layout(u.max_len, u.score_bits))
        self.i = self.source("i", score_layout(u.per_beat, u.score_bits))
        self.mask, self.masks = self.sink("mask", mask_layout(u.max_len, u.sched_lanes),
                                          compare_mask, callback=lambda v: self.cover(
                                              "mask_lane", (int(v.lane), int(v.error))))
        self.idx, self.idxs = self.sink(
            "idx", idx_layout(u.per_beat, u.max_len, u.score_bits, u.sched_lanes), compare_idx,
            callback=self._cover_idx)
        declare_command_coverage(self, self.model)
        # Outputs: every scheduler lane with and without error; idx beats by count class and
        # last (an empty beat is always a row's last: words without a kept granule are
        # skipped, except the final one).
        self.coverpoint("mask_lane", [(lane, e) for lane in range(u.sched_lanes)
                                      for e in (0, 1)])
        self.coverpoint("idx_beat", [(c, l) for c in ("empty", "partial", "full")
                                     for l in (0, 1) if (c, l) != ("empty", 0)])
        self.on_reset()

    def _cover_idx(self, v):
        n = int(v.count)
        self.cover("idx_beat", ("empty" if n == 0 else "full" if n == self.unit.per_beat
                                else "partial", int(v.last)))

    def on_reset(self):
        """The reset cleared the lane loads: expectations restart from an empty history."""
        self.ops, self.n_masks, self.n_idx, self.beats = [], 0, 0, 0

    def play(self, ops):
        """Queue ``ops`` after the current ones and expect their results; returns the number
        of score beats queued."""
        self.ops += ops
        for cmd, scores in ops:
            cover_command(self, self.model, cmd, scores)
        _, _, masks, idx = expected_beats(self.model, self.ops)
        self.masks.expect_all(masks[self.n_masks:])
        self.idxs.expect_all(idx[self.n_idx:])
        self.n_masks, self.n_idx = len(masks), len(idx)
        cmds, beats, _, _ = expected_beats(self.model, ops, self.rng)
        self.cmd.send_all(cmds)
        self.i.send_all(beats)
        self.beats += len(beats)
        return len(beats)

    async def finish(self):
        await super().finish(20 * self.beats + 60 * len(self.ops) + 200)


@cocotb.test()
async def random_all(dut):
    """Random rows in every mode and granularity (short, full, ties, constant), a few bad
    requests and scheduler restarts, random gaps on both inputs and stalls on both outputs."""
    tb = DetectorBench(dut)
    await tb.start()
    tb.play(random_ops(tb.rng, tb.model, scale(400), bad_p=0.05))
    await tb.finish()
    dut._log.info("checked %d rows, %d idx beats", tb.masks.checked, tb.idxs.checked)


@cocotb.test()
async def corners_every_granularity(dut):
    """Per granularity and mode: all-kept and none-kept rows, ties at the threshold, top-k
    among equal scores (lower index wins), rows shorter than P and of exactly max_len."""
    tb = DetectorBench(dut, gaps=0.2, stalls=0.2)
    await tb.start()
    m = tb.model
    lo, hi = value_range(m.score_bits)
    ops = []
    for gran in Gran:
        for length in sorted({1, max(1, m.per_beat - 1), m.per_beat, m.max_len,
                              min(m.max_len, gran.cols + 1)}):
            g = -(-length // gran.cols)
            rows = lambda v: [[v] * length for _ in range(gran.rows)]  # noqa: E731
            rnd = [[tb.rng.randint(lo, hi) for _ in range(length)] for _ in range(gran.rows)]
            ops += [(Command(gran=gran, length=length, threshold=lo), rnd),          # all kept
                    (Command(gran=gran, length=length, threshold=hi + 1), rnd),      # none
                    (Command(gran=gran, length=length, threshold=-(1 << m.score_bits)), rnd),
                    (Command(gran=gran, length=length, threshold=3 % (hi + 1)),
                     rows(3 % (hi + 1))),                                            # ties
                    (Command(mode=Mode.TOPK, gran=gran, length=length, k=1), rows(lo)),
                    (Command(mode=Mode.TOPK, gran=gran, length=length, k=g), rnd),
                    (Command(mode=Mode.TOPK, gran=gran, length=length,
                             k=max(1, g // 2)), rows(hi))]
    tb.play(ops)
    await tb.finish()


@cocotb.test()
async def bad_requests(dut):
    """Every kind of bad command, between good ones: an error row (mask and idx), no beats
    consumed."""
    tb = DetectorBench(dut)
    await tb.start()
    ops = []
    for _ in range(30):
        ops += bad_ops(tb.rng, tb.model, tb.rng.randint(1, 3))
        ops += random_ops(tb.rng, tb.model, tb.rng.randint(0, 2))
    tb.play(ops)
    await tb.finish()
    assert sum(e["error"] for e in tb.masks.expected) >= 30
    assert sum(e["error"] for e in tb.idxs.expected) >= 30


@cocotb.test()
async def reset_mid_stream(dut):
    """Reset with a row half received and lanes loaded, with commands queued and with results
    owed: nothing survives, loads restart."""
    tb = DetectorBench(dut, gaps=0.1, stalls=0.1)
    await tb.start()
    tb.play(random_ops(tb.rng, tb.model, 20))
    await tb.finish()
    m = tb.model
    tb.cmd.send(cmd_fields(Command(gran=Gran.ELEM, length=m.max_len)))
    tb.i.send({"scores": [0] * m.per_beat})
    await tb.drain_inputs()
    await ClockCycles(dut.clk, 3)
    await tb.reset()
    await ClockCycles(dut.clk, 2)
    assert not dut.mask__valid.value and not dut.idx__valid.value, "a result survived reset"
    await tb.reset_while_busy(lambda: tb.play(random_ops(tb.rng, tb.model, 8)))
    tb.play(random_ops(tb.rng, tb.model, 60, bad_p=0.05, restart_p=0))
    await tb.finish()


@cocotb.test()
async def throughput(dut):
    """Without gaps or stalls, threshold rows of one length stream at P scores per cycle with
    no bubble between rows (every beat accepted in consecutive cycles); top-k rows cost at
    most score_bits + 1 extra cycles each."""
    tb = DetectorBench(dut, gaps=0, stalls=0)
    await tb.start()
    m = tb.model
    figures = {}
    for mode, grans, slack in [(Mode.THRESHOLD, (Gran.ELEM, Gran.VEC4, Gran.BLK8), 0),
                               (Mode.TOPK, (Gran.ELEM,), tb.unit.topk_cycles)]:
        ops = random_ops(tb.rng, m, 40, grans=grans, modes=(mode,), restart_p=0,
                         lengths=[m.max_len - 1])
        first = len(tb.i.accept_times)
        beats = tb.play(ops)
        await tb.finish()
        times = tb.i.accept_times[first:]
        cycles = (times[-1] - times[0]) / 10 + 1
        rows = len(ops)
        dut._log.info("%s: %d beats (%d scores/beat) in %d cycles", mode.name, beats,
                      m.per_beat, cycles)
        assert len(times) == beats
        assert cycles <= beats + slack * rows, (cycles, beats, rows)
        figures[mode.name] = {"beats": beats, "cycles": int(cycles), "rows": rows}
    tb.figures(figures)
