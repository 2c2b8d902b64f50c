"""cocotb testbench of the multi-precision MAC and its baselines (``mac``, ``mac_fx16``,
``mac_separate``), checked against :class:`attnforge.golden.mac.MACModel`.

The stimulus is generated first as a timing-free program (weight tiles in load order, activation
words in order); the golden model turns it into the expected results; then the drivers put it
on ``w`` and ``a`` with random gaps while the monitor takes ``o`` under random stalls, and the
scoreboard checks every result in order.
"""

import cocotb
from cocotb.triggers import ClockCycles

from ..golden.mac import MACModel, TILE_ROWS, Word
from ..golden.numbers import Precision, pack as pack_lanes, unpack as unpack_lanes
from ..rtl.mac import act_layout, result_layout, weight_layout
from .kit import Bench, corner_ints, scale, size_bin

#: The tests a mutant run uses (``make mutants``): all but the throughput measurement (the
#: Verilator build of the mutant, not the seconds of simulation, dominates a mutant's cost).
MUTANT_TESTS = ("random_all_modes", "extremes_at_max_depth", "error_flag", "reset_mid_stream",
                "datapath_vectors")

#: Datapath operands that tell mutants of the digit-fusion tree apart from the original
#: (``(mode, act, rows)``: the activation word and the 8 raw tile rows, row i at bits
#: 16i..16i+15), as Yosys ``sat`` found them (attnforge.testbench.mutants.counterexample,
#: whose input ``port`` is mode << 16 | act) for the datapath mutants of ``MUTANTS=8
#: MUTANT_SEED=1 make mutants UNITS=mac``. Add the vector of any survivor here.
KILL_VECTORS = (
    (2, 0xfdba, 0x60a0087100b06f0b2fcc6c0bd03eb93b),
    (0, 0x24ea, 0x2f1a9b537422661502f89241d5364c7d),
    (3, 0x6adf, 0xc59c00a186629056f7a55d29000086ba),
    (3, 0xd17a, 0x8f809724c9014008af999d840dc98780),
    (0, 0xc374, 0x810029110c0096ea4ebd6d80b07bcbec),
    (0, 0xbcd3, 0x0d9007553020036002008a0b4c79c63f),
    (0, 0x5d38, 0x5575000050b30000040000008f4af5db),
)

#: Operand corner classes of a lane value (:func:`corner_of`).
CORNERS = ("min", "max", "zero", "minus one")


def corner_of(value, mode):
    """The corner class of a signed lane value of ``mode`` (None for an ordinary value)."""
    lo = -(1 << (mode.bits - 1))
    return {lo: "min", -lo - 1: "max", 0: "zero", -1: "minus one"}.get(value)


def random_word(rng, mode, corner=0.3):
    """An activation/weight word of ``mode`` with corner values (min, max, 0, +-1) mixed in."""
    return int(pack_lanes(corner_ints(rng, mode.bits, mode.lanes, corner), mode))


def lane_values(word, mode):
    """The signed lane values of a packed 16-bit word of ``mode``."""
    return [int(x) for x in unpack_lanes(word, mode)]


def random_program(rng, dut_modes, n_packets, max_len, *, swap_p=0.15, mode=None):
    """Random tiles and packets: ``(tiles, words)`` for :meth:`MACModel.run`."""
    tiles, words = [], []
    for _ in range(n_packets):
        pmode = mode or rng.choice(dut_modes)
        length = rng.randint(1, max_len)
        for k in range(length):
            swap = rng.random() < swap_p
            if swap:
                # short tiles, and long ones: rows past the 8th are ignored
                rows = rng.randint(1, TILE_ROWS + 2) if rng.random() < 0.3 else pmode.lanes
                tiles.append([random_word(rng, pmode) for _ in range(rows)])
            # Fields of non-first words are ignored by contract: randomize them to prove it.
            words.append(Word(data=random_word(rng, pmode),
                              mode=pmode if k == 0 else rng.choice(dut_modes),
                              requant=rng.random() < 0.5, swap=swap, last=k == length - 1))
    return tiles, words


def compare(expected, actual):
    got = {"mode": Precision(int(actual.mode)), "lanes": [int(x) for x in actual.lanes],
           "error": bool(actual.error), "requant": bool(actual.requant)}
    return None if got == expected else f"expected {expected}, got {got}"


