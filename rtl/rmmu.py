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
whenever a pass has at least ``nrows`` words (``M-tile >= nrows``).

Timing
------
An operation is accepted on ``cmd`` when its group is idle and no other running group holds its
rows. The first word issues once ``nrows`` weight beats are loaded; then one ``a`` beat per
cycle. The output of a word appears ``row0 + nrows + 3`` cycles after it was issued (skew,
partial-sum registers, accumulator read, output register). A stalled ``o`` freezes its own group
only. Bad descriptors get one ``o`` beat with ``error`` (and ``last``) and consume nothing.

Emission
--------
Through :func:`attnforge.rtl.emit` the PE is written once as a Verilog module (``EmitPlatform``)
and instantiated ``rows * cols`` times, so emitting and building the 512-PE default array takes
seconds; in the Amaranth simulator the PEs are ordinary submodules.
"""

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

__all__ = ["RMMU", "PE", "LaneOut", "LANES_PER_PE", "cmd_layout", "act_layout", "weight_layout", "result_layout"]

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
    """

    def __init__(self, *, rows=32, cols=16, groups=2, tile_m=32, max_m=4096, max_k=4096,
                 max_n=4096):
        self.record.validate(rows=rows, cols=cols, groups=groups, tile_m=tile_m, max_m=max_m,
                             max_k=max_k, max_n=max_n)
        self._rows, self._cols, self._groups, self._tile_m = rows, cols, groups, tile_m
        self._max_m, self._max_k, self._max_n = max_m, max_k, max_n
        super().__init__({
            "g": Out(group_signature(rows, cols, max_m, max_k, max_n, self.out_bits))
            .array(groups),
        })

    rows = property(lambda self: self._rows, doc="PE rows.")
    cols = property(lambda self: self._cols, doc="PE columns.")
    groups = property(lambda self: self._groups, doc="Concurrent row groups (port sets).")
    tile_m = property(lambda self: self._tile_m, doc="Accumulator depth (M-tile rows).")
    max_m = property(lambda self: self._max_m, doc="Largest M.")
    max_k = property(lambda self: self._max_k, doc="Largest K.")
    max_n = property(lambda self: self._max_n, doc="Largest N.")

    @property
    def acc_slot_bits(self):
        """Accumulator width of PE lane ``i`` (the widest mode using it) over ``max_k``."""
        return _slot_bits(lambda p: acc_bits(p.bits, 1, self._max_k))

    @property
    def out_bits(self):
        """Width of an output lane (the FX16 accumulator)."""
        return max(self.acc_slot_bits)

    def peak_macs(self, precision, nrows=None):
        """MACs per cycle of ``nrows`` rows (default all) at ``precision``."""
        return (nrows or self._rows) * self._cols * Precision(precision).macs_per_word

    def elaborate(self, platform):
        m = Module()
        R, C, G = self._rows, self._cols, self._groups
        ports = [self.g[i] for i in range(G)]
        pl = psum_layout(R)
        slot_bits = self.acc_slot_bits

        # ---- per-group control: descriptor, loop counters, loader, accumulator, output ------
        run = [Signal(name=f"g{g}_run") for g in range(G)]       # an operation holds rows
        err = [Signal(name=f"g{g}_err") for g in range(G)]       # an error beat is pending
        adv = [Signal(name=f"g{g}_adv") for g in range(G)]       # the group's pipeline moves
        desc = [Signal(cmd_layout(R, self._max_m, self._max_k, self._max_n), name=f"g{g}_desc")
                for g in range(G)]
        hi = [Signal(range(R + 1), name=f"g{g}_hi") for g in range(G)]

        # Row ownership: which running group holds row r (at most one, by the accept rule).
        own = [[Signal(name=f"own_{g}_{r}") for r in range(R)] for g in range(G)]
        for g in range(G):
            for r in range(R):
                row0 = desc[g].row0
                # (a row at the field's maximum is always at or after row0)
                after = Const(1) if r >= (1 << len(row0)) - 1 else row0 <= r
                m.d.comb += own[g][r].eq(run[g] & after & (r < hi[g]))

        # Accepting a descriptor: its rows must be free of running groups and of a lower
        # group's descriptor accepted in the same cycle.
        taking = []                                      # (accepted now, row0, end) per group
        for g, port in enumerate(ports):
            d = port.cmd.payload
            end = Signal(range(2 * R + 1), name=f"g{g}_cmd_end")
            m.d.comb += end.eq(d.row0 + d.nrows)
            bad = (d.nrows == 0) | (end > R) | \
                (d.m == 0) | _above(d.m, self._max_m) | (d.k == 0) | _above(d.k, self._max_k) | \
                (d.n == 0) | _above(d.n, self._max_n)
            conflict = Const(0)
            for h in range(G):
                if h != g:
                    conflict = conflict | (run[h] & (d.row0 < hi[h]) & (desc[h].row0 < end))
            for now, row0, h_end in taking:
                conflict = conflict | (now & (d.row0 < h_end) & (row0 < end))
            m.d.comb += port.cmd.ready.eq(~run[g] & ~err[g] & (bad | ~conflict))
            accept = Signal(name=f"g{g}_cmd_take")
            m.d.comb += accept.eq(port.cmd.valid & port.cmd.ready & ~bad)
            taking.append((accept, d.row0, end))
            with m.If(port.cmd.valid & port.cmd.ready):
                m.d.sync += [desc[g].eq(d), hi[g].eq(end)]
                with m.If(bad):
                    m.d.sync += err[g].eq(1)
                with m.Else():
                    m.d.sync += run[g].eq(1)

        # Row state follows the owner group.
        row_en = [Signal(name=f"row{r}_en") for r in range(R)]
        row_mode = [Signal(Precision, name=f"row{r}_mode") for r in range(R)]
        row_top = [Signal(name=f"row{r}_top") for r in range(R)]
        for r in range(R):
            owned = Cat(*[own[g][r] for g in range(G)]).any()
            en, mode, top = ~owned, Const(0, 2), Const(0)
            for g in range(G):
                en = en | (own[g][r] & adv[g])
                mode = Mux(own[g][r], desc[g].precision, mode)
                top = top | (own[g][r] & (desc[g].row0 == r))
            m.d.comb += [row_en[r].eq(en), row_mode[r].eq(mode), row_top[r].eq(top)]

        # Loader and issue state per group, plus the words/tags they hand to the array.
        shadow_full = Signal(R)
        row_load = [Signal(name=f"row{r}_load") for r in range(R)]
        row_wdata = [Signal(weight_layout(C), name=f"row{r}_wdata") for r in range(R)]
        row_in = [Signal(data.StructLayout({"valid": 1, "swap": 1, "word": WORD_BITS}),
                         name=f"row{r}_in") for r in range(R)]
        tag_layout = data.StructLayout({
            "valid": 1, "first": 1, "lastk": 1, "last": 1,
            "m": _rng(self._tile_m), "nvalid": range(C * LANES_PER_PE + 1)})
        issue_tag = [Signal(tag_layout, name=f"g{g}_tag") for g in range(G)]
        swap_clear = Signal(R)
        group_in = [[] for _ in range(R)]     # per row: (owned by g, w payload, row input)

        for g, port in enumerate(ports):
            dg = desc[g]
            n_lanes = Signal(range(LANES_PER_PE + 1), name=f"g{g}_n")     # values per word
            for p in Precision:
                with m.If(dg.precision == p):
                    m.d.comb += n_lanes.eq(p.lanes)
            kstep = Signal(range(R * LANES_PER_PE + 1), name=f"g{g}_kstep")  # K per pass
            nstep = Signal(range(C * LANES_PER_PE + 1), name=f"g{g}_nstep")  # N per tile
            m.d.comb += [kstep.eq(dg.nrows * n_lanes), nstep.eq(C * n_lanes)]

            # -- loader: for nt, mt, kp: nrows beats, one PE row each --------------------------
            ld = _Loops(m, f"g{g}_ld", self, dg, kstep, nstep)
            ld_row = Signal(range(R), name=f"g{g}_ld_row")
            ld_done = Signal(name=f"g{g}_ld_done")
            set_ready = Signal(name=f"g{g}_set_ready")
            tgt = Signal(range(2 * R), name=f"g{g}_ld_tgt")
            m.d.comb += tgt.eq(dg.row0 + ld_row)
            tgt_full = Signal(name=f"g{g}_tgt_full")
            m.d.comb += tgt_full.eq((shadow_full >> tgt)[0])
            m.d.comb += port.w.ready.eq(run[g] & ~ld_done & ~tgt_full & ~set_ready)
            w_take = port.w.valid & port.w.ready
            for r in range(R):
                with m.If(w_take & (tgt == r)):
                    m.d.comb += row_load[r].eq(1)
            last_row = ld_row + 1 == dg.nrows
            with m.If(w_take):
                m.d.sync += ld_row.eq(Mux(last_row, 0, ld_row + 1))
                with m.If(last_row):
                    m.d.comb += ld.step.eq(1)
                    m.d.sync += set_ready.eq(1)
                    with m.If(ld.last):
                        m.d.sync += ld_done.eq(1)

            # -- issue: for nt, mt, kp: one word per row of the M-tile -------------------------
            iss = _Loops(m, f"g{g}_is", self, dg, kstep, nstep)
            mi = Signal(_rng(self._tile_m), name=f"g{g}_mi")
            is_done = Signal(name=f"g{g}_is_done")
            first_word = mi == 0
            # A pass may start in the cycle its tile set's last row is written: the swap reaches
            # that row at least one cycle later -- unless the group is row 0 alone.
            set_now = Signal(name=f"g{g}_set_now")
            m.d.comb += set_now.eq(set_ready | (w_take & last_row & (hi[g] > 1)))
            m.d.comb += port.a.ready.eq(run[g] & ~is_done & adv[g] & (~first_word | set_now))
            a_take = port.a.valid & port.a.ready
            last_mi = (mi == self._tile_m - 1) | (iss.m0 + mi + 1 == dg.m)
            with m.If(a_take):
                m.d.sync += mi.eq(Mux(last_mi, 0, mi + 1))
                with m.If(first_word):
                    m.d.sync += set_ready.eq(0)
                with m.If(last_mi):
                    m.d.comb += iss.step.eq(1)
                    with m.If(iss.last):
                        m.d.sync += is_done.eq(1)
            nrem = Signal(range(self._max_n + 1), name=f"g{g}_nrem")
            m.d.comb += nrem.eq(dg.n - iss.n0)
            m.d.comb += [
                issue_tag[g].valid.eq(a_take), issue_tag[g].first.eq(iss.k0 == 0),
                issue_tag[g].lastk.eq(iss.last_k), issue_tag[g].m.eq(mi),
                issue_tag[g].nvalid.eq(Mux(nrem < nstep, nrem, nstep)),
                issue_tag[g].last.eq(iss.last & last_mi),
            ]

            # K mask: word q of the beat holds K values k0 + q*n .. k0 + q*n + n - 1.
            krem = Signal(signed(self._max_k.bit_length() + 2), name=f"g{g}_krem")
            m.d.comb += krem.eq(dg.k - iss.k0)
            words = []
            for q in range(R):
                keep = Signal(WORD_BITS, name=f"g{g}_keep{q}")
                # bit b of word q belongs to value q*n + b // p: keep it while that is below K
                m.d.comb += keep.eq(_by_mode(dg.precision, {
                    p: Cat(*[krem > q * p.lanes + b // p.bits for b in range(WORD_BITS)])
                    for p in Precision}))
                words.append(port.a.payload.data[q] & keep)

            # Rows of this group take word (r - row0).
            for r in range(R):
                rel = Signal(range(R), name=f"g{g}_rel{r}")
                m.d.comb += rel.eq(r - dg.row0)
                word = _select(m, rel, words[:r + 1], WORD_BITS, f"g{g}_word{r}")
                group_in[r].append((own[g][r], port.w.payload,
                                    Cat(a_take, first_word, word)))

            # -- operation end -------------------------------------------------------------
            o_last = port.o.valid & port.o.ready & port.o.payload.last
            with m.If(o_last):
                m.d.sync += [run[g].eq(0), err[g].eq(0), ld_done.eq(0), is_done.eq(0),
                             set_ready.eq(0), ld_row.eq(0), mi.eq(0)]
                m.d.comb += [ld.reset.eq(1), iss.reset.eq(1)]

        for r in range(R):
            wdata, rin = Const(0, row_wdata[r].shape().size), Const(0, row_in[r].shape().size)
            for owned, w, i in group_in[r]:
                wdata, rin = Mux(owned, w, wdata), Mux(owned, i, rin)
            m.d.comb += [row_wdata[r].eq(wdata), row_in[r].eq(rin)]

        # ---- the array: skew lines, PEs, partial-sum columns ---------------------------------
        a_reg = []
        for r in range(R):
            line = row_in[r]
            for s in range(r + 1):
                nxt = Signal.like(row_in[r], name=f"row{r}_skew{s}")
                with m.If(row_en[r]):
                    m.d.sync += nxt.eq(line)
                if s == r:
                    swap_now = row_en[r] & line.valid & line.swap
                    with m.If(swap_now):
                        m.d.comb += swap_clear[r].eq(1)
                line = nxt
            a_reg.append(line)

        with m.If(swap_clear.any() | Cat(*row_load).any()):
            m.d.sync += shadow_full.eq((shadow_full & ~swap_clear) | Cat(*row_load))

        psum = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                pe = place(m, platform, f"pe_{r}_{c}", lambda: PE(R),
                           module=f"attnforge_rmmu_pe_r{R}")
                m.d.comb += [pe.en.eq(row_en[r]), pe.act.eq(a_reg[r].word),
                             pe.mode.eq(row_mode[r]), pe.top.eq(row_top[r] if r else 1),
                             pe.swap.eq(swap_clear[r]), pe.load.eq(row_load[r]),
                             pe.wdata.eq(row_wdata[r].data[c]),
                             pe.psum_in.eq(psum[r - 1][c] if r else 0)]
                psum[r][c] = pe.psum_out

        # ---- per group: tag line, bottom row, accumulator memory, output ---------------------
        acc_layout = data.ArrayLayout(
            data.StructLayout({f"l{i}": signed(w) for i, w in enumerate(slot_bits)}), C)
        for g, port in enumerate(ports):
            dg = desc[g]
            tags = [issue_tag[g]]
            for s in range(R + 1):
                t = Signal(tag_layout, name=f"g{g}_tag{s}")
                with m.If(adv[g]):
                    m.d.sync += t.eq(tags[-1])
                tags.append(t)
            # the word issued at t reaches row r at t + r + 1 and leaves it at t + r + 2:
            # the bottom row's sums line up with tag stage ``hi``.
            bottom_tag = _select(m, hi[g], [tags[s + 1] for s in range(R + 1)], tag_layout,
                                 f"g{g}_btag")
            bottom = []
            for c in range(C):
                bottom.append(_select(m, hi[g] - 1, [psum[r][c] for r in range(R)], pl,
                                      f"g{g}_bot{c}"))

            mem = Memory(shape=acc_layout, depth=self._tile_m, init=[])
            m.submodules[f"g{g}_acc"] = mem
            wr = mem.write_port()
            rd = mem.read_port(transparent_for=(wr,))
            m.d.comb += [rd.addr.eq(bottom_tag.m), rd.en.eq(adv[g])]
            tag_a = Signal(tag_layout, name=f"g{g}_tag_a")
            psum_a = [Signal(pl, name=f"g{g}_psum_a{c}") for c in range(C)]
            with m.If(adv[g]):
                m.d.sync += tag_a.eq(bottom_tag)
                m.d.sync += [s.eq(b) for s, b in zip(psum_a, bottom)]
            sums = Signal(acc_layout, name=f"g{g}_sum")
            for c in range(C):
                for i in range(LANES_PER_PE):
                    f = f"l{i}"
                    prev = Mux(tag_a.first, 0, getattr(rd.data[c], f))
                    m.d.comb += getattr(sums[c], f).eq(prev + getattr(psum_a[c], f))
            m.d.comb += [wr.addr.eq(tag_a.m), wr.data.eq(sums),
                         wr.en.eq(adv[g] & tag_a.valid & ~tag_a.lastk)]

            # Output: lane j = column j of the N-tile, packed by the mode, masked, requantized.
            m.d.comb += adv[g].eq(~port.o.valid | port.o.ready)
            lanes = []
            for j in range(C * LANES_PER_PE):
                lane = Signal(signed(self.out_bits), name=f"g{g}_lane{j}")
                m.d.comb += lane.eq(_by_mode(dg.precision, {
                    p: getattr(sums[j // p.lanes], f"l{j % p.lanes}")
                    for p in Precision if j < C * p.lanes}))
                lo = place(m, platform, f"g{g}_lane_out{j}", lambda: LaneOut(self.out_bits),
                           module=f"attnforge_rmmu_lane_b{self.out_bits}", clocked=False)
                m.d.comb += [lo.x.eq(lane), lo.keep.eq(j < tag_a.nvalid),
                             lo.requant.eq(dg.requant), lo.fmt.eq(dg.out_fmt),
                             lo.shift.eq(dg.shift)]
                lanes.append(lo.y)
            with m.If(adv[g]):
                m.d.sync += port.o.valid.eq(0)
                with m.If(tag_a.valid & tag_a.lastk):
                    m.d.sync += [port.o.valid.eq(1), port.o.payload.last.eq(tag_a.last),
                                 port.o.payload.error.eq(0)]
                    m.d.sync += [port.o.payload.lanes[j].eq(v) for j, v in enumerate(lanes)]
                with m.Elif(err[g] & ~port.o.valid):
                    m.d.sync += [port.o.valid.eq(1), port.o.payload.last.eq(1),
                                 port.o.payload.error.eq(1)]
                    m.d.sync += [port.o.payload.lanes[j].eq(0) for j in range(C * LANES_PER_PE)]
        return m


class _Loops:
    """The ``for nt: for mt: for kp`` nest of one operation, stepped by ``step``.

    ``n0``, ``m0``, ``k0`` are the first N column, M row and K value of the current tile/pass;
    ``last_k`` / ``last`` flag the last pass of the tile / of the whole operation.
    """

    def __init__(self, m, name, rmmu, desc, kstep, nstep):
        self.step = Signal(name=f"{name}_step")
        self.reset = Signal(name=f"{name}_reset")
        self.n0 = Signal(range(rmmu.max_n + rmmu.cols * LANES_PER_PE + 1), name=f"{name}_n0")
        self.m0 = Signal(range(rmmu.max_m + rmmu.tile_m + 1), name=f"{name}_m0")
        self.k0 = Signal(range(rmmu.max_k + rmmu.rows * LANES_PER_PE + 1), name=f"{name}_k0")
        self.last_k = Signal(name=f"{name}_last_k")
        last_m, last_n = Signal(name=f"{name}_last_m"), Signal(name=f"{name}_last_n")
        self.last = Signal(name=f"{name}_last")
        m.d.comb += [self.last_k.eq(self.k0 + kstep >= desc.k),
                     last_m.eq(self.m0 + rmmu.tile_m >= desc.m),
                     last_n.eq(self.n0 + nstep >= desc.n),
                     self.last.eq(self.last_k & last_m & last_n)]
        with m.If(self.reset):
            m.d.sync += [self.n0.eq(0), self.m0.eq(0), self.k0.eq(0)]
        with m.Elif(self.step):
            m.d.sync += self.k0.eq(Mux(self.last_k, 0, self.k0 + kstep))
            with m.If(self.last_k):
                m.d.sync += self.m0.eq(Mux(last_m, 0, self.m0 + rmmu.tile_m))
                with m.If(last_m):
                    m.d.sync += self.n0.eq(self.n0 + nstep)


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
         SimPoint({}, id="default-32x16",
                  testcases=("random_concurrent_groups", "extremes_at_max_k"))),
    synth=Synth(hierarchical=True, ecp5="not implemented on the ECP5: 512 PEs need ~50x an "
                "ECP5-85; rmmu.md has one PE and one output lane", boards=("ulx3s-85f",)))
