"""RMMU feeder of the lane's back half (docs/lane.md sections 2 and 4, TODO 1), FX16, BxB
gathering: from the K, V and Q memories and a tile's kept key blocks it produces the ``a``
beats of the scores descriptor and the ``w`` beats of the scores and A·V descriptors in
``golden.rmmu`` stream order (one M-tile: the RMMU's ``tile_m`` covers the gathered keys).

* scores ``a`` (``A = K_G``): for each N-tile of ``cols`` queries, for each pass ``kp``, for each
  gathered key ``m``: word ``r`` = ``K[key(m), kp*rows + r]``;
* scores ``w`` (``B = Q_b^T``): for each N-tile ``nt``, pass ``kp``, PE row ``r``: tile ``c`` =
  ``Q[q0 + nt*cols + c, kp*rows + r]`` (Q in ``cols`` banks by query, row-wide words);
* A·V ``w`` (``B = V_G``): for each N-tile ``nt`` of ``cols`` output columns, pass ``kp`` over
  the gathered keys, PE row ``r``: tile ``c`` = ``V[key(kp*rows + r), nt*cols + c]``;

with ``key(i) = block[i // B] * B + i % B`` (the detector's kept blocks) and zeros beyond ``d``
and ``g``. Memories are written through ``load`` (``target`` 0 = Q, 1 = K, 2 = V, one row of
``d`` values at ``addr``); a ``tile`` command carries ``q0`` (first query), ``nblk`` and the
kept block indices. Each engine reads one memory row per beat (synchronous read, presented
the next cycle, held while stalled).

``rd`` (:func:`row_read_signature`) is a second reader of the Q and K memories -- the
projection engine's (:class:`attnforge.rtl.lane_proj.Projector`): while ``rd.active`` the Q
bank and K read ports take its address and enable instead of the engines' (the feeder must be
idle then: the lane projects before its first tile), and ``rd.data`` is the row read at the
address of the last cycle with ``rd.en`` (synchronous, held while ``en`` is low).
"""

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .rmmu import act_layout, weight_layout

__all__ = ["BackFeeder", "row_read_signature"]


def row_read_signature(max_t, d):
    """A synchronous row read port on the Q (``target`` 0) and K (``target`` 1) memories, as
    the reader sees it: ``active`` (the reader owns the ports), ``addr``, ``target``, ``en``
    -> ``data`` (the ``d`` FX16 values of the row, one cycle after ``en``, held)."""
    return wiring.Signature({
        "active": Out(1), "addr": Out(range(max_t)), "target": Out(1), "en": Out(1),
        "data": In(data.ArrayLayout(signed(16), d))})