class MACBench(Bench):
    """Drivers, monitor and scoreboard around one MAC-like DUT.

    The model is timing-free and stateful only through the program so far (which tile is
    active), so the bench keeps the whole program since the last reset and expects the results
    the model gives for what :meth:`play` adds.
    """

    def __init__(self, dut, *, gaps=0.3, stalls=0.3):
        super().__init__(dut, "mac", gaps=gaps, stalls=stalls)
        self.model = MACModel(frac_bits=self.unit.frac_bits, max_depth=self.unit.max_depth,
                              modes=self.unit.modes)
        self.a = self.source("a", act_layout())
        self.w = self.source("w", weight_layout())
        self.o, self.board = self.sink("o", result_layout(self.unit.acc_bits), compare,
                                       callback=self._covered)
        self._declare_coverage()
        self.on_reset()

    def _declare_coverage(self):
        """Bins of the PE's contract, built from the unit's modes and ``max_depth``."""
        modes = self.unit.modes
        # The error bins exist where the bench reaches them (packets over max_depth are sent
        # only when max_depth <= 64: error_flag), likewise packets of exactly max_depth.
        small = self.unit.max_depth <= 64
        self.coverpoint("mode_requant_error", [(m.name, r, e) for m in modes for r in (0, 1)
                                               for e in ((0, 1) if small else (0,))])
        self.coverpoint("packet_length", [(m.name, b) for m in modes for b in
                                          ("1", "between") + (("max", "over max") if small
                                                              else ())])
        self.coverpoint("act_corner", [(m.name, c) for m in modes for c in CORNERS])
        self.coverpoint("weight_corner", [(m.name, c) for m in modes for c in CORNERS])
        self.coverpoint("weight_swap", [(m.name, t) for m in modes
                                        for t in ("full tile", "other tile")])
        # A requantized lane at the mode's bound: saturation (or an exact extreme value).
        self.coverpoint("requant_at_bound", [(m.name, c) for m in modes
                                             for c in ("min", "max")])

    def _covered(self, v):
        mode = Precision(int(v.mode))
        self.cover("mode_requant_error", (mode.name, int(v.requant), int(v.error)))
        if v.requant:
            for x in set(int(x) for x in v.lanes[:mode.lanes]):
                c = corner_of(x, mode)
                if c in ("min", "max"):
                    self.cover("requant_at_bound", (mode.name, c))

    def _cover_program(self, tiles, words):
        """Sample what a program asks for: packet lengths, operand corners, weight swaps."""
        mode, length, swaps = None, 0, 0
        for w in words:
            if length == 0:
                mode = w.mode
            length += 1
            for c in {corner_of(x, mode) for x in lane_values(w.data, mode)} - {None}:
                self.cover("act_corner", (mode.name, c))
            if w.swap:
                if swaps < len(tiles):
                    rows = tiles[swaps]
                    self.cover("weight_swap", (mode.name, "full tile" if len(rows) == mode.lanes
                                               else "other tile"))
                    for c in {corner_of(x, mode) for r in rows
                              for x in lane_values(r, mode)} - {None}:
                        self.cover("weight_corner", (mode.name, c))
                swaps += 1
            if w.last:
                self.cover("packet_length", (mode.name, size_bin(length, self.unit.max_depth)))
                length = 0

    def on_reset(self):
        """Start a fresh program: the reset PE has an all-zero tile and nothing in flight."""
        self.tiles, self.words, self.expected = [], [], 0

    def play(self, tiles, words):
        """Queue a program continuing the current one, and expect its results."""
        self.tiles += tiles
        self.words += words
        results = self.model.run(self.tiles, self.words)
        self.board.expect_all(results[self.expected:])
        self.expected = len(results)
        self._cover_program(tiles, words)
        for rows in tiles:
            self.w.send_all({"data": r, "last": i == len(rows) - 1} for i, r in enumerate(rows))
        self.a.send_all({"data": w.data, "mode": w.mode, "requant": w.requant,
                         "swap": w.swap, "last": w.last} for w in words)

    async def finish(self):
        await super().finish(40 * len(self.words) + 200)


@cocotb.test()
async def random_all_modes(dut):
    """Thousands of random packets per mode, mode changes, weight reloads, gaps and stalls."""
    tb = MACBench(dut)
    await tb.start()
    tiles, words = random_program(tb.rng, tb.unit.modes, scale(1500 * len(tb.unit.modes)),
                                  min(tb.unit.max_depth, 6))
    tb.play(tiles, words)
    await tb.finish()
    dut._log.info("checked %d results from %d words", tb.board.checked, len(words))


