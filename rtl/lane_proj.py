"""Projection engine of the attention lane (docs/lane.md sections 2-3, PROJECT): the
estimate's operands computed on chip, on the compute row group of the lane's RMMU, before the
first query tile:

    Q~ = requantize(Q P_q, q_shift, p)        K~ = requantize(K P_k, k_shift, p)

two FX16 descriptors (``A`` = the head's Q or K rows, ``T x d``; ``B`` = the INT8 projection
``P``, ``d x m``, held here; ``row0``/``nrows`` = the compute group; the RMMU's output lanes
requantize to INTp, ``p`` = the estimate's bits), exactly the ``"project"`` entries of
:func:`attnforge.golden.lane.run_lane_rmmu`'s trace. Their output beats (one per N-tile of
``cols`` projected columns and row) are written column-wise into the estimate feeder's
``Q~``/``K~`` memories (:class:`attnforge.rtl.lane_est.EstimateFeeder`, ``load`` with one
write enable per value).

Components:

* :class:`ProjFeeder` -- the ``P_q``/``P_k`` memory (``2d`` rows of ``max_m`` INT8 values,
  written over ``load``) and the two descriptors' ``a`` beats (Q/K rows read through ``rd``,
  the back feeder's memories: :func:`attnforge.rtl.lane_feed.row_read_signature`) and ``w``
  beats (``P`` rows), in ``golden.rmmu`` order (``RMMUModel.a_beats/w_beats``); each engine
  steps the RMMU's own :class:`attnforge.rtl.rmmu.TileLoops`;
* :class:`Projector` -- the sequencer: one ``cmd`` (``t``, ``m``, precision, shifts) -> the
  two descriptors on ``g``, the feeder's command, the output beats to ``wr``; ``busy`` from the
  command to the last ``K~`` write (``done`` pulses then);
* :class:`GroupMux` -- two drivers of one RMMU row group (the projection engine and
  :class:`attnforge.rtl.lane_back.LaneBack`), ``sel`` picks the one whose streams pass.

Timing (no stalls): ``Projector`` takes ``cmd`` when idle; the Q descriptor is offered the
next cycle, the K descriptor as soon as the Q one is taken (the RMMU accepts it when the group
is idle); the feeder issues one ``a`` and one ``w`` beat per cycle (synchronous reads, held
while stalled); output beats pass to ``wr`` combinationally (the estimate feeder takes them
at once when idle). ``done`` comes ``gemm_cycles(Q) + gemm_cycles(K) + 2`` cycles after the
command (measured: tests/test_lane_lproj.py; :data:`attnforge.golden.lane.RTL_PROJ`).
"""

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.numbers import Precision
from .lane_feed import row_read_signature
from .lane_front import group_port
from .rmmu import Geometry, TileLoops, act_layout, weight_layout

__all__ = ["ProjFeeder", "Projector", "GroupMux", "proj_load_layout", "proj_cmd_layout",
           "est_write_layout"]


def proj_load_layout(d, max_m):
    """``load`` of the projection memory: ``target`` 0 = ``P_q``, 1 = ``P_k``; row ``addr``
    (a dimension of ``d``) = ``P[addr, :max_m]`` (INT8)."""
    return data.StructLayout({"target": 1, "addr": range(d),
                              "row": data.ArrayLayout(signed(8), max_m)})


def proj_cmd_layout(max_t, max_m):
    """``Projector.cmd``: the head's length ``t`` (Q rows), its keys ``n`` (K rows: the kept
    keys with a keep-list, else ``t``), projected width, estimate precision, shifts."""
    return data.StructLayout({"t": range(max_t + 1), "n": range(max_t + 1),
                              "m": range(max_m + 1),
                              "precision": Precision, "q_shift": 6, "k_shift": 6})


def est_write_layout(max_t, max_m):
    """A column-wise write into the ``Q~`` (``target`` 0) / ``K~`` (1) memories: row ``addr``,
    values ``row`` (INT8 containers), one write enable per value (``en``)."""
    return data.StructLayout({"target": 1, "addr": range(max_t),
                              "row": data.ArrayLayout(signed(8), max_m), "en": max_m})


def _pick(m, values, index, shape, name):
    """``values[index]`` (zero beyond the list) through an ``Array`` padded to a power of two
    (complete cases for Verilator)."""
    n = 1 << max(0, (len(values) - 1).bit_length())
    sel = Signal(range(max(n, 2)), name=f"{name}_i")
    out = Signal(shape, name=name)
    m.d.comb += [sel.eq(index), out.eq(Mux(index < len(values),
                                           Array(list(values) + [0] * (n - len(values)))[sel], 0))]
    return out


