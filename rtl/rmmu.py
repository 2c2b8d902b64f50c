"""RMMU: the reconfigurable PE array with row-wise precision (DESIGN.md 4.2, DOTA Sec. 6.2).

A ``rows x cols`` array of multi-precision PEs (the fused 2-bit-multiplier datapath of
:mod:`attnforge.rtl.mac`) computes GEMMs ``C = A @ B``. At run time the rows are split into
contiguous *row groups*, each running its own GEMM at its own precision (FX16, INT8, INT4 or
INT2) on its own set of ports, concurrently with the others: DOTA runs the INT2/INT4 score
estimate on a few rows while the rest compute FX16 attention. :mod:`attnforge.golden.rmmu` is
the contract (stream order, tiling, results); ``docs/rmmu.md`` draws the dataflow.

Dataflow: weight-stationary, systolic partial sums
-------------------------------------------------
PE ``(r, c)`` holds an ``n x n`` tile of ``B`` (``n = 16 / p``): ``n`` values of K times ``n``
values of N. Each cycle every PE row takes one 16-bit activation word -- ``n`` values of one row
of ``A`` -- broadcast to all ``cols`` PEs of the row; every PE adds its ``n`` products to the
``n`` partial sums coming from the PE above and registers them for the PE below. The partial sums
leaving the group's bottom row are a full pass over ``nrows * n`` values of K for ``cols * n``
columns of ``C``. Row ``r`` sees a word ``r + 1`` cycles after it was issued (a per-row skew
line), so the partial sums meet the right words on their way down. Passes over longer K add up
in the group's accumulator memory (``tile_m`` rows of full-width sums, M is processed in tiles of
``tile_m`` rows); the last pass sends ``C`` out, requantized or at full width.

Why weight-stationary: the multi-precision PE gets its quadratic speed-up from a *stationary*
``n x n`` tile (DOTA Fig. 16c: operands multiplied by pre-stored weights, summed inside the
multiplier), so the weights must stay while activations stream; an output-stationary array would
need a new tile -- ``n`` words -- per PE per cycle.

Weights are double-buffered: each PE has an active and a shadow tile. The loader writes one PE
row (all ``cols`` tiles) per ``w`` beat into the shadows; the first activation word of a pass
carries a *swap* that makes each row's shadow active exactly when that word reaches the row, so
loading the next pass overlaps the current one and passes follow each other without a bubble
whenever a pass has at least ``nrows + row0`` words (``M-tile >= nrows + row0``: the swap
wave counts from the array's row 0, so a group's row ``r`` frees its shadow ``row0 + r + 1``
cycles after the pass's first word; measured, tests/test_lane_l32.py; ``golden.lane.gemm_cycles``).

Timing
------
An operation is accepted on ``cmd`` when its group is idle and no other running group holds its
rows. The first word issues once ``nrows`` weight beats are loaded; then one ``a`` beat per
cycle. The output of a word appears ``row0 + nrows + 3`` cycles after it was issued (skew,
partial-sum registers, accumulator read, output register). A stalled ``o`` freezes its own group
only. Bad descriptors get one ``o`` beat with ``error`` (and ``last``) and consume nothing.

Structure
---------
Components all the way down, each with a signature built from the parameters
(:class:`Geometry`): per row group a :class:`Group` of :class:`Sequencer` (descriptor
sequencing), :class:`Loader` and :class:`Issuer` (operand loading and issue, each stepping a
:class:`TileLoops`), :class:`Accumulator` (tag line, bottom row, accumulator memory) and
:class:`ResultStage` (output lanes, ``o``); one :class:`PEArray` (skew lines, PEs). The group
streams are joined with ``wiring.connect``; :meth:`RMMU.elaborate` adds the row arbitration and
the per-row owner multiplexers.

Emission
--------
Through :func:`attnforge.rtl.emit` the PE is written once as a Verilog module (``EmitPlatform``)
and instantiated ``rows * cols`` times, so emitting and building the 512-PE default array takes
seconds; in the Amaranth simulator the PEs are ordinary submodules.
"""

from typing import NamedTuple

from amaranth.hdl import Cat, Const, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.numbers import WORD_BITS, Precision, acc_bits
from ..golden.rmmu import TILE_WORDS
from .emit import place
from .mac import FusedDatapath
from .numbers import round_shift, saturate
from .unit import Param, Range, Ref, SimPoint, Synth, Unit

__all__ = ["RMMU", "PE", "LaneOut", "LANES_PER_PE", "cmd_layout", "act_layout", "weight_layout",
           "result_layout", "Geometry", "Group", "Sequencer", "TileLoops", "Loader", "Issuer",
           "Accumulator", "ResultStage", "PEArray"]

#: Partial-sum lanes per PE = values per activation word at the narrowest precision
#: (INT2: 8); also the row words of a weight tile.
LANES_PER_PE = TILE_WORDS


def _rng(n):
    return range(max(n, 2))