@cocotb.test()
async def extremes_at_max_depth(dut):
    """Packets of exactly max_depth words of the most negative / most positive values:
    the accumulators reach their bound without wrapping, requantization saturates."""
    tb = MACBench(dut, gaps=0.1, stalls=0.1)
    await tb.start()
    depth = min(tb.unit.max_depth, 64)
    tiles, words = [], []
    for mode in tb.unit.modes:
        lo, hi = -(1 << (mode.bits - 1)), (1 << (mode.bits - 1)) - 1
        for a_val, w_val in [(lo, lo), (lo, hi), (hi, hi), (0, lo), (-1, lo)]:
            tiles.append([int(pack_lanes([w_val] * mode.lanes, mode))] * mode.lanes)
            for requant in (False, True):
                for k in range(depth):
                    words.append(Word(data=int(pack_lanes([a_val] * mode.lanes, mode)),
                                      mode=mode, requant=requant,
                                      swap=(k == 0 and not requant), last=k == depth - 1))
    tb.play(tiles, words)
    await tb.finish()
    exp = tb.model.run(tiles, words)
    assert not any(r["error"] for r in exp)


@cocotb.test()
async def error_flag(dut):
    """Packets longer than max_depth set ``error`` (lanes wrap as documented)."""
    tb = MACBench(dut)
    await tb.start()
    depth = tb.unit.max_depth
    if depth > 64:
        dut._log.info("max_depth %d: the error flag is exercised by the small-depth build", depth)
        return
    tiles, words = random_program(tb.rng, tb.unit.modes, 200, 2 * depth + 2)
    assert any(r["error"] for r in tb.model.run(tiles, words))
    tb.play(tiles, words)
    await tb.finish()


@cocotb.test()
async def reset_mid_stream(dut):
    """A reset in the middle of a packet and of a tile load returns the PE to its power-up
    state: all-zero weights, no packet open, nothing in flight."""
    tb = MACBench(dut, gaps=0, stalls=0)
    await tb.start()
    mode = tb.unit.modes[-1]
    tb.w.send_all([{"data": 0xFFFF, "last": 1}, {"data": 0x1234, "last": 0}])
    tb.a.send_all([{"data": 0x5555, "mode": mode, "requant": 0, "swap": 1, "last": 0},
                   {"data": 0x5555, "mode": mode, "requant": 0, "swap": 0, "last": 0}])
    await tb.drain_inputs()
    await tb.reset()
    await ClockCycles(dut.clk, 2)
    assert not dut.o__valid.value, "a result survived the reset"
    # First packets run on the reset (all-zero) tile, later ones on fresh tiles.
    tiles, words = random_program(tb.rng, tb.unit.modes, 50, 4, swap_p=0)
    tb.play(tiles, words)
    tiles, words = random_program(tb.rng, tb.unit.modes, 50, 4)
    tb.play(tiles, words)
    await tb.finish()
    # Resets with words still queued, then with the last results still in the pipeline.
    await tb.reset_while_busy(lambda: tb.play(*random_program(tb.rng, tb.unit.modes, 20, 4)),
                              12)
    tb.play(*random_program(tb.rng, tb.unit.modes, 20, 4, swap_p=0))
    await tb.finish()


@cocotb.test()
async def throughput(dut):
    """With no gaps and no stalls the PE takes one word per cycle in every mode (II = 1),
    i.e. 1, 4, 16, 64 MACs per cycle; results are checked as everywhere else."""
    tb = MACBench(dut, gaps=0, stalls=0)
    await tb.start()
    figures = {}
    for mode in tb.unit.modes:
        tiles, words = random_program(tb.rng, [mode], 64, 8, swap_p=0)
        tiles = [[random_word(tb.rng, mode) for _ in range(mode.lanes)]]
        words[0] = Word(**{**words[0].__dict__, "swap": True})
        first = len(tb.a.accept_times)
        tb.play(tiles, words)
        await tb.finish()
        times = tb.a.accept_times[first:]
        cycles = (times[-1] - times[0]) / 10 + 1
        dut._log.info("%s: %d words in %d cycles: %.2f MACs/cycle", mode.name, len(times),
                      cycles, mode.macs_per_word * len(times) / cycles)
        assert len(times) == len(words) and cycles == len(words), (len(times), cycles)
        figures[mode.name] = {"words": len(times), "cycles": int(cycles),
                              "macs_per_cycle": mode.macs_per_word * len(times) / cycles}
    tb.figures(figures)


@cocotb.test()
async def datapath_vectors(dut):
    """Directed datapath operands (:data:`KILL_VECTORS`, each a tile and a one-word packet,
    full-width and requantized): every lane of ``W @ a`` is compared."""
    tb = MACBench(dut, gaps=0.2, stalls=0.2)
    await tb.start()
    tiles, words = [], []
    for mode, act, rows in KILL_VECTORS:
        mode = Precision(mode)
        if mode not in tb.unit.modes:
            continue
        tiles.append([(rows >> (16 * i)) & 0xFFFF for i in range(TILE_ROWS)])
        for requant in (False, True):
            words.append(Word(data=act, mode=mode, requant=requant, swap=not requant,
                              last=True))
    tb.play(tiles, words)
    await tb.finish()