class ProjFeeder(wiring.Component):
    """Operand beats of the two projection descriptors (module docstring). Parameters: ``rows``
    (the compute group's PE rows, the passes' K step), ``cols``, ``d``, ``max_t``, ``max_m``,
    ``tile_m`` (the RMMU's M-tile), ``words`` (activation words per ``a`` beat: the whole
    RMMU's rows; words ``>= rows`` are 0).

    ``cmd`` (``t``, ``n``, ``m``) starts both engines; each runs the Q descriptor's beats
    (``t`` rows), then the K descriptor's (``n`` rows): ``a`` -- for each N-tile, M-tile, pass ``kp``, row ``i`` of the M-tile: word
    ``r`` = ``X[i, kp*rows + r]`` (X = Q, then K; 0 at or beyond ``d``); ``w`` -- for each
    N-tile ``nt``, M-tile, pass, PE row ``r``: tile ``c`` word 0 = ``P[kp*rows + r,
    nt*cols + c]`` (0 beyond ``d`` or ``m``), words 1..7 = 0. ``cmd`` is taken when both
    engines are idle and no ``load`` is offered."""

    def __init__(self, *, rows=3, cols=2, d=8, max_t=32, max_m=4, tile_m=8, words=None):
        self.rows, self.cols, self.d, self.max_t, self.max_m = rows, cols, d, max_t, max_m
        self.tile_m, self.words = tile_m, words or rows
        self.geo = Geometry(self.words, cols, tile_m, max_t, d, max_m)
        super().__init__({
            "load": In(stream.Signature(proj_load_layout(d, max_m))),
            "cmd": In(stream.Signature(data.StructLayout({"t": range(max_t + 1),
                                                          "n": range(max_t + 1),
                                                          "m": range(max_m + 1)}))),
            "rd": Out(row_read_signature(max_t, d)),
            "a": Out(stream.Signature(act_layout(self.words))),
            "w": Out(stream.Signature(weight_layout(cols))),
        })

    def _loops(self, m, name, t, mm, clear, step):
        """A :class:`TileLoops` over ``M = t``, ``K = d``, ``N = m`` (FX16: K step ``rows``,
        N step ``cols``)."""
        loops = TileLoops(self.geo)
        m.submodules[name] = loops
        op = loops.op
        m.d.comb += [op.desc.m.eq(t), op.desc.k.eq(self.d), op.desc.n.eq(mm),
                     op.kstep.eq(self.rows), op.nstep.eq(self.cols),
                     loops.clear.eq(clear), loops.step.eq(step)]
        return loops

    def elaborate(self, platform):
        m = Module()
        rows, cols, d, tm = self.rows, self.cols, self.d, self.tile_m
        mem = Memory(shape=8 * self.max_m, depth=2 * d, init=[])
        m.submodules.mp = mem
        wp, rp = mem.write_port(), mem.read_port()
        busy_a, busy_w = Signal(), Signal()
        lp = self.load.payload
        m.d.comb += [self.load.ready.eq(~busy_a & ~busy_w),
                     wp.addr.eq(lp.target * d + lp.addr), wp.data.eq(lp.row.as_value()),
                     wp.en.eq(self.load.valid)]
        t, n = Signal.like(self.cmd.payload.t), Signal.like(self.cmd.payload.n)
        mm = Signal.like(self.cmd.payload.m)
        start = self.cmd.valid & self.cmd.ready
        m.d.comb += self.cmd.ready.eq(~busy_a & ~busy_w & ~self.load.valid)
        with m.If(start):
            m.d.sync += [t.eq(self.cmd.payload.t), n.eq(self.cmd.payload.n),
                         mm.eq(self.cmd.payload.m), busy_a.eq(1), busy_w.eq(1)]

        # ---- engine A: rows of Q (phase 0), then K (phase 1) through rd ----------------------
        a_ph, a_mi, a_pend = Signal(), Signal(range(max(tm, 2))), Signal()
        a_issue = busy_a & (~a_pend | self.a.ready)
        last_mi = Signal()
        a_rows = Signal.like(t)                          # M of the current descriptor
        m.d.comb += a_rows.eq(Mux(a_ph, n, t))
        la = self._loops(m, "loops_a", a_rows, mm, start, a_issue & last_mi)
        m.d.comb += last_mi.eq((a_mi == tm - 1) | (la.m0 + a_mi + 1 == a_rows))
        k0_a = Signal.like(la.k0)
        m.d.comb += [self.rd.active.eq(busy_a | a_pend), self.rd.addr.eq(la.m0 + a_mi),
                     self.rd.target.eq(a_ph), self.rd.en.eq(a_issue)]
        with m.If(a_pend & self.a.ready):
            m.d.sync += a_pend.eq(0)
        with m.If(a_issue):
            m.d.sync += [a_pend.eq(1), k0_a.eq(la.k0), a_mi.eq(Mux(last_mi, 0, a_mi + 1))]
            with m.If(last_mi & la.last):
                m.d.sync += a_ph.eq(~a_ph)
                m.d.comb += la.clear.eq(1)
                with m.If(a_ph):
                    m.d.sync += busy_a.eq(0)
        m.d.comb += self.a.valid.eq(a_pend)
        elems = [self.rd.data[j] for j in range(d)]
        for r in range(rows):
            m.d.comb += self.a.payload.data[r].eq(_pick(m, elems, k0_a + r, 16, f"a_word{r}"))

        # ---- engine W: P_q rows (phase 0), then P_k --------------------------------------------
        w_ph, w_r, w_pend = Signal(), Signal(range(max(rows, 2))), Signal()
        w_issue = busy_w & (~w_pend | self.w.ready)
        w_rows = Signal.like(t)
        m.d.comb += w_rows.eq(Mux(w_ph, n, t))
        lw = self._loops(m, "loops_w", w_rows, mm, start, w_issue & (w_r == rows - 1))
        k_w, n0_w = Signal(range(d + rows + 1)), Signal.like(lw.n0)
        m.d.comb += [rp.addr.eq(w_ph * d + lw.k0 + w_r), rp.en.eq(w_issue | ~w_pend)]
        with m.If(w_pend & self.w.ready):
            m.d.sync += w_pend.eq(0)
        with m.If(w_issue):
            m.d.sync += [w_pend.eq(1), k_w.eq(lw.k0 + w_r), n0_w.eq(lw.n0),
                         w_r.eq(Mux(w_r == rows - 1, 0, w_r + 1))]
            with m.If((w_r == rows - 1) & lw.last):
                m.d.sync += w_ph.eq(~w_ph)
                m.d.comb += lw.clear.eq(1)
                with m.If(w_ph):
                    m.d.sync += busy_w.eq(0)
        m.d.comb += self.w.valid.eq(w_pend)
        prow = data.ArrayLayout(signed(8), self.max_m)(rp.data)
        pvals = [prow[j] for j in range(self.max_m)]
        for c in range(cols):
            v = _pick(m, pvals, n0_w + c, signed(8), f"w_val{c}")
            m.d.comb += self.w.payload.data[c][0].eq(Mux((k_w < d) & (n0_w + c < mm), v, 0))
        return m