class BackFeeder(wiring.Component):
    def __init__(self, *, rows=3, cols=2, d=8, bq=8, max_t=32, block=8, tile_m=8, words=None):
        # words: activation words per a beat (the whole RMMU's rows; words >= rows are 0)
        self.words = words or rows
        self.rows, self.cols, self.d, self.bq, self.tile_m = rows, cols, d, bq, tile_m
        self.max_t, self.block = max_t, block
        self.max_blk = max_t // block
        super().__init__({
            "load": In(stream.Signature(data.StructLayout({
                "target": 2, "addr": range(max_t), "row": data.ArrayLayout(signed(16), d)}))),
            "tile": In(stream.Signature(data.StructLayout({
                "q0": range(max_t), "nblk": range(self.max_blk + 1),
                "blk": data.ArrayLayout(range(self.max_blk), self.max_blk)}))),
            "a": Out(stream.Signature(act_layout(self.words))),
            "w": Out(stream.Signature(weight_layout(cols))),
            "rd": In(row_read_signature(max_t, d)),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols, d, bq, b = self.rows, self.cols, self.d, self.bq, self.block
        lb = b.bit_length() - 1
        row_shape = 16 * d
        mk = Memory(shape=row_shape, depth=self.max_t, init=[])
        mv = Memory(shape=row_shape, depth=self.max_t, init=[])
        mq = [Memory(shape=row_shape, depth=-(-self.max_t // cols), init=[]) for _ in range(cols)]
        m.submodules.mk, m.submodules.mv = mk, mv
        for c, x in enumerate(mq):
            m.submodules[f"mq{c}"] = x
        wk, wv = mk.write_port(), mv.write_port()
        wq = [x.write_port() for x in mq]
        rk, rv = mk.read_port(), mv.read_port()
        rq = [x.read_port() for x in mq]

        busy_a, busy_w = Signal(), Signal()
        m.d.comb += self.load.ready.eq(~busy_a & ~busy_w)
        lp = self.load.payload
        for port, tgt in ((wk, 1), (wv, 2)):
            m.d.comb += [port.addr.eq(lp.addr), port.data.eq(lp.row.as_value()),
                         port.en.eq(self.load.valid & (lp.target == tgt))]
        for c, port in enumerate(wq):
            m.d.comb += [port.addr.eq(lp.addr // cols), port.data.eq(lp.row.as_value()),
                         port.en.eq(self.load.valid & (lp.target == 0) & (lp.addr % cols == c))]

        q0 = Signal(range(self.max_t))
        nblk = Signal(range(self.max_blk + 1))
        blk = Signal(data.ArrayLayout(range(self.max_blk), self.max_blk))
        g = Signal(range(self.max_t + 1))
        m.d.comb += g.eq(nblk << lb)
        m.d.comb += self.tile.ready.eq(~busy_a & ~busy_w & ~self.load.valid)
        n_nt_s, n_kp_s = -(-bq // cols), -(-d // rows)
        n_nt_v = -(-d // cols)

        # Arrays padded to a power-of-two length of their index (Verilator -Wall: complete cases)
        def padded(items, index_range):
            n = 1 << max(0, (index_range - 1).bit_length())
            return Array(list(items) + [0] * (n - len(items)))

        blocks = padded([blk[j] for j in range(self.max_blk)], self.max_t >> lb)
        tm = self.tile_m
        n_mt = Signal(range(self.max_t + 1))             # M-tiles of the scores descriptor
        m.d.comb += n_mt.eq((g + tm - 1) // tm)

        def key(i):
            bi = Signal(range(self.max_blk), name="blk_index")   # narrow: a complete case
            m.d.comb += bi.eq(i >> lb)
            return (blocks[bi] << lb) | (i & (b - 1))

        def elem(rowval, idx, limit):
            """Element ``idx`` of a row-wide word (0 at or beyond ``limit``)."""
            words = [rowval[16 * j:16 * (j + 1)] for j in range(d)]
            sel = Signal(range(d), name="sel")
            m.d.comb += sel.eq(Mux(idx < d, idx, 0))
            return Mux(idx < limit, padded(words, d)[sel], 0)

        # ---- engine A: scores a beats: nt, kp, key m
        a_nt, a_kp, a_m = Signal(range(n_nt_s)), Signal(range(n_kp_s)), Signal(range(self.max_t))
        a_m0 = Signal(range(self.max_t))                  # first row of the M-tile
        a_end = Signal(range(self.max_t + 1))
        m.d.comb += a_end.eq(Mux(a_m0 + tm < g, a_m0 + tm, g))
        a_kp_p = Signal.like(a_kp)
        a_pend = Signal()
        a_issue = busy_a & (~a_pend | self.a.ready)
        rd = self.rd
        m.d.comb += [rk.addr.eq(Mux(rd.active, rd.addr, key(a_m))),
                     rk.en.eq(Mux(rd.active, rd.en, a_issue | ~a_pend))]
        with m.If(a_pend & self.a.ready):
            m.d.sync += a_pend.eq(0)
        with m.If(a_issue):
            m.d.sync += [a_pend.eq(1), a_kp_p.eq(a_kp)]
            with m.If(a_m == a_end - 1):
                with m.If(a_kp == n_kp_s - 1):
                    m.d.sync += a_kp.eq(0)
                    with m.If(a_end == g):
                        m.d.sync += [a_m0.eq(0), a_m.eq(0)]
                        with m.If(a_nt == n_nt_s - 1):
                            m.d.sync += [a_nt.eq(0), busy_a.eq(0)]
                        with m.Else():
                            m.d.sync += a_nt.eq(a_nt + 1)
                    with m.Else():
                        m.d.sync += [a_m0.eq(a_end), a_m.eq(a_end)]
                with m.Else():
                    m.d.sync += [a_kp.eq(a_kp + 1), a_m.eq(a_m0)]
            with m.Else():
                m.d.sync += a_m.eq(a_m + 1)
        m.d.comb += self.a.valid.eq(a_pend)
        for r in range(rows):
            m.d.comb += self.a.payload.data[r].eq(elem(rk.data, a_kp_p * rows + r, d))

        # ---- engine W: scores w (phase 0: nt, kp, r) then A.V w (phase 1: nt, kp, r)
        w_ph = Signal()
        w_nt, w_kp, w_r = Signal(range(max(n_nt_s, n_nt_v))), Signal(range(self.max_t)), \
            Signal(range(rows))
        w_ph_p, w_nt_p, w_kp_p, w_r_p = Signal(), Signal.like(w_nt), Signal.like(w_kp), \
            Signal.like(w_r)
        w_mt = Signal(range(self.max_t + 1))
        w_pend = Signal()
        w_issue = busy_w & (~w_pend | self.w.ready)
        kp_v_last = ((g + rows - 1) // rows) - 1
        for c, port in enumerate(rq):
            own = (q0 >> (cols.bit_length() - 1) if cols & (cols - 1) == 0 else q0 // cols) + w_nt
            m.d.comb += [port.addr.eq(Mux(rd.active, rd.addr // cols, own)),
                         port.en.eq(Mux(rd.active, rd.en, w_issue | ~w_pend))]
        # rd: the bank / memory of the row being read, registered with the read
        rd_bank, rd_k = Signal(range(max(cols, 2))), Signal()
        with m.If(rd.active & rd.en):
            m.d.sync += [rd_bank.eq(rd.addr % cols), rd_k.eq(rd.target)]
        q_row = rq[0].data
        for c in range(1, cols):
            q_row = Mux(rd_bank == c, rq[c].data, q_row)
        m.d.comb += rd.data.eq(Mux(rd_k, rk.data, q_row))
        pos_v = w_kp * rows + w_r
        m.d.comb += [rv.addr.eq(key(Mux(pos_v < g, pos_v, 0))), rv.en.eq(w_issue | ~w_pend)]
        with m.If(w_pend & self.w.ready):
            m.d.sync += w_pend.eq(0)
        with m.If(w_issue):
            m.d.sync += [w_pend.eq(1), w_ph_p.eq(w_ph), w_nt_p.eq(w_nt), w_kp_p.eq(w_kp),
                         w_r_p.eq(w_r)]
            with m.If(w_r == rows - 1):
                m.d.sync += w_r.eq(0)
                kp_last = Mux(w_ph, kp_v_last, n_kp_s - 1)
                nt_last = Mux(w_ph, n_nt_v - 1, n_nt_s - 1)
                mt_last = Mux(w_ph, 0, n_mt - 1)
                with m.If(w_kp == kp_last):
                    m.d.sync += w_kp.eq(0)
                    with m.If(w_mt != mt_last):
                        m.d.sync += w_mt.eq(w_mt + 1)
                    with m.Elif(w_nt == nt_last):
                        m.d.sync += w_mt.eq(0)
                        m.d.sync += w_nt.eq(0)
                        with m.If(w_ph):
                            m.d.sync += [w_ph.eq(0), busy_w.eq(0)]
                        with m.Else():
                            m.d.sync += w_ph.eq(1)
                    with m.Else():
                        m.d.sync += [w_mt.eq(0), w_nt.eq(w_nt + 1)]
                with m.Else():
                    m.d.sync += w_kp.eq(w_kp + 1)
            with m.Else():
                m.d.sync += w_r.eq(w_r + 1)
        m.d.comb += self.w.valid.eq(w_pend)
        for c in range(cols):
            dim = w_kp_p * rows + w_r_p                       # scores: Q element
            col = w_nt_p * cols + c                           # A.V: V column
            pos = w_kp_p * rows + w_r_p                       # A.V: gathered position
            qv = Mux(w_nt_p * cols + c < bq, elem(rq[c].data, dim, d), 0)
            vv = Mux(pos < g, elem(rv.data, col, d), 0)
            m.d.comb += self.w.payload.data[c][0].eq(Mux(w_ph_p, vv, qv))

        with m.If(self.tile.valid & self.tile.ready):
            m.d.sync += [q0.eq(self.tile.payload.q0), nblk.eq(self.tile.payload.nblk),
                         blk.eq(self.tile.payload.blk), busy_a.eq(1), busy_w.eq(1),
                         a_nt.eq(0), a_kp.eq(0), a_m.eq(0), a_m0.eq(0), w_mt.eq(0),
                         w_ph.eq(0), w_nt.eq(0),
                         w_kp.eq(0), w_r.eq(0)]
        return m
