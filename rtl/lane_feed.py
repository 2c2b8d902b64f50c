"""RMMU feeder of the lane's back half (docs/lane.md sections 2 and 4, TODO 1), FX16/INT8, BxB
gathering: from the K, V and Q memories and a tile's kept key blocks it produces the ``a``
beats of the scores descriptor and the ``w`` beats of the scores and A·V descriptors in
``golden.rmmu`` stream order (one M-tile: the RMMU's ``tile_m`` covers the gathered keys).

* scores ``a`` (``A = K_G``): for each N-tile of ``cols`` queries, for each pass ``kp``, for each
  gathered key ``m``: word ``r`` = ``K[key(m), kp*rows + r]``;
* scores ``w`` (``B = Q_b^T``): for each N-tile ``nt``, pass ``kp``, PE row ``r``: tile ``c`` =
  ``Q[q0 + nt*cols + c, kp*rows + r]`` (Q in ``2*cols`` banks by query, row-wide words);
* A·V ``w`` (``B = V_G``): for each N-tile ``nt`` of ``cols`` output columns, pass ``kp`` over
  the gathered keys, PE row ``r``: tile ``c`` = ``V[key(kp*rows + r), nt*cols + c]``;

with ``key(i) = block[i // B] * B + i % B`` (the detector's kept blocks) and zeros beyond ``d``
and ``g``.

HB-BSSA (``n8`` > 0 INT8 blocks in the tile): the scores become two descriptors, FX16 over the
keys of the FX16 blocks, then INT8 over the keys of the INT8 blocks (``golden.lane.run_lane_rmmu``
order); ``fxs`` / ``i8s`` list the gathered slots (positions in ``blk``) of each kind, ascending,
and descriptor position ``i`` of a kind is key ``block[slots[i // B]] * B + i % B``. The INT8
operands are requantized on the fly from the FX16 memories
(:func:`attnforge.rtl.numbers.requantize`: ``k8 = requantize(K, k8_shift, 8)``,
``q8 = requantize(Q, q8_shift, 8)``) and packed two per word (lane 0 low):

* INT8 scores ``a``: for each N-tile of ``2*cols`` queries, pass ``kp`` (``2*rows`` dims), key
  ``m``: word ``r`` = ``k8[key(m), k0 + 2r]`` | ``k8[key(m), k0 + 2r + 1] << 8``;
* INT8 scores ``w``: tile ``c`` word ``i`` (``i < 2``) of PE row ``r`` = ``q8[q0 + n0 + 2c + i,
  k0 + 2r]`` | ``q8[.., k0 + 2r + 1] << 8``.

With ``int8_rows`` > 0 (HB-BSSA's own INT8 row group, docs/lane.md TODO 7) a tile that has both
kinds of blocks sends its INT8 scores descriptor's beats on ``a8`` / ``w8`` instead (the same
stream order for a group of ``int8_rows`` rows), from a second pair of engines on second read
ports of the K memory and the Q banks, concurrently with the FX16 and A·V beats on ``a`` /
``w``; a tile whose blocks are all INT8 keeps them on ``a`` / ``w`` (its INT8 descriptor runs
on the compute group).

Q lives in ``2*cols`` banks by query (``q % (2*cols)``) so that both an FX16 beat (``cols``
consecutive queries) and an INT8 beat (``2*cols``) read each bank once.

Memories are written through ``load`` (``target`` 0 = Q, 1 = K, 2 = V, one row of
``d`` values at ``addr``); a ``tile`` command carries ``q0`` (first query), ``nblk`` and the
kept block indices. Each engine reads one memory row per beat (synchronous read, presented
the next cycle, held while stalled).

``rd`` (:func:`row_read_signature`) is a second reader of the Q and K memories -- the
projection engine's (:class:`attnforge.rtl.lane_proj.Projector`): while ``rd.active`` the Q
bank and K read ports take its address and enable instead of the engines' (the feeder must be
idle then: the lane projects before its first tile), and ``rd.data`` is the row read at the
address of the last cycle with ``rd.en`` (synchronous, held while ``en`` is low).
"""