class Projector(wiring.Component):
    """The projection engine (module docstring). Parameters: ``rows`` (the compute group's),
    ``row0`` (its first row), ``cols``, ``d``, ``max_t``, ``max_m``, ``rmmu`` (the parameters
    of the RMMU whose group ``g`` drives: ``rows, cols, tile_m, max_m, max_k, max_n``).

    Members: ``load`` (P rows, :func:`proj_load_layout`), ``cmd`` (:func:`proj_cmd_layout`),
    ``rd`` (the Q/K memories), ``g`` (the compute group), ``wr`` (``Q~``/``K~`` column writes,
    :func:`est_write_layout`), ``busy`` (command taken, last write not yet), ``done`` (the
    last write is taken this cycle)."""

    def __init__(self, *, rows=3, row0=1, cols=2, d=8, max_t=32, max_m=4, rmmu=None):
        self.rows, self.row0, self.cols, self.d = rows, row0, cols, d
        self.max_t, self.max_m = max_t, max_m
        big = max(max_t, d, max_m)
        self.rmmu_params = rmmu or dict(rows=row0 + rows, cols=cols, tile_m=8, max_m=big,
                                        max_k=big, max_n=big)
        self.feed = ProjFeeder(rows=rows, cols=cols, d=d, max_t=max_t, max_m=max_m,
                               tile_m=self.rmmu_params["tile_m"],
                               words=self.rmmu_params["rows"])
        super().__init__({
            "load": In(stream.Signature(proj_load_layout(d, max_m))),
            "cmd": In(stream.Signature(proj_cmd_layout(max_t, max_m))),
            "rd": Out(row_read_signature(max_t, d)),
            "g": group_port(self.rmmu_params),
            "wr": Out(stream.Signature(est_write_layout(max_t, max_m))),
            "busy": Out(1),
            "done": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.feed = feed = self.feed
        g = self.g
        wiring.connect(m, wiring.flipped(self.load), feed.load)
        # rd: the feeder's reads; ``active`` (the lane's select of the Q/K ports and of the
        # compute group) held from the command to the last write, not just while reading
        rd = self.rd
        m.d.comb += [rd.active.eq(self.busy), rd.addr.eq(feed.rd.addr),
                     rd.target.eq(feed.rd.target), rd.en.eq(feed.rd.en),
                     feed.rd.data.eq(rd.data)]
        wiring.connect(m, feed.a, wiring.flipped(g.a))
        wiring.connect(m, feed.w, wiring.flipped(g.w))

        cp = Signal.like(self.cmd.payload)
        step = Signal(range(3))          # descriptors issued: 0 (Q pending), 1 (K), 2 (both)
        go = Signal()                    # the feeder's command is pending
        m.d.comb += self.cmd.ready.eq(~self.busy)
        with m.If(self.cmd.valid & self.cmd.ready):
            m.d.sync += [cp.eq(self.cmd.payload), self.busy.eq(1), go.eq(1), step.eq(0)]
        m.d.comb += [feed.cmd.valid.eq(go), feed.cmd.payload.t.eq(cp.t),
                     feed.cmd.payload.n.eq(cp.n), feed.cmd.payload.m.eq(cp.m)]
        with m.If(feed.cmd.valid & feed.cmd.ready):
            m.d.sync += go.eq(0)
        c = g.cmd.payload
        m.d.comb += [g.cmd.valid.eq(self.busy & (step != 2)), c.row0.eq(self.row0),
                     c.nrows.eq(self.rows), c.precision.eq(Precision.FX16),
                     c.m.eq(Mux(step == 0, cp.t, cp.n)),
                     c.k.eq(self.d), c.n.eq(cp.m), c.requant.eq(1), c.out_fmt.eq(cp.precision),
                     c.shift.eq(Mux(step == 0, cp.q_shift, cp.k_shift))]
        with m.If(g.cmd.valid & g.cmd.ready):
            m.d.sync += step.eq(step + 1)

        # output beats (for nt, row i: lanes j = X~[i, nt*cols + j]) -> column writes
        o_ph, o_i = Signal(), Signal(range(self.max_t))
        o_nt = Signal(range(-(-self.max_m // self.cols)))
        wp = self.wr.payload
        m.d.comb += [self.wr.valid.eq(g.o.valid & ~g.o.payload.error), g.o.ready.eq(self.wr.ready),
                     wp.target.eq(o_ph), wp.addr.eq(o_i)]
        for e in range(self.max_m):
            m.d.comb += [wp.row[e].eq(g.o.payload.lanes[e % self.cols][:8]),
                         wp.en[e].eq((o_nt == e // self.cols) & (e < cp.m))]
        o_last = o_i == Mux(o_ph, cp.n, cp.t) - 1
        with m.If(g.o.valid & g.o.ready):
            m.d.sync += o_i.eq(Mux(o_last, 0, o_i + 1))
            with m.If(o_last):
                m.d.sync += o_nt.eq(o_nt + 1)
            with m.If(g.o.payload.last):
                m.d.sync += [o_ph.eq(~o_ph), o_i.eq(0), o_nt.eq(0)]
                with m.If(o_ph):
                    m.d.sync += self.busy.eq(0)
                    m.d.comb += self.done.eq(1)
        return m


class GroupMux(wiring.Component):
    """Two drivers of one RMMU row group: ``i[0]``, ``i[1]`` look like the RMMU's group port
    (``group_signature``), ``o`` drives the RMMU (``group_port``); ``sel`` picks the driver
    whose ``cmd``/``a``/``w`` pass and which sees ``o`` (the other sees ``valid``/``ready``
    low). Combinational; ``sel`` must only change while the group is idle (the lane switches
    from the projection engine to the back half once the projection's last beat is out)."""

    def __init__(self, rmmu, n=2):
        self.n = n
        super().__init__({"i": group_port(rmmu).flip().array(n), "o": group_port(rmmu),
                          "sel": In(range(max(n, 2)))})

    def elaborate(self, platform):
        m = Module()
        for name in ("cmd", "a", "w"):
            down = getattr(self.o, name)
            for k in range(self.n):
                up = getattr(self.i[k], name)
                on = self.sel == k
                m.d.comb += up.ready.eq(down.ready & on)
                with m.If(on):
                    m.d.comb += [down.valid.eq(up.valid), down.payload.eq(up.payload)]
        for k in range(self.n):
            up, on = self.i[k].o, self.sel == k
            m.d.comb += [up.valid.eq(self.o.o.valid & on), up.payload.eq(self.o.o.payload)]
            with m.If(on):
                m.d.comb += self.o.o.ready.eq(up.ready)
        return m
