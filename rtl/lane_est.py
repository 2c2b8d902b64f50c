"""Estimate feeder of the attention lane (docs/lane.md sections 2 and 4): the ``Q~``/``K~``
memories -> the ``a`` and ``w`` beats of the estimate descriptor of each query tile,
``E_b = Q~_b K~^T`` at run-time precision ``p`` (INT8/INT4/INT2, ``n = 16/p`` values per word),
in ``golden.rmmu`` stream order (one M-tile: ``tile_m >= block``):

* ``a`` (``A = Q~_b``, ``block x m``): for each N-tile ``nt`` of ``W = cols*n`` keys, for each
  pass ``kp``, for each query ``q`` of the tile: word ``r`` (``r < est_rows``) packs
  ``Q~[q0+q, (kp*est_rows + r)*n + j]``, ``j < n`` (value ``j`` in bits ``j*p ..``);
* ``w`` (``B = K~^T``, ``m x T``): for each N-tile, pass, PE row ``r``: word ``i`` of tile ``c``
  packs ``K~[nt*W + c*n + i, (kp*est_rows + r)*n + j]``, ``j < n``;

zeros beyond ``m`` (dims), beyond ``n_keys`` (keys) and in words ``>= est_rows`` / tile rows
``>= n``. Memories: ``Q~`` row-major (one projected row of ``max_m`` INT8 containers per
word); ``K~`` **dim-major**: one bank per (dimension ``d``, key group slot ``s``), a word = the
``G = 2*cols`` keys of one key group at that dimension (INT8 containers, ``G`` x 8 bits),
group ``key // G`` in slot ``(key // G) % S`` at address ``key // (S*G)``, ``S =
min(4, ceil(max_t / G))`` slots rounded up to a power of two (4 = the INT2 N-tile, ``W = 4G``
keys). A ``w`` beat reads every bank once at the N-tile's address: its ``n`` dims (``base*n +
j``) are a multiplexer over the dimension banks and its ``W`` keys a window of the
``S*G``-key word (INT8 one slot, INT4 two, INT2 all four), so the beat is wiring after two
wide multiplexers per lane (the earlier ``cols*8`` banks by key, one row each, packed every
value of every beat through a per-value chain: half the Verilog of the 32 x 16 lane,
docs/lane.md TODO 6). Rows are written through
``load`` (``target`` 0 = ``Q~``, 1 = ``K~``, ``row`` = the ``max_m`` values as INT8 containers
holding INTp values, ``en`` = one write enable per value: the projection engine
(:class:`attnforge.rtl.lane_proj.Projector`) writes each row column-wise, ``cols`` values
per RMMU output beat).

Both engines step the RMMU's own :class:`attnforge.rtl.rmmu.TileLoops` (the descriptor's
``for nt: for mt: for kp`` nest, here in packed words: ``E`` words per pass, ``W`` keys per
N-tile) with their innermost counter (query / PE row) beside it.

Timing: like :class:`attnforge.rtl.lane_feed.BackFeeder` -- each engine issues a synchronous
read per beat, presents it the next cycle and holds it while stalled: one ``a`` and one ``w``
beat per cycle. A ``tile`` command (``q0``, ``n_keys``, ``m``, ``precision``) is taken when
both engines are idle and no load is pending.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.numbers import Precision
from .rmmu import LANES_PER_PE, Geometry, TileLoops, act_layout, weight_layout

__all__ = ["EstimateFeeder", "EST_PRECISIONS"]

#: Estimate precisions the feeder packs (the lane's ``est_bits`` 8/4/2).
EST_PRECISIONS = (Precision.INT8, Precision.INT4, Precision.INT2)


class EstimateFeeder(wiring.Component):
    """Parameters: ``est_rows`` (E, the estimate group's rows), ``cols``, ``block`` (queries
    per tile = the descriptor's M), ``max_t`` (keys), ``max_m`` (projected width), ``words``
    (activation words per ``a`` beat: the whole RMMU's rows)."""

    def __init__(self, *, est_rows=1, cols=2, block=8, max_t=32, max_m=8, words=None):
        self.est_rows, self.cols, self.block = est_rows, cols, block
        self.max_t, self.max_m = max_t, max_m
        self.words = words or est_rows
        self.banks = cols * LANES_PER_PE
        # K~: banks by (dimension, key-group slot); a group = the INT8 N-tile's 2*cols keys;
        # slots a power of two (the INT4 / INT2 windows of 2 / 4 groups stay aligned)
        self.group = cols * Precision.INT8.lanes
        self.slots = min(LANES_PER_PE // Precision.INT8.lanes,
                         1 << (-(-max_t // self.group) - 1).bit_length())
        self.k_depth = -(-max_t // (self.slots * self.group))
        super().__init__({
            "load": In(stream.Signature(data.StructLayout({
                "target": 1, "addr": range(max_t),
                "row": data.ArrayLayout(signed(8), max_m), "en": max_m}))),
            "tile": In(stream.Signature(data.StructLayout({
                "q0": range(max_t), "n_keys": range(max_t + 1), "m": range(max_m + 1),
                "precision": Precision}))),
            "a": Out(stream.Signature(act_layout(self.words))),
            "w": Out(stream.Signature(weight_layout(cols))),
        })

    def _pack(self, row, base, m_dims, p):
        """Word packing ``row[base*n + j]``, ``j < n = p.lanes`` (p bits each, value ``j`` at
        bits ``j*p``), zero at dims ``>= m_dims`` (a ``Mux`` chain per value: no case
        statement over a wide index). Value ``j`` only ever reads dims ``b*n + j``, so its
        chain compares ``base`` with each ``b`` whose dim ``b*n + j`` is below ``max_m`` (the
        last such dim is the chain's default: a larger ``base`` means a dim ``>= max_m >=
        m_dims``, zeroed; a value no dim below ``max_m`` reaches is the constant 0). A chain
        over every dim ``i < max_m`` would hold ``n - 1`` of ``n`` arms no ``base`` selects."""
        n = p.lanes
        parts = []
        for j in range(n):
            if j >= self.max_m:
                parts.append(Const(0, p.bits))
                continue
            dims = [row[i].as_unsigned()[:p.bits] for i in range(j, self.max_m, n)]
            expr = dims[-1]                  # any larger base: a dim >= max_m >= m_dims
            for b in reversed(range(len(dims) - 1)):
                expr = Mux(base == b, dims[b], expr)
            parts.append(Mux(base * n + j < m_dims, expr, 0))
        return Cat(*parts)

    def _word(self, m, row, base, m_dims, prec, name):
        """:meth:`_pack` at run-time precision ``prec`` (one of :data:`EST_PRECISIONS`; INT8
        is the chain's default, as in the engines' ``n = 16/p``: the ``tile`` command carries
        no other precision)."""
        word = Signal(16, name=name)
        expr = self._pack(row, base, m_dims, EST_PRECISIONS[0])
        for p in EST_PRECISIONS[1:]:
            expr = Mux(prec == p, self._pack(row, base, m_dims, p), expr)
        m.d.comb += word.eq(expr)
        return word

    def elaborate(self, platform):
        m = Module()
        E, cols, bq, nb = self.est_rows, self.cols, self.block, self.banks
        row_bits = 8 * self.max_m
        grp, slots = self.group, self.slots
        mq = Memory(shape=row_bits, depth=self.max_t, init=[])
        m.submodules.mq = mq
        mk = {}                                             # (dim, slot) -> K~ bank
        for dim in range(self.max_m):
            for sl in range(slots):
                mk[dim, sl] = Memory(shape=8 * grp, depth=self.k_depth, init=[])
                m.submodules[f"mk{dim}_{sl}"] = mk[dim, sl]
        wq, rq = mq.write_port(granularity=8), mq.read_port()
        wk = {x: mem.write_port(granularity=8) for x, mem in mk.items()}
        rk = {x: mem.read_port() for x, mem in mk.items()}

        busy_a, busy_w = Signal(), Signal()
        lp = self.load.payload
        m.d.comb += [self.load.ready.eq(~busy_a & ~busy_w),
                     wq.addr.eq(lp.addr), wq.data.eq(lp.row.as_value()),
                     wq.en.eq(Mux(self.load.valid & (lp.target == 0), lp.en, 0))]
        k_lane = Signal(range(grp))                         # the key's byte in its group
        k_slot = Signal(range(max(slots, 2)))
        m.d.comb += [k_lane.eq(lp.addr % grp), k_slot.eq((lp.addr // grp) % slots)]
        k_write = self.load.valid & (lp.target == 1)
        for (dim, sl), port in wk.items():
            m.d.comb += [port.addr.eq(lp.addr // (slots * grp)),
                         port.data.eq(Cat(*[lp.row[dim]] * grp)),
                         port.en.eq(Mux(k_write & lp.en[dim] & (k_slot == sl), 1 << k_lane, 0))]

        tp = self.tile.payload
        q0 = Signal.like(tp.q0)
        n_keys = Signal.like(tp.n_keys)
        m_dims = Signal.like(tp.m)
        prec = Signal(Precision)
        n_lanes = Signal(range(LANES_PER_PE + 1))          # n = 16 / p
        m.d.comb += n_lanes.eq(Mux(prec == Precision.INT2, 8, Mux(prec == Precision.INT4, 4, 2)))
        width = Signal(range(nb + 1))                      # W = cols * n keys per N-tile
        m.d.comb += width.eq(cols * n_lanes)
        words = Signal(range(self.max_m + 1))              # packed words of a row: ceil(m/n)
        m.d.comb += words.eq(Mux(prec == Precision.INT2, (m_dims + 7) >> 3,
                                 Mux(prec == Precision.INT4, (m_dims + 3) >> 2,
                                     (m_dims + 1) >> 1)))
        m.d.comb += self.tile.ready.eq(~busy_a & ~busy_w & ~self.load.valid)
        start = self.tile.valid & self.tile.ready
        with m.If(start):
            m.d.sync += [q0.eq(tp.q0), n_keys.eq(tp.n_keys), m_dims.eq(tp.m),
                         prec.eq(tp.precision), busy_a.eq(1), busy_w.eq(1)]
        geo = Geometry(E, cols, bq, bq, self.max_m, self.max_t)

        def loops(name, step):
            """The RMMU's ``for nt: for mt: for kp`` nest over this descriptor, in packed
            words: ``k0`` = the pass's first word (``E`` per pass), ``n0`` = the N-tile's
            first key (``W`` per tile); one M-tile (``block`` queries)."""
            lp_ = TileLoops(geo)
            m.submodules[name] = lp_
            m.d.comb += [lp_.op.desc.m.eq(bq), lp_.op.desc.k.eq(words),
                         lp_.op.desc.n.eq(n_keys), lp_.op.kstep.eq(E), lp_.op.nstep.eq(width),
                         lp_.clear.eq(start), lp_.step.eq(step)]
            return lp_

        # ---- engine A: for nt, kp, q: Q~[q0 + q] packed, words r < E -------------------------
        a_q = Signal(range(bq))
        a_pend = Signal()
        a_issue = busy_a & (~a_pend | self.a.ready)
        la = loops("loops_a", a_issue & (a_q == bq - 1))
        a_k0_p = Signal.like(la.k0)
        a_tile = _Presented(m, a_issue, m_dims, prec, n_keys, "a_tile")
        m.d.comb += [rq.addr.eq(q0 + a_q), rq.en.eq(a_issue | ~a_pend)]
        with m.If(a_pend & self.a.ready):
            m.d.sync += a_pend.eq(0)
        with m.If(a_issue):
            m.d.sync += [a_pend.eq(1), a_k0_p.eq(la.k0), a_q.eq(Mux(a_q == bq - 1, 0, a_q + 1))]
            with m.If((a_q == bq - 1) & la.last):
                m.d.sync += busy_a.eq(0)
        qrow = Signal(data.ArrayLayout(signed(8), self.max_m))
        m.d.comb += [qrow.eq(rq.data), self.a.valid.eq(a_pend)]
        for r in range(E):
            m.d.comb += self.a.payload.data[r].eq(
                self._word(m, qrow, a_k0_p + r, a_tile.m, a_tile.prec, f"a_word{r}"))

        # ---- engine W: for nt, kp, r: K~ rows of the N-tile's W keys -----------------------
        w_r = Signal(range(max(E, 2)))                     # (a 1-bit counter when E = 1)
        w_r_p, w_pend = Signal.like(w_r), Signal()
        w_issue = busy_w & (~w_pend | self.w.ready)
        lw = loops("loops_w", w_issue & (w_r == E - 1))
        w_k0_p = Signal.like(lw.k0)
        w_tile = _Presented(m, w_issue, m_dims, prec, n_keys, "w_tile")
        key0 = lw.n0                                        # first key of the N-tile
        for port in rk.values():
            m.d.comb += [port.addr.eq(key0 // (slots * grp)), port.en.eq(w_issue | ~w_pend)]
        with m.If(w_pend & self.w.ready):
            m.d.sync += w_pend.eq(0)
        key0_p = Signal.like(key0)
        with m.If(w_issue):
            m.d.sync += [w_pend.eq(1), key0_p.eq(key0), w_k0_p.eq(lw.k0), w_r_p.eq(w_r),
                         w_r.eq(Mux(w_r == E - 1, 0, w_r + 1))]
            with m.If((w_r == E - 1) & lw.last):
                m.d.sync += busy_w.eq(0)
        m.d.comb += self.w.valid.eq(w_pend)
        # the N-tile's keys: a window of W = n*G keys at `off` in each dimension's S*G-key word
        off = Signal(range(max(slots, 2)))                 # in key groups (a multiple of n/2)
        m.d.comb += off.eq((key0_p // grp) % slots)
        base = w_k0_p + w_r_p                              # the beat's packed word (pass, row)
        lanes = {}
        for p in EST_PRECISIONS:
            n = p.lanes
            span = min(slots, n // 2)                       # key groups per N-tile (W / G)
            wbits = 8 * grp * span
            for j in range(n):                             # lane j: dim base*n + j
                row = Const(0, wbits)
                for b in range(-(-self.max_m // n)):
                    dim = b * n + j
                    if dim >= self.max_m:
                        continue
                    word = Cat(*[rk[dim, sl].data for sl in range(slots)])
                    win = Const(0, wbits)
                    for o in range(0, slots, span):        # windows at multiples of W
                        win = Mux(off == o, word[8 * grp * o:8 * grp * (o + span)], win)
                    row = Mux(base == b, win, row)
                lane = Signal(wbits, name=f"k_{p.name.lower()}_{j}")
                m.d.comb += lane.eq(Mux(base * n + j < w_tile.m, row, 0))
                lanes[p, j] = lane
        for c in range(cols):
            for i in range(LANES_PER_PE):
                expr = Const(0, 16)
                for p in EST_PRECISIONS:
                    n = p.lanes
                    x = c * n + i                          # key of word i of tile c
                    if i >= n or x >= grp * min(slots, n // 2):
                        continue                           # (keys beyond max_t: zero)
                    word = Cat(*[lanes[p, j][8 * x:8 * x + p.bits] for j in range(n)])
                    expr = Mux((w_tile.prec == p) & (key0_p + x < w_tile.n_keys), word, expr)
                m.d.comb += self.w.payload.data[c][i].eq(expr)
        return m


class _Presented:
    """The tile command's ``m``, precision and ``n_keys`` as of an engine's last issue: the
    beat it presents is packed from these, so a ``tile`` command taken while that beat waits
    (the engine idle, its last beat stalled) cannot change the beat under ``valid``."""

    def __init__(self, m, issue, m_dims, prec, n_keys, name):
        self.m = Signal.like(m_dims, name=f"{name}_m")
        self.prec = Signal.like(prec, name=f"{name}_prec")
        self.n_keys = Signal.like(n_keys, name=f"{name}_n_keys")
        with m.If(issue):
            m.d.sync += [self.m.eq(m_dims), self.prec.eq(prec), self.n_keys.eq(n_keys)]
