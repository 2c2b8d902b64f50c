"""Lane core (docs/lane.md section 3): one head of BxB-block sparse attention with the
block = the query tile, from the Q/K/V memories to the output rows, on ONE RMMU with two row
groups (rows ``0 .. est_rows-1``: the front's estimate group; the next ``rows``: the back's
compute group, ``RMMU(groups=2)``):

    tile cmd -> LaneFront (estimate on its RMMU group -> pool -> detector)
             -> gather (detector idx rows -> kept blocks of the tile)
             -> BackFeeder (Q/K/V memories -> a/w beats) -> LaneBack (scores -> softmax -> A·V)
             -> o (the tile's output beats, RMMU o layout)

HB-BSSA (``hb``, ``int8_bound``, ``q8_shift``, ``k8_shift``: run-time, held for the head): the
front's per-tile INT8 flags are paired with the detector's kept blocks in the gather (one flags
beat per tile, taken with the tile's last ``idx`` beat; ``idx`` waits for it); the tile goes to
the feeder and the back with the FX16 and INT8 blocks' slots, and the back runs the INT8 blocks'
scores as their own descriptor -- on the compute group after the FX16 one (``int8_rows = 0``),
or on a third row group of ``int8_rows`` rows after the compute group (``RMMU(groups=3)``),
concurrently with it: the feeder then drives that group's ``a``/``w`` from second read ports
of its Q and K memories (``BackFeeder.a8``/``w8``).

The compute group is shared (:class:`attnforge.rtl.lane_proj.GroupMux`): ``pg`` is a second
driver port of it (the projection engine's, :class:`attnforge.rtl.lane_proj.Projector`, in
the top level) and ``rd`` a second reader of the Q/K memories (``BackFeeder.rd``); while
``rd.active`` the projection engine holds both (it runs before the first tile).

Per-row granularity (``fine``, detector code ``gran``: element / 1x4 / 1x8): the front's
``mask`` beats (one per query row) build the tile's union of kept keys and each row's kept
subset (:meth:`LaneCore._fine_gather`); the feeder reads the listed keys, the back gives each
row's softmax only its own; ``kept`` counts gathered keys.

Limits (TODO in docs/lane.md): the estimate's ``a``/``w`` beats (``Q~`` rows, ``K~^T``
tiles) come in on ``ea``/``ew`` (:class:`attnforge.rtl.lane_est.EstimateFeeder` in the top
level :class:`attnforge.rtl.lane.Lane` makes them); tiles run one after another. A tile whose
block row kept nothing (threshold mode) leaves as one beat on ``empty`` (no descriptor, no
softmax: its output rows are 0, golden ``run_lane``'s empty softmax rows). Dense mode
(``dense = 1``) runs on the compute group only: the feeder's and the probability buffer's pass
structure (``rows`` per pass) is fixed at elaboration, so the estimate rows cannot join at run
time without a run-time row count in both (TODO).
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.lane import INT8_BOUND_BITS
from .lane_back import LaneBack
from .lane_feed import BackFeeder, row_read_signature
from .lane_front import LaneFront, group_port, tile_layout
from .lane_imp import Importance
from .lane_proj import GroupMux
from .rmmu import RMMU

__all__ = ["LaneCore", "WithRMMU"]


class WithRMMU(wiring.Component):
    """A block that drives one RMMU row group through its ``g`` member (LaneFront,
    LaneBack), with an RMMU of its own (``RMMU(groups=1, **block.rmmu_params)``): every other
    member of the block is passed through. For testing a half on its own."""

    def __init__(self, block):
        self.block = block
        self.rmmu = RMMU(groups=1, **block.rmmu_params)
        super().__init__({n: v for n, v in block.signature.members.items() if n != "g"})

    def elaborate(self, platform):
        m = Module()
        m.submodules.block, m.submodules.rmmu = self.block, self.rmmu
        wiring.connect(m, self.rmmu.g[0], self.block.g)
        for name, member in self.signature.members.items():
            outer, inner = getattr(self, name), getattr(self.block, name)
            if member.is_port:                          # a plain signal (e.g. LaneFront.hb)
                m.d.comb += (inner.eq(outer) if member.flow == In else outer.eq(inner))
            elif member.flow == In:
                wiring.connect(m, wiring.flipped(outer), inner)
            else:
                wiring.connect(m, inner, wiring.flipped(outer))
        return m


class LaneCore(wiring.Component):
    """The lane below its top level (module docstring). ``est_rows`` / ``rows`` /
    ``int8_rows``: the RMMU's estimate, compute and (HB-BSSA, 0: none) INT8 row groups, in
    that order from row 0."""

    def __init__(self, *, est_rows=1, rows=3, cols=2, d=8, block=8, max_t=32, max_k=16,
                 frac_bits=8, prob_frac=12, int8_rows=0):
        self.block, self.max_t, self.d = block, max_t, d
        self.int8_rows = int8_rows
        big = max(max_t, d, block, max_k)
        self.rmmu_params = dict(rows=est_rows + rows + int8_rows, cols=cols, tile_m=block,
                                max_m=big, max_k=big, max_n=big)
        self.front = LaneFront(est_rows=est_rows, cols=cols, block=block, max_t=max_t,
                               max_k=max_k, det_per_beat=1, rmmu=self.rmmu_params)
        self.feed = BackFeeder(rows=rows, cols=cols, d=d, bq=block, max_t=max_t, block=block,
                               tile_m=block, words=est_rows + rows + int8_rows,
                               int8_rows=int8_rows)
        self.back = LaneBack(rows=rows, cols=cols, d=d, bq=block, max_t=max_t,
                             frac_bits=frac_bits, prob_frac=prob_frac, row0=est_rows,
                             rmmu=self.rmmu_params, tap=True, int8_rows=int8_rows,
                             int8_row0=est_rows + rows)
        self.importance = Importance(max_t=max_t, prob_bits=prob_frac + 1,
                                     acc_bits=prob_frac + 1 + max(1, (max_t - 1).bit_length()))
        super().__init__({
            "load": In(self.feed.load.signature.flip()),
            "tile": In(stream.Signature(tile_layout(max_t, max_k))),
            "ea": In(self.front.a.signature.flip()),
            "ew": In(self.front.w.signature.flip()),
            "o": Out(self.back.o.signature),
            "empty": Out(stream.Signature(1)),   # a tile that kept no block (payload 0, unused)
            "dense": In(1),          # run-time: every block kept, no estimate (the baseline)
            "clear": In(1),          # a new head: first tile at query 0, kept count 0
            "imp_cmd": In(self.importance.cmd.signature.flip()),  # importance: clear / emit
            "imp": Out(self.importance.o.signature),              # the head's column sums
            "kept": Out(16),         # kept blocks since the last clear (saturating)
            "fine": In(1),           # per-row granularity (run-time, held; gran: its code)
            "gran": In(3),
            "hb": In(1),             # HB-BSSA (run-time, held for the head): INT8 blocks on
            "int8_bound": In(INT8_BOUND_BITS),   # a block whose sum of squares <= the bound
            "q8_shift": In(4), "k8_shift": In(4),  # INT8 copies of Q, K
            # the projection engine: the compute group (while rd.active) and the Q/K memories
            "pg": group_port(self.rmmu_params).flip(),    # (the RMMU's side of the port)
            "rd": In(row_read_signature(max_t, d)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.front = front = self.front
        m.submodules.feed = feed = self.feed
        m.submodules.back = back = self.back
        m.submodules.rmmu = rmmu = RMMU(groups=3 if self.int8_rows else 2, **self.rmmu_params)
        if self.int8_rows:                             # HB-BSSA's INT8 row group
            wiring.connect(m, rmmu.g[2], back.g8)
            wiring.connect(m, feed.a8, back.ka8)
            wiring.connect(m, feed.w8, back.w8)
        wiring.connect(m, rmmu.g[0], front.g)
        m.submodules.gmux = gmux = GroupMux(self.rmmu_params)
        wiring.connect(m, rmmu.g[1], gmux.o)
        wiring.connect(m, gmux.i[0], back.g)
        wiring.connect(m, gmux.i[1], wiring.flipped(self.pg))
        wiring.connect(m, wiring.flipped(self.rd), feed.rd)
        m.d.comb += gmux.sel.eq(self.rd.active)
        wiring.connect(m, wiring.flipped(self.load), feed.load)
        # dense: the tile command bypasses the front (no estimate beats are consumed)
        m.d.comb += [front.tile.payload.eq(self.tile.payload),
                     front.tile.valid.eq(self.tile.valid & ~self.dense)]
        wiring.connect(m, wiring.flipped(self.ea), front.a)
        wiring.connect(m, wiring.flipped(self.ew), front.w)
        wiring.connect(m, feed.a, back.ka)
        wiring.connect(m, feed.w, back.w)
        wiring.connect(m, back.o, wiring.flipped(self.o))
        m.d.comb += front.mask.ready.eq(1)             # the kept blocks come from idx
        m.d.comb += [front.hb.eq(self.hb), front.bound.eq(self.int8_bound),
                     front.fine.eq(self.fine), front.gran.eq(self.gran)]

        # gather: detector idx rows -> (q0, kept blocks) for the feeder and g for the back
        nmax = self.max_t // self.block
        blk = Signal(data.ArrayLayout(range(nmax), nmax))
        nblk = Signal(range(nmax + 1))
        q0 = Signal(range(self.max_t + self.block))
        full = Signal()                                # a tile's block list is complete
        slots = data.ArrayLayout(range(nmax), nmax)
        fxs, i8s = Signal(slots), Signal(slots)        # slots of the FX16 / INT8 blocks
        nfx, n8 = Signal(range(nmax + 1)), Signal(range(nmax + 1))
        fine = self.fine
        m.d.comb += front.idx.ready.eq(Mux(fine, 1, ~full & front.flags.valid))
        tile_done = Signal()                           # the gathered tile has left
        keys, nk, mg = self._fine_gather(m, full, tile_done)
        ng = Signal(range(self.max_t + 1))            # gathered keys (fine) / blocks (BxB)
        m.d.comb += ng.eq(Mux(fine, nk, nblk))
        idx = front.idx.payload
        is8 = front.flags.payload.flags.bit_select(idx.index[0], 1)
        m.d.comb += front.flags.ready.eq(front.idx.valid & front.idx.ready & idx.last)
        with m.If(self.dense):
            m.d.comb += self.tile.ready.eq(~full)
            with m.If(self.tile.valid & ~full):
                n_all = (self.tile.payload.n + self.block - 1) // self.block
                m.d.sync += [nblk.eq(n_all), nfx.eq(n_all), full.eq(1)]
                for j in range(nmax):
                    m.d.sync += [blk[j].eq(j), fxs[j].eq(j)]
        with m.Else():
            m.d.comb += self.tile.ready.eq(front.tile.ready)
        with m.If(front.idx.valid & front.idx.ready & ~fine):
            with m.If(idx.count != 0):
                m.d.sync += nblk.eq(nblk + 1)
                with m.If(is8):
                    m.d.sync += n8.eq(n8 + 1)
                with m.Else():
                    m.d.sync += nfx.eq(nfx + 1)
                for j in range(nmax):                  # blk[nblk] (no case over a wider index)
                    with m.If(nblk == j):
                        m.d.sync += blk[j].eq(idx.index[0])
                    with m.If(is8 & (n8 == j)):
                        m.d.sync += i8s[j].eq(nblk)
                    with m.If(~is8 & (nfx == j)):
                        m.d.sync += fxs[j].eq(nblk)
            with m.If(idx.last):
                m.d.sync += full.eq(1)
        # both consumers take the tile in the same cycle (v0: each is idle between tiles; their
        # ready does not depend on valid, but this valid does depend on their ready -- a Fork
        # with a register per output is the clean form, TODO)
        # a tile that kept no block (threshold mode) issues no descriptor (an RMMU m = 0 is
        # illegal): one `empty` beat once the back is idle (its previous tile's output rows
        # are all out), the O buffer plays Bq zero rows
        idle = full & feed.tile.ready & back.tile.ready
        go = idle & (ng != 0)
        m.d.comb += self.empty.valid.eq(idle & (ng == 0))
        m.d.comb += [feed.tile.valid.eq(go), back.tile.valid.eq(go),
                     feed.tile.payload.q0.eq(q0), feed.tile.payload.nblk.eq(nblk),
                     feed.tile.payload.blk.eq(blk), feed.tile.payload.n8.eq(n8),
                     feed.tile.payload.fxs.eq(fxs), feed.tile.payload.i8s.eq(i8s),
                     feed.tile.payload.q8_shift.eq(self.q8_shift),
                     feed.tile.payload.k8_shift.eq(self.k8_shift),
                     feed.tile.payload.fine.eq(fine), feed.tile.payload.nkeys.eq(nk),
                     feed.tile.payload.keys.eq(keys),
                     back.tile.payload.fine.eq(fine), back.tile.payload.mg.eq(mg),
                     back.tile.payload.g.eq(Mux(fine, nk, nblk * self.block)),
                     back.tile.payload.n8.eq(n8),
                     back.tile.payload.fxs.eq(fxs), back.tile.payload.i8s.eq(i8s),
                     back.tile.payload.shift8.eq(self.back.frac_bits - self.q8_shift
                                                 - self.k8_shift)]
        # importance: the back's probabilities (gathered positions) -> keys of the back's tile
        m.submodules.imp = imp = self.importance
        wiring.connect(m, wiring.flipped(self.imp_cmd), imp.cmd)
        wiring.connect(m, imp.o, wiring.flipped(self.imp))
        cur = Signal.like(blk)                        # the kept blocks of the back's tile
        cur_keys, cur_fine = Signal.like(keys), Signal()    # (per-row: its gathered keys)
        with m.If(go):
            m.d.sync += [cur.eq(blk), cur_keys.eq(keys), cur_fine.eq(fine)]
        lb = self.block.bit_length() - 1
        pos = back.p.payload.index[0]
        kblk = Signal(range(nmax))
        sel = cur[0]
        for j in range(1, nmax):
            sel = Mux((pos >> lb) == j, cur[j], sel)
        fkey = cur_keys[0]
        for j in range(1, self.max_t):
            fkey = Mux(pos == j, cur_keys[j], fkey)
        m.d.comb += [kblk.eq(sel),
                     imp.i.payload.key.eq(Mux(cur_fine, fkey,
                                              (kblk << lb) | (pos & (self.block - 1)))),
                     imp.i.payload.p.eq(back.p.payload.data[0]),
                     imp.i.valid.eq(back.p.valid & (back.p.payload.count != 0)),
                     back.p.ready.eq(imp.i.ready | (back.p.payload.count == 0))]

        m.d.comb += tile_done.eq(go | (self.empty.valid & self.empty.ready))
        with m.If(tile_done):
            m.d.sync += [full.eq(0), nblk.eq(0), nfx.eq(0), n8.eq(0), q0.eq(q0 + self.block)]
            with m.If(self.kept + ng < (1 << 16)):
                m.d.sync += self.kept.eq(self.kept + ng)
        with m.If(self.clear):
            m.d.sync += [q0.eq(0), self.kept.eq(0)]
        return m

    def _fine_gather(self, m, full, done):
        """Per-row granularity (``fine``): the detector's ``mask`` beats of the tile's ``block``
        query rows (granule bits, expanded to keys by ``gran``) -> the union of their kept keys
        as a list ``keys[0 .. nk-1]`` (ascending, one key per cycle once the last row is in,
        lowest remaining bit first) and each row's kept subset in gathered coordinates
        (``mg[q]`` bit ``i``: row ``q`` keeps ``keys[i]``). Sets ``full`` when the list is
        complete (at once for an empty union: an empty tile). Returns ``(keys, nk, mg)``."""
        n, bq = self.max_t, self.block
        front, fine = self.front, self.fine
        keys = Signal(data.ArrayLayout(range(n), n))
        nk = Signal(range(n + 1))
        mg = Signal(data.ArrayLayout(n, bq))
        rowmask = Signal(data.ArrayLayout(n, bq))
        union, rem = Signal(n), Signal(n)
        row, building = Signal(range(bq)), Signal()
        gm = front.mask.payload.mask
        km = Signal(n)                                 # the row's kept keys
        for j in range(n):
            m.d.comb += km[j].eq(Mux(self.gran == 1, gm[j >> 2],
                                     Mux(self.gran == 2, gm[j >> 3], gm[j])))
        m.d.comb += front.mask.ready.eq(Mux(fine, ~full & ~building, 1))
        with m.If(front.mask.valid & front.mask.ready & fine):
            m.d.sync += [rowmask[row].eq(km), union.eq(union | km), row.eq(row + 1)]
            with m.If(row == bq - 1):
                m.d.sync += [row.eq(0), building.eq(1), rem.eq(union | km)]
        low = Signal(range(n))                         # lowest remaining key
        expr = n - 1
        for j in reversed(range(n)):
            expr = Mux(rem[j], j, expr)
        m.d.comb += low.eq(expr)
        slot = Signal(range(n))                        # nk narrowed: a complete case
        m.d.comb += slot.eq(nk)
        with m.If(building):
            with m.If(rem == 0):
                m.d.sync += [building.eq(0), full.eq(1)]
            with m.Else():
                m.d.sync += [keys[slot].eq(low), nk.eq(nk + 1),
                             rem.eq(rem & ~(1 << low))]
                for q in range(bq):
                    m.d.sync += mg[q].bit_select(slot, 1).eq(rowmask[q].bit_select(low, 1))
                with m.If((rem & (rem - 1)) == 0):
                    m.d.sync += [building.eq(0), full.eq(1)]
        with m.If(done):
            m.d.sync += [nk.eq(0), union.eq(0)]
        return keys, nk, mg
