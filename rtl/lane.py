"""The attention lane's top level (unit ``lane``, docs/lane.md): one head of BxB-block dynamic
sparse attention (DOTA Fig. 14/15) -- or the dense baseline on the same hardware -- from a
configuration beat and the head's rows to one FX16 output row per query and a status beat.

Composition (every block a Component joined with ``wiring.connect`` where it talks streams)::

    cfg ──> [check] ──error──> status (one beat, error = 1; nothing else consumed)
    load ──> split ──> LaneCore.load (Q, K, V)
                  └──> Projector.load (P_q, P_k)
    Projector (PROJECT: Q~ = Q P_q, K~ = K P_k on the compute group, LaneCore.pg, reading Q/K
               through LaneCore.rd) ──wr──> EstimateFeeder.load (Q~, K~ column writes)
    tile sequencer ──> EstimateFeeder.tile ─a/w─> LaneCore.ea/ew (estimate group, INTp)
                  └──> LaneCore.tile  (front: estimate -> pool -> detector; gather; feeder;
                                       back: scores -> softmax -> A·V on the compute group;
                                       ONE RMMU(groups=2))
    LaneCore.o ──> RowOut (O tile buffer: RMMU N-tile order -> query rows) ──> o
    LaneCore.imp (column sums of P, Importance) ──> importance
    status <── (error, kept blocks, cycles)

Named states (:class:`State`): ``IDLE`` (takes ``cfg``) -> ``LOAD`` (takes ``load`` until a
beat with ``last``) -> (sparse mode) ``PROJECT`` (one command to the projection engine,
until its last ``K~`` write) -> ``TILES`` (issues one tile command per query tile of
``block`` rows to the core -- and in sparse mode to the estimate feeder -- and counts output
rows) ->
``IMPORTANCE`` (the ``T`` column sums of P on ``importance``) -> ``STATUS``
(one status beat) -> ``IDLE``; a bad configuration goes ``IDLE`` -> ``ERROR`` (one status
beat, ``error = 1``) -> ``IDLE``, a bad keep-list ``LOAD`` -> ``ERROR`` after LOAD's ``last``. Reset in any state returns to ``IDLE`` (every register
resets; memory contents are kept but a new head reloads them).

Configuration check (``cfg``): the RTL side of :func:`attnforge.golden.lane.rtl_error` -- t
in ``[1, max_t]`` and a multiple of ``block``, ``est_bits`` in 2/4/8, ``m`` in ``[1, max_m]``,
in every mode ``q8_shift + k8_shift <= frac_bits``, with ``prune``: ``n_keep`` in ``[1, t]``
and a multiple of ``block``; sparse mode also: granularity code = the block's (BxB = the query
tile) or a per-row one (``Gran.ELEM``, ``VEC4``, ``VEC8``: element / 1xV, with ``hb = 0``),
top-k (``select = 0``) with ``k`` in ``[1, n_keys / C]`` (``C`` = the granule's columns:
block, 1, 4 or 8) or threshold
(``select = 1``: a block is kept when its score, the max of its B x B estimates, is
``>= threshold``; a block row may keep none: that tile's output rows are 0, no descriptor is
issued), ``q_shift`` and ``k_shift`` in ``[0, 63]`` (the RMMU's shift). HB-BSSA (``hb = 1``: a
kept block whose sum of squared estimates is ``<= int8_bound`` runs its scores at INT8) is
accepted in sparse mode.

Token pruning (``prune = 1``): the keep-list comes first in LOAD, one ``KEEP`` beat per kept
token (``addr`` = token, ascending, ``n_keep`` beats; :class:`attnforge.rtl.lane_keep.KeepList`
checks them, :func:`attnforge.golden.lane.rtl_keep_error`), then the rows: Q rows at their token,
K and V rows at their kept index (pruned tokens' K/V rows are taken and dropped). Everything
after LOAD works on ``n_keys = n_keep`` keys (``t`` without pruning: the one "number of keys"
signal; the projection engine projects the ``n_keys`` kept K rows); the importance leaves in
token coordinates (``t`` beats, 0 at a pruned token). A bad KEEP beat: the rest of LOAD up to
its ``last`` beat is taken and dropped, then one error status.

Per-row granularity (element / 1xV): the detector sees each query row's estimate (``block``
commands per tile), the tile gathers the union of its rows' kept keys (the scores and A·V
descriptors run over it) and each row's softmax takes its own kept keys only; ``status.kept``
then counts gathered keys (BxB: kept blocks).

Limits (docs/lane.md TODO): tiles run one after another.

Timing: ``status.cycles`` counts from the cycle after the ``load`` beat with ``last`` to the
cycle the last output row's last beat is taken (the head's compute time, loads excluded).
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..golden.detector import Gran
from ..golden.lane import INT8_BOUND_BITS
from ..golden.numbers import Precision
from .lane_core import LaneCore
from .lane_est import EstimateFeeder
from .lane_front import rmmu_out_bits
from .lane_keep import KeepList
from .lane_proj import Projector
from .rmmu import result_layout
from .streams import RowLayout
from .unit import Param, Range, Ref, SimPoint, Synth, Unit

__all__ = ["Lane", "RowOut", "State", "Target", "cfg_layout", "load_layout", "status_layout",
           "BLOCK_GRAN"]

#: The detector granularity code of each block size the lane can run (BxB = the query tile).
BLOCK_GRAN = {8: Gran.BLK8, 16: Gran.BLK16, 32: Gran.BLK32}


class State(enum.Enum, shape=3):
    IDLE = 0
    LOAD = 1
    TILES = 2
    STATUS = 3
    ERROR = 4
    IMPORTANCE = 5
    PROJECT = 6


class Target(enum.Enum, shape=3):
    """``load.target``: which memory a row goes to."""
    Q = 0
    K = 1
    V = 2
    P_Q = 3         # row i of the projection P_q (d x m INT8): P_q[i, :m] in the first m
    P_K = 4         # row i of P_k                                      elements
    KEEP = 5        # keep-list entry (token pruning): ``addr`` = a kept token, first in LOAD


def _tbits(max_t):
    return max_t.bit_length() + 1            # t and k can exceed max_t (checked, not wrapped)


def cfg_layout(max_t, max_m):
    """Payload of ``cfg`` (docs/lane.md section 5)."""
    return data.StructLayout({
        "t": unsigned(_tbits(max_t)), "dense": 1, "est_bits": 4,
        "m": unsigned(max_m.bit_length() + 1), "est_shift": 6, "select": 1,
        "k": unsigned(_tbits(max_t)), "threshold": signed(9), "gran": 3,
        "int8_bound": INT8_BOUND_BITS, "prune": 1,
        "hb": 1, "q8_shift": 4, "k8_shift": 4,           # HB-BSSA: on, INT8 copy shifts
        "q_shift": 7, "k_shift": 7,                      # the projections' shifts
        "n_keep": unsigned(_tbits(max_t))})              # keep-list length (prune)


def load_layout(max_t, d):
    """Payload of ``load``: one row of ``d`` FX16 values for ``target`` at ``addr``; ``last``
    ends the LOAD phase."""
    return data.StructLayout({"target": Target, "addr": range(max(max_t, d)),
                              "row": data.ArrayLayout(signed(16), d), "last": 1})


def status_layout():
    """Payload of `status`: error, kept blocks, cycles (docs/lane.md section 5)."""
    return data.StructLayout({"error": 1, "kept": 16, "cycles": 32})


class RowOut(wiring.Component):
    """O tile buffer: the A·V output beats of one query tile (RMMU order: for each N-tile of
    ``cols`` columns, one beat per query, lane ``j`` = ``O[q, nt*cols + j]``, requantized to
    FX16 by the RMMU) -> one row per query on ``o`` (``cols`` values per beat, ``index`` = the
    column, ``count`` = the columns of that beat, ``last`` on the row's last beat).

    One memory of ``bq * ceil(d/cols)`` words; it takes a whole tile (one beat per cycle, until
    the RMMU's ``last``), then plays it out (one beat per cycle, held while stalled) -- while
    the core computes the next tile's scores, so it costs no cycles unless ``o`` stalls. A beat
    on ``zero`` (taken when the buffer is not playing out) plays a tile of ``bq`` zero rows
    instead (a tile that kept no block; nothing is written)."""

    def __init__(self, *, cols=2, d=8, bq=8, in_bits=36):
        self.cols, self.d, self.bq, self.in_bits = cols, d, bq, in_bits
        self.n_nt = -(-d // cols)
        self.layout = RowLayout(cols, signed(16), max(1, (d - 1).bit_length()))
        super().__init__({
            "i": In(stream.Signature(result_layout(cols, in_bits))),
            "zero": In(stream.Signature(1)),     # a tile of zero rows (payload unused)
            "o": Out(stream.Signature(self.layout)),
        })

    def elaborate(self, platform):
        m = Module()
        cols, bq, nn = self.cols, self.bq, self.n_nt
        mem = Memory(shape=16 * cols, depth=bq * nn, init=[])
        m.submodules.mem = mem
        wp, rp = mem.write_port(), mem.read_port()
        reading, zero = Signal(), Signal()
        m.d.comb += self.zero.ready.eq(~reading)
        with m.If(self.zero.valid & self.zero.ready):
            m.d.sync += [reading.eq(1), zero.eq(1)]
        wq, wnt = Signal(range(bq)), Signal(range(nn))
        m.d.comb += [self.i.ready.eq(~reading), wp.addr.eq(wq * nn + wnt),
                     wp.data.eq(Cat(*[self.i.payload.lanes[j][:16] for j in range(cols)])),
                     wp.en.eq(self.i.valid & ~reading)]
        with m.If(self.i.valid & ~reading):
            m.d.sync += wq.eq(Mux(wq == bq - 1, 0, wq + 1))
            with m.If(wq == bq - 1):
                m.d.sync += wnt.eq(Mux(wnt == nn - 1, 0, wnt + 1))
            with m.If(self.i.payload.last):
                m.d.sync += [reading.eq(1), wq.eq(0), wnt.eq(0)]
        rq, rnt = Signal(range(bq)), Signal(range(nn))
        pend, nt_p, done = Signal(), Signal(range(nn)), Signal()
        issue = reading & ~done & (~pend | self.o.ready)
        m.d.comb += [rp.addr.eq(rq * nn + rnt), rp.en.eq(issue | ~pend)]
        with m.If(pend & self.o.ready):
            m.d.sync += pend.eq(0)
            with m.If(done):
                m.d.sync += [done.eq(0), reading.eq(0), zero.eq(0)]
        with m.If(issue):
            m.d.sync += [pend.eq(1), nt_p.eq(rnt), rnt.eq(Mux(rnt == nn - 1, 0, rnt + 1))]
            with m.If(rnt == nn - 1):
                m.d.sync += rq.eq(Mux(rq == bq - 1, 0, rq + 1))
                with m.If(rq == bq - 1):
                    m.d.sync += done.eq(1)
        words = data.ArrayLayout(signed(16), cols)(rp.data)
        count = Signal(range(cols + 1))
        m.d.comb += [count.eq(Mux(nt_p == nn - 1, self.d - (nn - 1) * cols, cols)),
                     self.o.valid.eq(pend), self.o.payload.count.eq(count),
                     self.o.payload.last.eq(nt_p == nn - 1), self.o.payload.error.eq(0)]
        for j in range(cols):
            m.d.comb += [self.o.payload.data[j].eq(Mux((j < count) & ~zero, words[j], 0)),
                         self.o.payload.index[j].eq(Mux(j < count, nt_p * cols + j, 0))]
        return m


class Lane(wiring.Component):
    """One head of dynamic sparse attention (module docstring). Generator parameters (the
    run-time configuration's bounds): ``max_t`` (longest head), ``d`` (head dimension),
    ``max_m`` (largest projected width), ``rows`` / ``cols`` (the RMMU), ``est_rows`` (its
    estimate group, rows ``0 .. est_rows-1``), ``int8_rows`` (HB-BSSA's own INT8 row group,
    the last ``int8_rows`` rows, running a tile's INT8 scores descriptor concurrently with the
    FX16 one; 0: the INT8 descriptors share the compute group, one after the FX16 one; the
    compute group is the ``rows - est_rows - int8_rows`` rows between), ``block`` (the query
    tile = the BxB block), ``frac_bits`` / ``prob_frac`` (FX16 and probability formats)."""

    def __init__(self, *, max_t=32, d=8, max_m=4, rows=4, cols=2, est_rows=1, int8_rows=0,
                 block=8, frac_bits=8, prob_frac=12):
        self.record.validate(max_t=max_t, d=d, max_m=max_m, rows=rows, cols=cols,
                             est_rows=est_rows, int8_rows=int8_rows, block=block,
                             frac_bits=frac_bits, prob_frac=prob_frac)
        self.max_t, self.d, self.max_m, self.rows, self.cols = max_t, d, max_m, rows, cols
        self.est_rows, self.int8_rows, self.block = est_rows, int8_rows, block
        self.frac_bits, self.prob_frac = frac_bits, prob_frac
        comp = rows - est_rows - int8_rows                 # the compute group's rows
        self.core = LaneCore(est_rows=est_rows, rows=comp, cols=cols, d=d,
                             block=block, max_t=max_t, max_k=max_m, frac_bits=frac_bits,
                             prob_frac=prob_frac, int8_rows=int8_rows)
        self.est = EstimateFeeder(est_rows=est_rows, cols=cols, block=block, max_t=max_t,
                                  max_m=max_m, words=rows)
        self.proj = Projector(rows=comp, row0=est_rows, cols=cols, d=d,
                              max_t=max_t, max_m=max_m, rmmu=self.core.rmmu_params)
        self.out = RowOut(cols=cols, d=d, bq=block,
                          in_bits=rmmu_out_bits(self.core.rmmu_params["max_k"]))
        super().__init__({
            "cfg": In(stream.Signature(cfg_layout(max_t, max_m))),
            "load": In(stream.Signature(load_layout(max_t, d))),
            "o": Out(stream.Signature(self.out.layout)),
            "importance": Out(self.core.imp.signature),
            "status": Out(stream.Signature(status_layout())),
        })

    @property
    def out_layout(self):
        """Payload layout of ``o``."""
        return self.out.layout

    @property
    def imp_layout(self):
        """Payload layout of ``importance``."""
        return self.core.importance.out_layout

    def config_error(self, c):
        """The configuration check on a ``cfg`` payload ``c`` (an expression; see the module
        docstring and :func:`attnforge.golden.lane.rtl_error`)."""
        t_bad = (c.t == 0) | (c.t > self.max_t) | (c.t % self.block != 0)
        bits_bad = (c.est_bits != 2) & (c.est_bits != 4) & (c.est_bits != 8)
        m_bad = (c.m == 0) | (c.m > self.max_m)
        gran = BLOCK_GRAN.get(self.block)
        fine = c.gran <= Gran.VEC8                       # per-row: element, 1x4, 1x8
        gran_bad = ((c.gran != gran) if gran is not None else 1) & ~fine
        shifts8_bad = c.q8_shift + c.k8_shift > self.frac_bits
        keys = Mux(c.prune, c.n_keep, c.t)
        prune_bad = c.prune & ((c.n_keep == 0) | (c.n_keep > c.t) |
                               (c.n_keep % self.block != 0))
        granules = Mux(fine, Mux(c.gran == Gran.VEC8, keys >> 3,
                                 Mux(c.gran == Gran.VEC4, keys >> 2, keys)), keys // self.block)
        topk_bad = (c.select == 0) & ((c.k == 0) | (c.k > granules))
        hb_bad = c.hb & fine                             # HB-BSSA INT8 blocks: BxB only
        sparse_bad = gran_bad | topk_bad | (c.q_shift > 63) | (c.k_shift > 63) | hb_bad
        return t_bad | bits_bad | m_bad | shifts8_bad | prune_bad | (~c.dense & sparse_bad)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.est = est = self.est
        m.submodules.out = out = self.out
        m.submodules.proj = proj = self.proj
        wiring.connect(m, proj.g, core.pg)
        wiring.connect(m, proj.rd, core.rd)
        wiring.connect(m, proj.wr, est.load)
        m.submodules.keep = keep = KeepList(max_t=self.max_t, imp_layout=self.imp_layout)
        wiring.connect(m, est.a, core.ea)
        wiring.connect(m, est.w, core.ew)
        wiring.connect(m, core.o, out.i)
        wiring.connect(m, core.empty, out.zero)
        wiring.connect(m, out.o, wiring.flipped(self.o))
        wiring.connect(m, core.imp, keep.imp_i)
        wiring.connect(m, keep.imp_o, wiring.flipped(self.importance))

        state = Signal(State)
        cfg = Signal(cfg_layout(self.max_t, self.max_m))
        prec = Signal(Precision)
        m.d.comb += prec.eq(Mux(cfg.est_bits == 8, Precision.INT8,
                                Mux(cfg.est_bits == 4, Precision.INT4, Precision.INT2)))
        m.d.comb += [core.dense.eq(cfg.dense), core.hb.eq(cfg.hb),
                     core.fine.eq(~cfg.dense & (cfg.gran <= Gran.VEC8)), core.gran.eq(cfg.gran),
                     core.int8_bound.eq(cfg.int8_bound), core.q8_shift.eq(cfg.q8_shift),
                     core.k8_shift.eq(cfg.k8_shift)]
        cycles = Signal(32)
        rows_out = Signal(range(self.max_t + 1))
        n_tiles = Signal(range(self.max_t + 1))
        m.d.comb += n_tiles.eq(cfg.t // self.block)
        # the number of keys every engine after LOAD works with (kept-key coordinates)
        n_keys = Signal(range(self.max_t + 1))
        m.d.comb += [n_keys.eq(Mux(cfg.prune, cfg.n_keep, cfg.t)),
                     keep.t.eq(cfg.t), keep.n_keep.eq(cfg.n_keep), keep.prune.eq(cfg.prune)]

        # ---- IDLE: configuration -----------------------------------------------------------
        m.d.comb += self.cfg.ready.eq(state == State.IDLE)
        with m.If(self.cfg.valid & self.cfg.ready):
            m.d.sync += [cfg.eq(self.cfg.payload), cycles.eq(0), rows_out.eq(0)]
            m.d.comb += [core.clear.eq(1), keep.clear.eq(1)]
            m.d.sync += state.eq(Mux(self.config_error(self.cfg.payload), State.ERROR,
                                     State.LOAD))

        # ---- LOAD: split the load stream by target (Q/K/V -> core, P_q/P_k -> projector,
        # KEEP -> the keep-list); with prune, K/V rows go to their kept index, pruned ones are
        # dropped; after a bad KEEP beat the rest of LOAD is taken and dropped, then one error
        # status
        lp = self.load.payload
        kv = (lp.target == Target.K) | (lp.target == Target.V)
        m.d.comb += keep.token.eq(lp.addr)
        drop = keep.error | keep.bad | (kv & ~keep.kept)
        to_core = (lp.target.as_value() < 3) & ~drop
        to_proj = ((lp.target == Target.P_Q) | (lp.target == Target.P_K)) & (lp.addr < self.d) \
            & ~drop
        loading = state == State.LOAD
        m.d.comb += [
            core.load.payload.target.eq(lp.target.as_value()[:2]),
            core.load.payload.addr.eq(Mux(kv, keep.index, lp.addr)),
            core.load.payload.row.eq(lp.row),
            core.load.valid.eq(self.load.valid & loading & to_core),
            proj.load.payload.target.eq(lp.target == Target.P_K),
            proj.load.payload.addr.eq(lp.addr),
            proj.load.valid.eq(self.load.valid & loading & to_proj),
            self.load.ready.eq(loading & Mux(to_core, core.load.ready,
                                             Mux(to_proj, proj.load.ready, 1))),
            keep.i.valid.eq(self.load.valid & self.load.ready),
            keep.i.payload.keep.eq(lp.target == Target.KEEP),
            keep.i.payload.token.eq(lp.addr), keep.i.payload.last.eq(lp.last),
        ]
        for j in range(self.max_m):
            m.d.comb += proj.load.payload.row[j].eq(lp.row[j][:8])
        with m.If(self.load.valid & self.load.ready & lp.last):
            m.d.sync += state.eq(Mux(keep.error | keep.bad, State.ERROR,
                                     Mux(cfg.dense, State.TILES, State.PROJECT)))

        # ---- PROJECT (sparse): Q~ (t rows), K~ (the n_keys kept rows) on the compute group
        # into the estimate feeder
        p_issued = Signal()
        project = state == State.PROJECT
        pc = proj.cmd.payload
        m.d.comb += [proj.cmd.valid.eq(project & ~p_issued), pc.t.eq(cfg.t), pc.n.eq(n_keys),
                     pc.m.eq(cfg.m), pc.precision.eq(prec), pc.q_shift.eq(cfg.q_shift),
                     pc.k_shift.eq(cfg.k_shift)]
        with m.If(proj.cmd.valid & proj.cmd.ready):
            m.d.sync += p_issued.eq(1)
        with m.If(proj.done):
            m.d.sync += [state.eq(State.TILES), p_issued.eq(0)]

        # ---- TILES: one command per query tile to the core and (sparse) the est. feeder ------
        c_issued, e_issued = Signal(range(self.max_t + 1)), Signal(range(self.max_t + 1))
        with m.If(self.cfg.valid & self.cfg.ready):
            m.d.sync += [c_issued.eq(0), e_issued.eq(0)]
        tiles = state == State.TILES
        ct = core.tile.payload
        m.d.comb += [ct.n.eq(n_keys), ct.k.eq(cfg.m), ct.precision.eq(prec),
                     ct.shift.eq(cfg.est_shift), ct.k_keep.eq(cfg.k),
                     ct.select.eq(cfg.select), ct.threshold.eq(cfg.threshold),
                     core.tile.valid.eq(tiles & (c_issued < n_tiles))]
        with m.If(core.tile.valid & core.tile.ready):
            m.d.sync += c_issued.eq(c_issued + 1)
        et = est.tile.payload
        m.d.comb += [et.q0.eq(e_issued * self.block), et.n_keys.eq(n_keys), et.m.eq(cfg.m),
                     et.precision.eq(prec),
                     est.tile.valid.eq(tiles & ~cfg.dense & (e_issued < n_tiles))]
        with m.If(est.tile.valid & est.tile.ready):
            m.d.sync += e_issued.eq(e_issued + 1)
        with m.If(tiles | project):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.sync += rows_out.eq(rows_out + 1)
            with m.If(rows_out + 1 == cfg.t):
                m.d.sync += state.eq(State.IMPORTANCE)

        # ---- importance: its t words cleared while the head loads (>= 3t load beats), emitted
        # after the last row
        clear_pend, emit_pend = Signal(), Signal()
        with m.If(self.cfg.valid & self.cfg.ready & ~self.config_error(self.cfg.payload)):
            m.d.sync += clear_pend.eq(1)
        with m.If(self.o.valid & self.o.ready & self.o.payload.last & (rows_out + 1 == cfg.t)):
            m.d.sync += emit_pend.eq(1)
        ic = core.imp_cmd
        m.d.comb += [ic.valid.eq(clear_pend | emit_pend), ic.payload.emit.eq(~clear_pend),
                     ic.payload.n.eq(Mux(clear_pend, cfg.t, n_keys))]
        with m.If(ic.valid & ic.ready):
            with m.If(clear_pend):
                m.d.sync += clear_pend.eq(0)
            with m.Else():
                m.d.sync += emit_pend.eq(0)
        with m.If(self.importance.valid & self.importance.ready & self.importance.payload.last):
            m.d.sync += state.eq(State.STATUS)

        # ---- STATUS / ERROR: one beat -------------------------------------------------------
        sp = self.status.payload
        m.d.comb += [self.status.valid.eq((state == State.STATUS) | (state == State.ERROR)),
                     sp.error.eq(state == State.ERROR),
                     sp.kept.eq(Mux(state == State.ERROR, 0, core.kept)),
                     sp.cycles.eq(Mux(state == State.ERROR, 0, cycles))]
        with m.If(self.status.valid & self.status.ready):
            m.d.sync += state.eq(State.IDLE)
        return m


UNIT = Unit(
    "lane", Lane, "one head of dynamic sparse attention: estimate, detect, gathered FX16 "
    "scores, softmax, A·V on one RMMU with two row groups (three with an INT8 group)",
    (Param("d", Range(1, 256), "head dimension"),
     Param("max_m", Range(1, Ref("d")), "largest projected width m (estimate K)"),
     Param("rows", Range(2, 64), "RMMU rows (estimate + compute + INT8 groups)"),
     Param("est_rows", Range(1, Ref("rows - 1", lambda p: p["rows"] - 1)),
           "rows of the estimate group (rows 0 .. est_rows-1)"),
     Param("int8_rows", Range(0, Ref("rows - est_rows - 1",
                                     lambda p: p["rows"] - p["est_rows"] - 1)),
           "rows of HB-BSSA's own INT8 group (the last rows; 0: INT8 blocks share the "
           "compute group)"),
     Param("cols", Range(1, 64), "RMMU columns"),
     Param("block", Range(Ref("cols"), Ref("8 * cols", lambda p: 8 * p["cols"]),
                          multiple_of="cols", pow2=True),
           "query tile = BxB block (8, 16 or 32 for sparse mode)"),
     Param("max_t", Range(Ref("block"), 1024, multiple_of="block"), "longest head (tokens)"),
     Param("frac_bits", Range(0, 15), "fraction bits of the FX16 Q, K, V, scores, O"),
     Param("prob_frac", Range(1, 15), "fraction bits of the probabilities")),
    sim=(SimPoint(dict(max_t=32, d=8, max_m=4, rows=4, cols=2, est_rows=1, block=8),
                  id="t32-d8-4x2"),
         # HB-BSSA's own INT8 row group (the sim point's 3-row compute group + 1 INT8 row): a
         # second Verilator build, so in `make long` (quick checks: tests/test_lane_lint8.py);
         # the heads that differ from the first point's (testcases: not a soak/coverage point)
         SimPoint(dict(max_t=32, d=8, max_m=4, rows=5, cols=2, est_rows=1, int8_rows=1,
                       block=8), id="t32-d8-5x2-int8", long=True,
                  testcases=("random_heads", "bad_configs", "reset_mid_head",
                             "cycles_vs_model")),
         # DOTA's 32 x 16 RMMU split 16 + 16, d 64 (docs/lane.md TODO 6): RTL == model on
         # the bench's 22 heads (~30 min Verilator build + ~80 min simulation on 2 cores)
         SimPoint(dict(max_t=64, d=64, max_m=16, rows=32, cols=16, est_rows=16, block=16),
                  id="t64-d64-32x16", long=True, testcases=("cycles_vs_model",))),
    synth=Synth(hierarchical=True, boards=("ulx3s-85f",)))