from amaranth.hdl import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .numbers import requantize
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
    def __init__(self, *, rows=3, cols=2, d=8, bq=8, max_t=32, block=8, tile_m=8, words=None,
                 int8_rows=0):
        # words: activation words per a beat (the whole RMMU's rows; words >= rows are 0)
        self.words = words or rows
        self.int8_rows, self.int8_port = int8_rows, int8_rows > 0
        self.rows, self.cols, self.d, self.bq, self.tile_m = rows, cols, d, bq, tile_m
        self.max_t, self.block = max_t, block
        self.max_blk = max_t // block
        slots = data.ArrayLayout(range(self.max_blk), self.max_blk)
        super().__init__({
            "load": In(stream.Signature(data.StructLayout({
                "target": 2, "addr": range(max_t), "row": data.ArrayLayout(signed(16), d)}))),
            "tile": In(stream.Signature(data.StructLayout({
                "q0": range(max_t), "nblk": range(self.max_blk + 1), "blk": slots,
                "n8": range(self.max_blk + 1), "fxs": slots, "i8s": slots,
                "q8_shift": 4, "k8_shift": 4,
                # per-row granularity: the gathered keys themselves (keys[i], i < nkeys)
                "fine": 1, "nkeys": range(max_t + 1),
                "keys": data.ArrayLayout(range(max_t), max_t)}))),
            "a": Out(stream.Signature(act_layout(self.words))),
            "w": Out(stream.Signature(weight_layout(cols))),
            "rd": In(row_read_signature(max_t, d)),
            **({"a8": Out(stream.Signature(act_layout(self.words))),
                "w8": Out(stream.Signature(weight_layout(cols)))} if self.int8_port else {}),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols, d, bq, b = self.rows, self.cols, self.d, self.bq, self.block
        nb2 = 2 * cols                                   # Q banks
        lb = b.bit_length() - 1
        row_shape = 16 * d
        mk = Memory(shape=row_shape, depth=self.max_t, init=[])
        mv = Memory(shape=row_shape, depth=self.max_t, init=[])
        q_depth = -(-self.max_t // nb2)
        mq = [Memory(shape=row_shape, depth=q_depth, init=[]) for _ in range(nb2)]
        m.submodules.mk, m.submodules.mv = mk, mv
        for c, x in enumerate(mq):
            m.submodules[f"mq{c}"] = x
        wk, wv = mk.write_port(), mv.write_port()
        wq = [x.write_port() for x in mq]
        rk, rv = mk.read_port(), mv.read_port()
        rq = [x.read_port() for x in mq]

        lp = self.load.payload
        for port, tgt in ((wk, 1), (wv, 2)):
            m.d.comb += [port.addr.eq(lp.addr), port.data.eq(lp.row.as_value()),
                         port.en.eq(self.load.valid & (lp.target == tgt))]
        for c, port in enumerate(wq):
            m.d.comb += [port.addr.eq(lp.addr // nb2), port.data.eq(lp.row.as_value()),
                         port.en.eq(self.load.valid & (lp.target == 0) & (lp.addr % nb2 == c))]

        tp = self.tile.payload
        q0 = Signal(range(self.max_t))
        nblk, n8 = Signal(range(self.max_blk + 1)), Signal(range(self.max_blk + 1))
        blk, fxs, i8s = (Signal(data.ArrayLayout(range(self.max_blk), self.max_blk), name=n)
                         for n in ("blk", "fxs", "i8s"))
        q8s, k8s = Signal(4), Signal(4)
        g, g_fx, g8 = (Signal(range(self.max_t + 1), name=n) for n in ("g", "g_fx", "g8"))
        fine, nkeys = Signal(), Signal(range(self.max_t + 1))
        keys = Signal(data.ArrayLayout(range(self.max_t), self.max_t))
        m.d.comb += [g.eq(Mux(fine, nkeys, nblk << lb)), g8.eq(n8 << lb), g_fx.eq(g - g8)]
        n_nt_s, n_nt_8 = -(-bq // cols), -(-bq // nb2)
        n_nt_v = -(-d // cols)

        # Arrays padded to a power-of-two length of their index (Verilator -Wall: complete cases)
        def padded(items, index_range):
            n = 1 << max(0, (index_range - 1).bit_length())
            return Array(list(items) + [0] * (n - len(items)))

        def lookup(arr, i, name):
            bi = Signal(range(self.max_blk), name=name)   # narrow: a complete case
            m.d.comb += bi.eq(i)
            return padded([arr[j] for j in range(self.max_blk)], self.max_blk)[bi]

        tm = self.tile_m

        def fine_key(i):
            """Per-row granularity: ``keys[i]``."""
            ki = Signal(range(self.max_t), name="key_index")
            m.d.comb += ki.eq(i)
            return padded([keys[j] for j in range(self.max_t)], self.max_t)[ki]

        def key(i):
            """Key of gathered position ``i`` (ascending: the A.V order)."""
            return Mux(fine, fine_key(i), (lookup(blk, i >> lb, "blk_index") << lb) | (i & (b - 1)))

        def desc_key(i, int8):
            """Key of position ``i`` of the FX16 (``int8`` 0) or INT8 scores descriptor."""
            slot = Signal(range(self.max_blk), name="slot")
            m.d.comb += slot.eq(Mux(n8 == 0, i >> lb, Mux(int8, lookup(i8s, i >> lb, "i8_index"),
                                                          lookup(fxs, i >> lb, "fx_index"))))
            return Mux(fine, fine_key(i), (lookup(blk, slot, "blk_index") << lb) | (i & (b - 1)))

        def elem(rowval, idx, limit):
            """Element ``idx`` of a row-wide word (0 at or beyond ``limit``)."""
            words = [rowval[16 * j:16 * (j + 1)] for j in range(d)]
            sel = Signal(range(d), name="sel")
            m.d.comb += sel.eq(Mux(idx < d, idx, 0))
            return Mux(idx < limit, padded(words, d)[sel], 0)

        def int8_word(rowval, dim0, shift):
            """Elements ``dim0``, ``dim0 + 1`` requantized to INT8 and packed (lane 0 low).
            Each element is a signal first: ``requantize`` uses its operand several times,
            and every use of an ``Array`` lookup expression is a new ``d``-way multiplexer
            (the 32 x 16 lane's Verilog emission ran out of memory, docs/lane.md TODO 6)."""
            vals = []
            for i in range(2):
                x = Signal(signed(16), name=f"int8_in{i}")
                m.d.comb += x.eq(elem(rowval, dim0 + i, d))
                vals.append(requantize(x, shift, 8).as_signed()[:8])
            return Cat(*vals)

        all8 = ~tp.fine & (tp.n8 == tp.nblk)            # the tile's blocks are all INT8
        own8 = ~tp.fine & (tp.n8 != 0) & (tp.n8 != tp.nblk)   # INT8 beside FX16 blocks
        rd = self.rd
        with m.If(self.tile.valid & self.tile.ready):
            m.d.sync += [q0.eq(tp.q0), nblk.eq(tp.nblk), blk.eq(tp.blk), n8.eq(tp.n8),
                         fxs.eq(tp.fxs), i8s.eq(tp.i8s), q8s.eq(tp.q8_shift),
                         k8s.eq(tp.k8_shift), fine.eq(tp.fine), nkeys.eq(tp.nkeys),
                         keys.eq(tp.keys)]

        def engine_a(rk, out, mode, rows):
            """Scores ``a`` beats, ``[FX16 desc, INT8 desc] x (nt, M-tile, kp, key m)``, read
            through ``rk``; ``mode`` "all" (both descriptors), "main" (the compute group's
            with an INT8 group: FX16 only, or INT8 when the tile has no FX16 block) or "int8"
            (INT8 only: the INT8 group's engine), for a group of ``rows`` PE rows. Returns its
            busy flag."""
            n_kp_s, n_kp_8 = -(-d // rows), -(-d // (2 * rows))
            busy = Signal(name=f"busy_a_{mode}")
            a_ph = Signal(name="a_ph")                    # 0 FX16, 1 INT8
            a_nt, a_kp = Signal(range(n_nt_s), name="a_nt"), Signal(range(n_kp_s), name="a_kp")
            a_m = Signal(range(self.max_t), name="a_m")
            a_m0 = Signal(range(self.max_t), name="a_m0")  # first row of the M-tile
            a_g = Signal(range(self.max_t + 1), name="a_g")
            a_end = Signal(range(self.max_t + 1), name="a_end")
            m.d.comb += [a_g.eq(Mux(a_ph, g8, g_fx)),
                         a_end.eq(Mux(a_m0 + tm < a_g, a_m0 + tm, a_g))]
            a_kp_p, a_ph_p = Signal.like(a_kp), Signal(name="a_ph_p")
            a_pend = Signal(name="a_pend")
            a_issue = busy & (~a_pend | out.ready)
            addr, en = desc_key(a_m, a_ph), a_issue | ~a_pend
            if mode != "int8":                            # the projector's reads share rk
                addr, en = Mux(rd.active, rd.addr, addr), Mux(rd.active, rd.en, en)
            m.d.comb += [rk.addr.eq(addr), rk.en.eq(en)]
            with m.If(a_pend & out.ready):
                m.d.sync += a_pend.eq(0)
            with m.If(a_issue):
                m.d.sync += [a_pend.eq(1), a_kp_p.eq(a_kp), a_ph_p.eq(a_ph)]
                with m.If(a_m == a_end - 1):
                    with m.If(a_kp == Mux(a_ph, n_kp_8, n_kp_s) - 1):
                        m.d.sync += a_kp.eq(0)
                        with m.If(a_end == a_g):
                            m.d.sync += [a_m0.eq(0), a_m.eq(0)]
                            with m.If(a_nt == Mux(a_ph, n_nt_8, n_nt_s) - 1):
                                m.d.sync += a_nt.eq(0)
                                if mode == "all":
                                    with m.If(~a_ph & (n8 != 0)):
                                        m.d.sync += a_ph.eq(1)
                                    with m.Else():
                                        m.d.sync += busy.eq(0)
                                else:
                                    m.d.sync += busy.eq(0)
                            with m.Else():
                                m.d.sync += a_nt.eq(a_nt + 1)
                        with m.Else():
                            m.d.sync += [a_m0.eq(a_end), a_m.eq(a_end)]
                    with m.Else():
                        m.d.sync += [a_kp.eq(a_kp + 1), a_m.eq(a_m0)]
                with m.Else():
                    m.d.sync += a_m.eq(a_m + 1)
            m.d.comb += out.valid.eq(a_pend)
            for r in range(rows):
                fx = elem(rk.data, a_kp_p * rows + r, d)
                i8 = int8_word(rk.data, (a_kp_p * rows + r) * 2, k8s)
                value = i8 if mode == "int8" else Mux(a_ph_p, i8, fx)
                m.d.comb += out.payload.data[r].eq(value)
            with m.If(self.tile.valid & self.tile.ready):
                m.d.sync += [a_nt.eq(0), a_kp.eq(0), a_m.eq(0), a_m0.eq(0),
                             a_ph.eq(all8 if mode != "int8" else 1),
                             busy.eq(1 if mode != "int8" else own8)]
            return busy

        def engine_w(rq, rv, out, mode, rows):
            """``w`` beats: scores (phase 0 FX16, 1 INT8: nt, M-tile, kp, r), A.V (2: nt, kp,
            r), Q read through the bank ports ``rq``, V through ``rv`` (None for "int8");
            ``mode`` "all" (phases 0, 1, 2), "main" (0 or, without FX16 blocks, 1; then 2)
            or "int8" (1: the INT8 group's
            engine), for a group of ``rows`` PE rows. Returns its busy flag."""
            n_kp_s, n_kp_8 = -(-d // rows), -(-d // (2 * rows))
            busy = Signal(name=f"busy_w_{mode}")
            w_ph = Signal(range(3), name="w_ph")
            w_nt = Signal(range(max(n_nt_s, n_nt_v)), name="w_nt")
            w_kp, w_r = Signal(range(self.max_t), name="w_kp"), Signal(range(rows), name="w_r")
            w_ph_p, w_nt_p, w_kp_p, w_r_p = Signal.like(w_ph), Signal.like(w_nt), \
                Signal.like(w_kp), Signal.like(w_r)
            w_mt = Signal(range(self.max_t + 1), name="w_mt")
            w_pend = Signal(name="w_pend")
            w_issue = busy & (~w_pend | out.ready)
            kp_v_last = ((g + rows - 1) // rows) - 1
            # Q banks: the beat's queries start at base = q0 + nt * (cols or 2 cols), a
            # multiple of cols: bank j holds query base + s with s = (j - base) mod 2 cols
            base = Signal(range(self.max_t + nb2 * self.max_t), name="base")
            m.d.comb += base.eq(q0 + w_nt * Mux(w_ph == 1, nb2, cols))
            half = Signal(name="half")
            m.d.comb += half.eq((base // cols) & 1)
            for c, port in enumerate(rq):
                addr, en = base // nb2 + (half if c < cols else 0), w_issue | ~w_pend
                if mode != "int8":                        # the projector's reads share rq
                    addr, en = Mux(rd.active, rd.addr // nb2, addr), Mux(rd.active, rd.en, en)
                m.d.comb += [port.addr.eq(addr), port.en.eq(en)]
            base_p = Signal.like(base)
            pos_v = w_kp * rows + w_r
            if rv is not None:
                m.d.comb += [rv.addr.eq(key(Mux(pos_v < g, pos_v, 0))),
                             rv.en.eq(w_issue | ~w_pend)]
            with m.If(w_pend & out.ready):
                m.d.sync += w_pend.eq(0)
            with m.If(w_issue):
                m.d.sync += [w_pend.eq(1), w_ph_p.eq(w_ph), w_nt_p.eq(w_nt), w_kp_p.eq(w_kp),
                             w_r_p.eq(w_r), base_p.eq(base)]
                with m.If(w_r == rows - 1):
                    m.d.sync += w_r.eq(0)

                    def by_phase(fx, i8, av):
                        return Mux(w_ph == 2, av, Mux(w_ph == 1, i8, fx))
                    kp_last = by_phase(n_kp_s - 1, n_kp_8 - 1, kp_v_last)
                    nt_last = by_phase(n_nt_s - 1, n_nt_8 - 1, n_nt_v - 1)
                    mt_last = by_phase((g_fx + tm - 1) // tm - 1, (g8 + tm - 1) // tm - 1, 0)
                    with m.If(w_kp == kp_last):
                        m.d.sync += w_kp.eq(0)
                        with m.If(w_mt != mt_last):
                            m.d.sync += w_mt.eq(w_mt + 1)
                        with m.Elif(w_nt == nt_last):
                            m.d.sync += [w_mt.eq(0), w_nt.eq(0)]
                            if mode == "int8":
                                m.d.sync += busy.eq(0)
                            else:
                                with m.If(w_ph == 2):
                                    m.d.sync += [w_ph.eq(0), busy.eq(0)]
                                if mode == "all":
                                    with m.Elif((w_ph == 0) & (n8 != 0)):
                                        m.d.sync += w_ph.eq(1)
                                with m.Else():
                                    m.d.sync += w_ph.eq(2)
                        with m.Else():
                            m.d.sync += [w_mt.eq(0), w_nt.eq(w_nt + 1)]
                    with m.Else():
                        m.d.sync += w_kp.eq(w_kp + 1)
                with m.Else():
                    m.d.sync += w_r.eq(w_r + 1)
            m.d.comb += out.valid.eq(w_pend)
            half_p = Signal(name="half_p")
            m.d.comb += half_p.eq((base_p // cols) & 1)
            qrow = []                                     # query base_p + s, s < 2 cols
            for s_ in range(nb2):
                lo_bank, hi_bank = rq[s_].data, rq[(s_ + cols) % nb2].data
                qrow.append(Mux(half_p, hi_bank, lo_bank))
            dim = w_kp_p * rows + w_r_p                   # scores FX16: Q element
            for c in range(cols):
                col = w_nt_p * cols + c                   # A.V: V column
                q8 = [Mux(w_nt_p * nb2 + 2 * c + i < bq,
                          int8_word(qrow[2 * c + i], dim * 2, q8s), 0)
                      for i in range(2)]                  # INT8: queries 2c, 2c + 1 of the beat
                if mode == "int8":
                    w0, w1 = q8
                else:
                    qv = Mux(w_nt_p * cols + c < bq, elem(qrow[c], dim, d), 0)
                    vv = Mux(dim < g, elem(rv.data, col, d), 0)   # A.V: gathered position
                    fx_w = Mux(w_ph_p == 2, vv, qv)
                    w0, w1 = Mux(w_ph_p == 1, q8[0], fx_w), Mux(w_ph_p == 1, q8[1], 0)
                # the whole tile in one assignment (words >= 2 zero-extended, not
                # constant-driven: Verilator -Wall ALWNEVER)
                m.d.comb += out.payload.data[c].eq(Cat(w0, w1))
            with m.If(self.tile.valid & self.tile.ready):
                m.d.sync += [w_mt.eq(0), w_nt.eq(0), w_kp.eq(0), w_r.eq(0),
                             w_ph.eq(Mux(all8, 1, 0) if mode != "int8" else 1),
                             busy.eq(1 if mode != "int8" else own8)]
            return busy

        # the compute group's engines (FX16 scores, A.V; INT8 scores too unless the INT8
        # group has its own) and, with int8_port, the INT8 group's on second read ports: it
        # takes the INT8 descriptor of a tile with FX16 blocks too (concurrently with the
        # FX16 one); a tile whose blocks are all INT8 runs it on the compute group (which
        # would idle otherwise, and is the wider, nearer group: docs/lane.md TODO 7)
        mode = "main" if self.int8_port else "all"
        busy = [engine_a(rk, self.a, mode, rows), engine_w(rq, rv, self.w, mode, rows)]
        if self.int8_port:
            i8 = self.int8_rows
            busy += [engine_a(mk.read_port(), self.a8, "int8", i8),
                     engine_w([x.read_port() for x in mq], None, self.w8, "int8", i8)]
        idle = ~Cat(*busy).any()
        m.d.comb += [self.load.ready.eq(idle), self.tile.ready.eq(idle & ~self.load.valid)]

        # rd: the bank / memory of the row being read, registered with the read
        rd_bank, rd_k = Signal(range(nb2)), Signal()
        with m.If(rd.active & rd.en):
            m.d.sync += [rd_bank.eq(rd.addr % nb2), rd_k.eq(rd.target)]
        q_row = rq[0].data
        for c in range(1, nb2):
            q_row = Mux(rd_bank == c, rq[c].data, q_row)
        m.d.comb += rd.data.eq(Mux(rd_k, rk.data, q_row))
        return m