def cmd_layout(rows, max_m, max_k, max_n):
    """Payload of a group's ``cmd`` stream: one GEMM descriptor."""
    return data.StructLayout({
        "row0":      _rng(rows),          # first PE row of the group
        "nrows":     range(rows + 1),     # rows in the group (1..rows)
        "precision": Precision,
        "m":         range(max_m + 1),
        "k":         range(max_k + 1),
        "n":         range(max_n + 1),
        "requant":   1,                   # results requantized (else full width)
        "out_fmt":   Precision,           # requantization target format
        "shift":     6,                   # requantization right shift (round half to even)
    })


def act_layout(rows):
    """Payload of ``a``: word ``r`` feeds the group's ``r``-th row (words >= nrows unused)."""
    return data.StructLayout({"data": data.ArrayLayout(WORD_BITS, rows)})


def weight_layout(cols):
    """Payload of ``w``: one PE row's ``cols`` tiles of 8 row words (rows >= n unused)."""
    return data.StructLayout({
        "data": data.ArrayLayout(data.ArrayLayout(WORD_BITS, TILE_WORDS), cols)})


def result_layout(cols, out_bits):
    """Payload of ``o``: ``cols * 8`` lanes; lane ``j`` is column ``n0 + j`` of ``C``."""
    return data.StructLayout({
        "lanes": data.ArrayLayout(signed(out_bits), cols * LANES_PER_PE),
        "last":  1,                       # last beat of the operation
        "error": 1,                       # the descriptor was rejected (no lanes)
    })


def group_signature(rows, cols, max_m, max_k, max_n, out_bits):
    """One row group's ports, as seen from the RMMU."""
    return wiring.Signature({
        "cmd": In(stream.Signature(cmd_layout(rows, max_m, max_k, max_n))),
        "a":   In(stream.Signature(act_layout(rows))),
        "w":   In(stream.Signature(weight_layout(cols))),
        "o":   Out(stream.Signature(result_layout(cols, out_bits))),
    })


def _slot_bits(depth_of):
    """Per-lane widths: lane ``i`` is used by every mode with more than ``i`` values."""
    return [max(depth_of(p) for p in Precision if p.lanes > i) for i in range(LANES_PER_PE)]


def psum_layout(rows):
    """Partial sums between PE rows: lane ``i`` holds up to ``rows * n`` products."""
    widths = _slot_bits(lambda p: acc_bits(p.bits, p.lanes, rows))
    return data.StructLayout({f"l{i}": signed(w) for i, w in enumerate(widths)})


class PE(wiring.Component):
    """One array element: shadow + active tile, fused datapath, partial-sum register.

    ``psum_out <= (top ? 0 : psum_in) + W_active @ act`` when ``en``; ``swap`` (already
    qualified by the row) copies the shadow tile into the active one, ``load`` writes the shadow.
    """

    def __init__(self, rows):
        self._layout = psum_layout(rows)
        super().__init__({
            "en":       In(1),
            "act":      In(WORD_BITS),
            "mode":     In(Precision),
            "top":      In(1),
            "swap":     In(1),
            "load":     In(1),
            "wdata":    In(data.ArrayLayout(WORD_BITS, TILE_WORDS)),
            "psum_in":  In(self._layout),
            "psum_out": Out(self._layout),
        })

    def elaborate(self, platform):
        m = Module()
        shadow = [Signal(WORD_BITS, name=f"shadow_{i}") for i in range(TILE_WORDS)]
        active = [Signal(WORD_BITS, name=f"active_{i}") for i in range(TILE_WORDS)]
        with m.If(self.load):
            m.d.sync += [s.eq(self.wdata[i]) for i, s in enumerate(shadow)]
        with m.If(self.swap):
            m.d.sync += [a.eq(s) for a, s in zip(active, shadow)]
        m.submodules.datapath = dp = FusedDatapath()
        m.d.comb += [dp.mode.eq(self.mode), dp.act.eq(self.act)]
        m.d.comb += [dp.rows[i].eq(a) for i, a in enumerate(active)]
        lanes = [dp.lanes[i] for i in range(LANES_PER_PE)]
        with m.If(self.en):
            for i, lane in enumerate(lanes):
                name = f"l{i}"
                up = Mux(self.top, 0, getattr(self.psum_in, name))
                m.d.sync += getattr(self.psum_out, name).eq(up + lane)
        return m


class LaneOut(wiring.Component):
    """One output lane: zero when masked, else full width or requantized (round half to even
    by ``shift``, saturate to ``fmt``). Combinational."""

    def __init__(self, bits):
        super().__init__({
            "x": In(signed(bits)), "keep": In(1), "requant": In(1), "fmt": In(Precision),
            "shift": In(6), "y": Out(signed(bits)),
        })

    def elaborate(self, platform):
        m = Module()
        rounded = round_shift(self.x, self.shift)
        sat = _by_mode(self.fmt, {p: saturate(rounded, p.bits) for p in Precision})
        m.d.comb += self.y.eq(Mux(self.keep, Mux(self.requant, sat, self.x), 0))
        return m


def _select(m, index, values, shape, name):
    """``values[index]`` as a signal of ``shape`` (zero when ``index`` is out of range).

    A chain of ``Mux`` rather than ``m.Switch``: per-bit multiplexers keep Amaranth's netlist
    checks linear in the width, which matters for the wide partial-sum and lane selections.
    """
    out = Signal(shape, name=name)
    expr = Const(0, Shape.cast(shape).width if not isinstance(shape, data.Layout) else shape.size)
    for i, v in enumerate(values):
        expr = Mux(index == i, v, expr)
    m.d.comb += out.eq(expr)
    return out


def _above(value, bound):
    """``value > bound``, or constant 0 when the field cannot hold more than ``bound``."""
    return value > bound if (1 << len(value)) - 1 > bound else Const(0)


def _by_mode(prec, table, default=0):
    """``table[prec]`` (``{Precision: value}``) as a ``Mux`` chain; missing modes give
    ``default``."""
    expr = default
    for p, v in table.items():
        expr = Mux(prec == p, v, expr)
    return expr


class Geometry(NamedTuple):
    """The parameters every part of one RMMU is built from (the :class:`RMMU` constructor's,
    ``groups`` aside: the parts of one group do not depend on how many there are)."""

    rows: int
    cols: int
    tile_m: int
    max_m: int
    max_k: int
    max_n: int

    @property
    def acc_slot_bits(self):
        """Accumulator width of PE lane ``i`` (the widest mode using it) over ``max_k``."""
        return _slot_bits(lambda p: acc_bits(p.bits, 1, self.max_k))

    @property
    def out_bits(self):
        """Width of an output lane (the FX16 accumulator)."""
        return max(self.acc_slot_bits)

    @property
    def cmd(self):
        """:func:`cmd_layout` of these bounds."""
        return cmd_layout(self.rows, self.max_m, self.max_k, self.max_n)

    @property
    def acc(self):
        """One accumulator entry: ``cols`` PE columns of 8 full-width lanes."""
        return data.ArrayLayout(data.StructLayout(
            {f"l{i}": signed(w) for i, w in enumerate(self.acc_slot_bits)}), self.cols)

    def column(self, flow):
        """Every PE's partial sums, ``[row][col]``: a member array (one signal per PE, since the
        whole column of the default array is wider than an Amaranth value may be)."""
        return flow(psum_layout(self.rows)).array(self.rows, self.cols)


def op_layout(geo):
    """The running operation of a group, as its :class:`Sequencer` hands it to the other parts:
    the descriptor, the end row ``hi = row0 + nrows``, whether it runs (rows held) or an error
    beat is pending, and the K per pass / N per tile (``nrows * n``, ``cols * n``)."""
    return data.StructLayout({
        "desc":  geo.cmd,
        "hi":    range(geo.rows + 1),
        "run":   1,
        "error": 1,
        "kstep": range(geo.rows * LANES_PER_PE + 1),
        "nstep": range(geo.cols * LANES_PER_PE + 1),
    })


def tag_layout(cols, tile_m):
    """What travels beside an issued word down to the accumulator: ``valid``, first pass of the
    tile (``first``: start from zero), last pass (``lastk``: send out, do not write back), last
    beat of the operation, the M-tile row ``m`` and the number of valid output lanes."""
    return data.StructLayout({
        "valid": 1, "first": 1, "lastk": 1, "last": 1,
        "m": _rng(tile_m), "nvalid": range(cols * LANES_PER_PE + 1)})


#: A PE row's activation input: a word was issued (``valid``), it is the first of a pass
#: (``swap``: make the shadow tiles active as it enters the row), the K-masked word.
WORD_LAYOUT = data.StructLayout({"valid": 1, "swap": 1, "word": WORD_BITS})


def row_layout(cols):
    """How a group drives one PE row it owns: pipeline enable, precision, first row of the group
    (``top``: partial sums start from zero), shadow write + weight beat, activation input."""
    return data.StructLayout({"en": 1, "mode": Precision, "top": 1, "load": 1,
                              "wdata": weight_layout(cols), "issue": WORD_LAYOUT})


class Sequencer(wiring.Component):
    """Descriptor sequencing of one row group.

    Accepts a descriptor on ``cmd`` when the group is idle (no operation running, no error beat
    pending) and either the descriptor is bad or its rows are not ``blocked`` (the RMMU's
    arbitration: held by another group). A bad one sets ``op.error`` (the output stage sends the
    error beat), a good one ``op.run``; ``done`` (the operation's last ``o`` beat is taken)
    clears both. ``take`` flags a good descriptor accepted in this cycle and ``end`` is
    ``row0 + nrows`` of the one on ``cmd`` (arbitration inputs); ``own`` bit ``r``: the running
    operation holds PE row ``r``.
    """

    def __init__(self, geo):
        self._geo = geo
        super().__init__({
            "cmd":     In(stream.Signature(geo.cmd)),
            "blocked": In(1),
            "done":    In(1),
            "op":      Out(op_layout(geo)),
            "end":     Out(range(2 * geo.rows + 1)),
            "take":    Out(1),
            "own":     Out(geo.rows),
        })

    def elaborate(self, platform):
        m = Module()
        geo, op, d = self._geo, self.op, self.cmd.payload
        m.d.comb += self.end.eq(d.row0 + d.nrows)
        bad = (d.nrows == 0) | (self.end > geo.rows) | \
            (d.m == 0) | _above(d.m, geo.max_m) | (d.k == 0) | _above(d.k, geo.max_k) | \
            (d.n == 0) | _above(d.n, geo.max_n)
        m.d.comb += self.cmd.ready.eq(~op.run & ~op.error & (bad | ~self.blocked))
        m.d.comb += self.take.eq(self.cmd.valid & self.cmd.ready & ~bad)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [op.desc.eq(d), op.hi.eq(self.end)]
            with m.If(bad):
                m.d.sync += op.error.eq(1)
            with m.Else():
                m.d.sync += op.run.eq(1)
        with m.If(self.done):
            m.d.sync += [op.run.eq(0), op.error.eq(0)]

        n_lanes = Signal(range(LANES_PER_PE + 1))                 # values per word
        for p in Precision:
            with m.If(op.desc.precision == p):
                m.d.comb += n_lanes.eq(p.lanes)
        m.d.comb += [op.kstep.eq(op.desc.nrows * n_lanes), op.nstep.eq(geo.cols * n_lanes)]
        row0 = op.desc.row0
        for r in range(geo.rows):
            # (a row at the field's maximum is always at or after row0)
            after = Const(1) if r >= (1 << len(row0)) - 1 else row0 <= r
            m.d.comb += self.own[r].eq(op.run & after & (r < op.hi))
        return m


class TileLoops(wiring.Component):
    """The ``for nt: for mt: for kp`` nest of one operation, stepped by ``step``, back to the
    start by ``clear``.

    ``n0``, ``m0``, ``k0`` are the first N column, M row and K value of the current tile/pass;
    ``last_k`` / ``last`` flag the last pass of the tile / of the whole operation.
    """

    def __init__(self, geo):
        self._geo = geo
        super().__init__({
            "op":     In(op_layout(geo)),
            "step":   In(1),
            "clear":  In(1),
            "n0":     Out(range(geo.max_n + geo.cols * LANES_PER_PE + 1)),
            "m0":     Out(range(geo.max_m + geo.tile_m + 1)),
            "k0":     Out(range(geo.max_k + geo.rows * LANES_PER_PE + 1)),
            "last_k": Out(1),
            "last":   Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        desc, kstep, nstep, tile_m = self.op.desc, self.op.kstep, self.op.nstep, self._geo.tile_m
        last_m, last_n = Signal(), Signal()
        m.d.comb += [self.last_k.eq(self.k0 + kstep >= desc.k),
                     last_m.eq(self.m0 + tile_m >= desc.m),
                     last_n.eq(self.n0 + nstep >= desc.n),
                     self.last.eq(self.last_k & last_m & last_n)]
        with m.If(self.clear):
            m.d.sync += [self.n0.eq(0), self.m0.eq(0), self.k0.eq(0)]
        with m.Elif(self.step):
            m.d.sync += self.k0.eq(Mux(self.last_k, 0, self.k0 + kstep))
            with m.If(self.last_k):
                m.d.sync += self.m0.eq(Mux(last_m, 0, self.m0 + tile_m))
                with m.If(last_m):
                    m.d.sync += self.n0.eq(self.n0 + nstep)
        return m


class Loader(wiring.Component):
    """Weight loader of one group: for ``nt, mt, kp``, ``nrows`` beats of ``w``, one PE row
    each, written into that row's shadow tiles (``load`` bit ``row0 + i``, data ``wdata``).

    A beat waits while its row's shadow is ``full`` (loaded, not yet swapped in) or while a
    loaded tile set waits for its pass. ``ready``: a tile set is ready for the next pass --
    already, or in this cycle when its last row is being written (the swap reaches that row at
    least one cycle later, unless the group is row 0 alone). ``consume``: the issue started the
    pass (the set is used). ``done`` ends the operation.
    """

    def __init__(self, geo):
        self._geo = geo
        super().__init__({
            "w":       In(stream.Signature(weight_layout(geo.cols))),
            "op":      In(op_layout(geo)),
            "full":    In(geo.rows),
            "consume": In(1),
            "done":    In(1),
            "load":    Out(geo.rows),
            "wdata":   Out(weight_layout(geo.cols)),
            "ready":   Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        R, op = self._geo.rows, self.op
        m.submodules.loops = loops = TileLoops(self._geo)
        m.d.comb += [loops.op.eq(op), loops.clear.eq(self.done), self.wdata.eq(self.w.payload)]
        row = Signal(range(R))                  # the PE row of the group the next beat fills
        finished = Signal()                     # every beat of the operation taken
        armed = Signal()                        # a loaded tile set waits for its pass
        target = Signal(range(2 * R))
        target_full = Signal()
        m.d.comb += [target.eq(op.desc.row0 + row), target_full.eq((self.full >> target)[0])]
        m.d.comb += self.w.ready.eq(op.run & ~finished & ~target_full & ~armed)
        take = self.w.valid & self.w.ready
        last_row = row + 1 == op.desc.nrows
        m.d.comb += self.load.eq(Cat(*[take & (target == r) for r in range(R)]))
        with m.If(take):
            m.d.sync += row.eq(Mux(last_row, 0, row + 1))
            with m.If(last_row):
                m.d.comb += loops.step.eq(1)
                m.d.sync += armed.eq(1)
                with m.If(loops.last):
                    m.d.sync += finished.eq(1)
        with m.If(self.consume):
            m.d.sync += armed.eq(0)
        m.d.comb += self.ready.eq(armed | (take & last_row & (op.hi > 1)))
        with m.If(self.done):
            m.d.sync += [finished.eq(0), armed.eq(0), row.eq(0)]
        return m


class Issuer(wiring.Component):
    """Activation issue of one group: for ``nt, mt, kp``, one ``a`` beat per row of the M-tile,
    in lockstep with the group's pipeline (``adv``); the first word of a pass waits for its tile
    set (``ready``) and starts it (``consume``, and ``swap`` on the word).

    ``words[r]`` is what PE row ``r`` takes if the group owns it: word ``r - row0`` of the beat,
    its bits beyond K zeroed; ``tag`` goes with the beat down to the accumulator.
    """

    def __init__(self, geo):
        self._geo = geo
        super().__init__({
            "a":       In(stream.Signature(act_layout(geo.rows))),
            "op":      In(op_layout(geo)),
            "adv":     In(1),
            "ready":   In(1),
            "done":    In(1),
            "consume": Out(1),
            "words":   Out(data.ArrayLayout(WORD_LAYOUT, geo.rows)),
            "tag":     Out(tag_layout(geo.cols, geo.tile_m)),
        })

    def elaborate(self, platform):
        m = Module()
        geo, op, desc = self._geo, self.op, self.op.desc
        m.submodules.loops = loops = TileLoops(geo)
        m.d.comb += [loops.op.eq(op), loops.clear.eq(self.done)]
        mi = Signal(_rng(geo.tile_m))           # row of the M-tile the next beat carries
        finished = Signal()
        first = mi == 0
        m.d.comb += self.a.ready.eq(op.run & ~finished & self.adv & (~first | self.ready))
        take = self.a.valid & self.a.ready
        last_mi = (mi == geo.tile_m - 1) | (loops.m0 + mi + 1 == desc.m)
        m.d.comb += self.consume.eq(take & first)
        with m.If(take):
            m.d.sync += mi.eq(Mux(last_mi, 0, mi + 1))
            with m.If(last_mi):
                m.d.comb += loops.step.eq(1)
                with m.If(loops.last):
                    m.d.sync += finished.eq(1)
        with m.If(self.done):
            m.d.sync += [finished.eq(0), mi.eq(0)]
        nrem = Signal(range(geo.max_n + 1))
        m.d.comb += nrem.eq(desc.n - loops.n0)
        m.d.comb += [
            self.tag.valid.eq(take), self.tag.first.eq(loops.k0 == 0),
            self.tag.lastk.eq(loops.last_k), self.tag.m.eq(mi),
            self.tag.nvalid.eq(Mux(nrem < op.nstep, nrem, op.nstep)),
            self.tag.last.eq(loops.last & last_mi),
        ]
        words = self._masked(m, loops.k0)
        for r in range(geo.rows):
            rel = Signal(range(geo.rows), name=f"rel{r}")
            m.d.comb += rel.eq(r - desc.row0)
            word = _select(m, rel, words[:r + 1], WORD_BITS, f"word{r}")
            m.d.comb += [self.words[r].valid.eq(take), self.words[r].swap.eq(first),
                         self.words[r].word.eq(word)]
        return m

    def _masked(self, m, k0):
        """The beat's words with the bits of values at K and beyond zeroed: word ``q`` holds K
        values ``k0 + q*n .. k0 + q*n + n - 1``."""
        desc = self.op.desc
        krem = Signal(signed(self._geo.max_k.bit_length() + 2))
        m.d.comb += krem.eq(desc.k - k0)
        words = []
        for q in range(self._geo.rows):
            keep = Signal(WORD_BITS, name=f"keep{q}")
            # bit b of word q belongs to value q*n + b // p: keep it while that is below K
            m.d.comb += keep.eq(_by_mode(desc.precision, {
                p: Cat(*[krem > q * p.lanes + b // p.bits for b in range(WORD_BITS)])
                for p in Precision}))
            words.append(self.a.payload.data[q] & keep)
        return words


class Accumulator(wiring.Component):
    """Tag line, bottom row and accumulator memory of one group.

    The tag of a word issued at ``t`` moves one stage per ``adv`` beside the word (which reaches
    row ``r`` at ``t + r + 1`` and leaves it at ``t + r + 2``), so the bottom row's sums
    (``column[hi - 1]``) line up with tag stage ``hi``. They are registered with their tag (the
    memory is read meanwhile, transparently for the write port) and added to the M-tile row's
    entry -- zero on the first pass; ``sums`` and ``sums_tag`` are that sum and its tag. Passes
    but the last write it back; the last goes to the output stage instead.
    """

    def __init__(self, geo):
        self._geo = geo
        tag = tag_layout(geo.cols, geo.tile_m)
        super().__init__({
            "tag":      In(tag),
            "hi":       In(range(geo.rows + 1)),
            "adv":      In(1),
            "column":   geo.column(In),
            "sums":     Out(geo.acc),
            "sums_tag": Out(tag),
        })

    def elaborate(self, platform):
        m = Module()
        geo, adv = self._geo, self.adv
        R, C, pl, tag = geo.rows, geo.cols, psum_layout(geo.rows), self.tag.shape()
        tags = [self.tag]
        for s in range(R + 1):
            t = Signal(tag, name=f"tag{s}")
            with m.If(adv):
                m.d.sync += t.eq(tags[-1])
            tags.append(t)
        bottom_tag = _select(m, self.hi, tags[1:], tag, "bottom_tag")
        bottom = [_select(m, self.hi - 1, [self.column[r][c] for r in range(R)], pl,
                          f"bottom{c}") for c in range(C)]
        m.submodules.mem = mem = Memory(shape=geo.acc, depth=geo.tile_m, init=[])
        wr = mem.write_port()
        rd = mem.read_port(transparent_for=(wr,))
        m.d.comb += [rd.addr.eq(bottom_tag.m), rd.en.eq(adv)]
        psum = [Signal(pl, name=f"psum{c}") for c in range(C)]
        with m.If(adv):
            m.d.sync += self.sums_tag.eq(bottom_tag)
            m.d.sync += [s.eq(b) for s, b in zip(psum, bottom)]
        for c in range(C):
            for i in range(LANES_PER_PE):
                f = f"l{i}"
                prev = Mux(self.sums_tag.first, 0, getattr(rd.data[c], f))
                m.d.comb += getattr(self.sums[c], f).eq(prev + getattr(psum[c], f))
        m.d.comb += [wr.addr.eq(self.sums_tag.m), wr.data.eq(self.sums),
                     wr.en.eq(adv & self.sums_tag.valid & ~self.sums_tag.lastk)]
        return m


class ResultStage(wiring.Component):
    """Output register of one group: on the last pass, lane ``j`` = column ``j`` of the N-tile
    (packed by the mode from the accumulator ``sums``, masked beyond N, full width or
    requantized by a :class:`LaneOut`); an error beat when ``op.error`` and nothing is pending.

    ``adv`` (the group's pipeline moves) is ``~o.valid | o.ready``: a stalled ``o`` freezes the
    group. ``done``: the operation's last beat is taken.
    """

    def __init__(self, geo):
        self._geo = geo
        super().__init__({
            "sums":     In(geo.acc),
            "sums_tag": In(tag_layout(geo.cols, geo.tile_m)),
            "op":       In(op_layout(geo)),
            "o":        Out(stream.Signature(result_layout(geo.cols, geo.out_bits))),
            "adv":      Out(1),
            "done":     Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        geo, op, o, tag = self._geo, self.op, self.o, self.sums_tag
        bits, n_lanes = geo.out_bits, geo.cols * LANES_PER_PE
        m.d.comb += [self.adv.eq(~o.valid | o.ready),
                     self.done.eq(o.valid & o.ready & o.payload.last)]
        lanes = []
        for j in range(n_lanes):
            lane = Signal(signed(bits), name=f"lane{j}")
            m.d.comb += lane.eq(_by_mode(op.desc.precision, {
                p: getattr(self.sums[j // p.lanes], f"l{j % p.lanes}")
                for p in Precision if j < geo.cols * p.lanes}))
            lo = place(m, platform, f"lane_out{j}", lambda: LaneOut(bits),
                       module=f"attnforge_rmmu_lane_b{bits}", clocked=False)
            m.d.comb += [lo.x.eq(lane), lo.keep.eq(j < tag.nvalid), lo.requant.eq(op.desc.requant),
                         lo.fmt.eq(op.desc.out_fmt), lo.shift.eq(op.desc.shift)]
            lanes.append(lo.y)
        with m.If(self.adv):
            m.d.sync += o.valid.eq(0)
            with m.If(tag.valid & tag.lastk):
                m.d.sync += [o.valid.eq(1), o.payload.last.eq(tag.last), o.payload.error.eq(0)]
                m.d.sync += [o.payload.lanes[j].eq(v) for j, v in enumerate(lanes)]
            with m.Elif(op.error & ~o.valid):
                m.d.sync += [o.valid.eq(1), o.payload.last.eq(1), o.payload.error.eq(1)]
                m.d.sync += [o.payload.lanes[j].eq(0) for j in range(n_lanes)]
        return m


class Group(wiring.Component):
    """One row group: :class:`Sequencer`, :class:`Loader`, :class:`Issuer`,
    :class:`Accumulator`, :class:`ResultStage`, with its streams on ``port``.

    Towards the array: ``rows[r]`` is how it drives PE row ``r`` while it owns it (``own``),
    ``column`` the partial sums of every PE, ``full`` the rows whose shadow tiles are loaded.
    Towards the arbitration: ``op``, ``end``, ``take`` of its sequencer, and ``blocked``.
    """

    def __init__(self, geo):
        self._geo = geo
        super().__init__({
            "port":    Out(group_signature(geo.rows, geo.cols, geo.max_m, geo.max_k, geo.max_n,
                                           geo.out_bits)),
            "blocked": In(1),
            "full":    In(geo.rows),
            "column":  geo.column(In),
            "op":      Out(op_layout(geo)),
            "end":     Out(range(2 * geo.rows + 1)),
            "take":    Out(1),
            "own":     Out(geo.rows),
            "rows":    Out(row_layout(geo.cols)).array(geo.rows),
        })

    def elaborate(self, platform):
        m = Module()
        geo, port = self._geo, self.port
        m.submodules.seq = seq = Sequencer(geo)
        m.submodules.loader = load = Loader(geo)
        m.submodules.issuer = issue = Issuer(geo)
        m.submodules.acc = acc = Accumulator(geo)
        m.submodules.out = out = ResultStage(geo)
        wiring.connect(m, wiring.flipped(port.cmd), seq.cmd)
        wiring.connect(m, wiring.flipped(port.w), load.w)
        wiring.connect(m, wiring.flipped(port.a), issue.a)
        wiring.connect(m, out.o, wiring.flipped(port.o))
        m.d.comb += [
            seq.blocked.eq(self.blocked), seq.done.eq(out.done),
            self.op.eq(seq.op), self.end.eq(seq.end), self.take.eq(seq.take),
            self.own.eq(seq.own),
            load.op.eq(seq.op), load.full.eq(self.full), load.consume.eq(issue.consume),
            load.done.eq(out.done),
            issue.op.eq(seq.op), issue.adv.eq(out.adv), issue.ready.eq(load.ready),
            issue.done.eq(out.done),
            acc.tag.eq(issue.tag), acc.hi.eq(seq.op.hi), acc.adv.eq(out.adv),
            *[acc.column[r][c].eq(self.column[r][c])
              for r in range(geo.rows) for c in range(geo.cols)],
            out.sums.eq(acc.sums), out.sums_tag.eq(acc.sums_tag), out.op.eq(seq.op),
        ]
        for r, row in enumerate(self.rows):
            m.d.comb += [row.en.eq(out.adv), row.mode.eq(seq.op.desc.precision),
                         row.top.eq(seq.op.desc.row0 == r), row.load.eq(load.load[r]),
                         row.wdata.eq(load.wdata), row.issue.eq(issue.words[r])]
        return m


class PEArray(wiring.Component):
    """``rows x cols`` :class:`PE` s with a skew line per row; each row is driven by
    ``rows[r]`` (its owner group's, or idle).

    Row ``r``'s issue input passes ``r + 1`` registers (moving when the row is enabled) before
    it reaches the PEs; the swap it carries makes the row's shadow tiles active as it enters the
    last one and clears the row's ``full`` bit (set by a ``load``). ``column[r][c]`` is PE
    ``(r, c)``'s registered partial sums; a row's input from above is zero at the top of a group.
    """

    def __init__(self, rows, cols):
        self._rows, self._cols = rows, cols
        super().__init__({
            "rows":   In(row_layout(cols)).array(rows),
            "full":   Out(rows),
            "column": Out(psum_layout(rows)).array(rows, cols),
        })

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols
        swap = Signal(R)
        load = Cat(*[row.load for row in self.rows])
        for r, row in enumerate(self.rows):
            line = row.issue
            for s in range(r + 1):
                nxt = Signal(WORD_LAYOUT, name=f"row{r}_skew{s}")
                with m.If(row.en):
                    m.d.sync += nxt.eq(line)
                if s == r:
                    m.d.comb += swap[r].eq(row.en & line.valid & line.swap)
                line = nxt
            for c in range(C):
                pe = place(m, platform, f"pe_{r}_{c}", lambda: PE(R),
                           module=f"attnforge_rmmu_pe_r{R}")
                m.d.comb += [pe.en.eq(row.en), pe.act.eq(line.word), pe.mode.eq(row.mode),
                             pe.top.eq(row.top if r else 1), pe.swap.eq(swap[r]),
                             pe.load.eq(row.load), pe.wdata.eq(row.wdata.data[c]),
                             pe.psum_in.eq(self.column[r - 1][c] if r else 0),
                             self.column[r][c].eq(pe.psum_out)]
        with m.If(swap.any() | load.any()):
            m.d.sync += self.full.eq((self.full & ~swap) | load)
        return m


def _blocked(groups, ports):
    """Per group: the descriptor on its ``cmd`` overlaps rows held by another group's running
    operation, or by a lower-numbered group's descriptor accepted in the same cycle."""
    out = []
    for g, port in enumerate(ports):
        row0, end = port.cmd.payload.row0, groups[g].end
        blocked = Const(0)
        for h, other in enumerate(groups):
            if h != g:
                held = other.op
                blocked = blocked | (held.run & (row0 < held.hi) & (held.desc.row0 < end))
        for h in range(g):
            blocked = blocked | (groups[h].take & (row0 < groups[h].end) &
                                 (ports[h].cmd.payload.row0 < end))
        out.append(blocked)
    return out


class RMMU(wiring.Component):
    """Reconfigurable matrix-multiplication unit: ``rows x cols`` multi-precision PEs, row groups.

    Parameters
    ----------
    rows, cols : int
        Array size, 1..64 each (default 32 x 16, DOTA's RMMU).
    groups : int
        Row groups that can run at the same time, each with its own ports, 1..min(rows, 8)
        (default 2: an estimate and an attention GEMM side by side).
    tile_m : int
        Depth of each group's accumulator memory: M is processed in tiles of this many rows,
        1..1024 (default 32). Passes have no bubble when the M-tile has at least ``nrows`` rows.
    max_m, max_k, max_n : int
        Largest M, K, N of a descriptor, 1..65535 (default 4096). ``max_k`` sets the
        accumulator width (``2p + ceil(log2(max_k))``, so no sum can wrap).

    Members
    -------
    g : ``Out(group_signature(...)).array(groups)``
        Per group: ``cmd`` (descriptors), ``a`` (activations), ``w`` (weights), ``o`` (results).

    Structure: one :class:`Group` per row group (submodule ``g<i>``) and one :class:`PEArray`
    (``array``); each PE row follows the group whose running operation holds it.
    """

    def __init__(self, *, rows=32, cols=16, groups=2, tile_m=32, max_m=4096, max_k=4096,
                 max_n=4096):
        self.record.validate(rows=rows, cols=cols, groups=groups, tile_m=tile_m, max_m=max_m,
                             max_k=max_k, max_n=max_n)
        self._geo = Geometry(rows, cols, tile_m, max_m, max_k, max_n)
        self._groups = groups
        super().__init__({
            "g": Out(group_signature(rows, cols, max_m, max_k, max_n, self.out_bits))
            .array(groups),
        })

    rows = property(lambda self: self._geo.rows, doc="PE rows.")
    cols = property(lambda self: self._geo.cols, doc="PE columns.")
    groups = property(lambda self: self._groups, doc="Concurrent row groups (port sets).")
    tile_m = property(lambda self: self._geo.tile_m, doc="Accumulator depth (M-tile rows).")
    max_m = property(lambda self: self._geo.max_m, doc="Largest M.")
    max_k = property(lambda self: self._geo.max_k, doc="Largest K.")
    max_n = property(lambda self: self._geo.max_n, doc="Largest N.")
    geometry = property(lambda self: self._geo, doc="The :class:`Geometry` of the parts.")

    @property
    def acc_slot_bits(self):
        """Accumulator width of PE lane ``i`` (the widest mode using it) over ``max_k``."""
        return self._geo.acc_slot_bits

    @property
    def out_bits(self):
        """Width of an output lane (the FX16 accumulator)."""
        return self._geo.out_bits

    def peak_macs(self, precision, nrows=None):
        """MACs per cycle of ``nrows`` rows (default all) at ``precision``."""
        return (nrows or self.rows) * self.cols * Precision(precision).macs_per_word

    def elaborate(self, platform):
        m = Module()
        ports = [self.g[i] for i in range(self._groups)]
        groups = []
        for i, port in enumerate(ports):
            m.submodules[f"g{i}"] = group = Group(self._geo)
            wiring.connect(m, wiring.flipped(port), group.port)
            groups.append(group)
        m.submodules.array = array = PEArray(self.rows, self.cols)
        m.d.comb += [group.blocked.eq(b) for group, b in zip(groups, _blocked(groups, ports))]
        m.d.comb += [group.full.eq(array.full) for group in groups]
        m.d.comb += [group.column[r][c].eq(array.column[r][c]) for group in groups
                     for r in range(self.rows) for c in range(self.cols)]
        # each PE row follows the group holding it (at most one), else idles enabled
        idle = row_layout(self.cols).const({"en": 1}).as_value()
        for r in range(self.rows):
            drive = idle
            for group in groups:
                drive = Mux(group.own[r], group.rows[r].as_value(), drive)
            m.d.comb += array.rows[r].eq(drive)
        return m


UNIT = Unit(
    "rmmu", RMMU, "reconfigurable PE array: GEMMs on row groups, per-group precision",
    (Param("rows", Range(1, 64), "PE rows"),
     Param("cols", Range(1, 64), "PE columns"),
     Param("groups", Range(1, Ref("min(rows, 8)", lambda p: min(p["rows"], 8))),
           "row groups running concurrently, each with its own ports"),
     Param("tile_m", Range(1, 1024), "accumulator depth (M-tile rows)"),
     Param("max_m", Range(1, 65535), "largest M"),
     Param("max_k", Range(1, 65535), "largest K (sets the accumulator width)"),
     Param("max_n", Range(1, 65535), "largest N")),
    sim=(SimPoint(dict(rows=4, cols=2, groups=2, tile_m=4, max_m=64, max_k=64, max_n=64),
                  id="4x2"),
         SimPoint(dict(rows=3, cols=3, groups=3, tile_m=2, max_m=8, max_k=255, max_n=40),
                  id="3x3-3groups"),
         # the 32 x 16 array's Verilator build (11.6 MB of Verilog) takes many minutes
         SimPoint({}, id="default-32x16",
                  testcases=("random_concurrent_groups", "extremes_at_max_k"), long=True)),
    synth=Synth(hierarchical=True, ecp5="not implemented on the ECP5: 512 PEs need ~50x an "
                "ECP5-85; rmmu.md has one PE and one output lane", boards=("ulx3s-85f",)))
