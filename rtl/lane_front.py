"""Front half of the attention lane (docs/lane.md section 3, ESTIMATE + DETECT): the RMMU's
estimate row group -> granule pool -> row packer -> detector (BxB granularity), or, with
``fine`` (per-row granularity: element / 1x4 / 1x8, detector code ``gran``), -> row buffer
(:class:`attnforge.rtl.lane_pool.EstimateRows`) -> row packer -> detector, one detector
command per query row of the tile (the tile's fields held from its command; the estimate
descriptor is issued only once the row buffer has taken the tile). The detector is built for
rows of ``max_t`` scores.

One ``tile`` command per query tile of ``block`` rows starts three things (a :class:`Fork`):
the RMMU descriptor ``E_b = requantize(Q~_b K~^T, shift, score_bits)`` (``m = block`` rows of
``Q~``, ``k`` = projected width, ``n`` = keys, rows ``0 .. est_rows-1`` at ``precision``), the
pool command (``n`` keys, ``width = cols * 16/p`` lanes per N-tile beat) and the detector
command (top-k ``k_keep`` of ``ceil(n / block)`` granules -- or, ``select = 1``, every granule
``>= threshold``: a block row may keep none, then its ``idx`` row is one empty beat --,
ELEM mode, scheduler restarted).
The ``a`` (packed ``Q~`` rows) and ``w`` (``K~^T`` tiles) streams go straight to the RMMU group;
a feeder will drive them from the lane's memories (docs/lane.md TODO 1). Outputs are the
detector's ``mask`` and ``idx`` streams: per tile, the kept key blocks.

HB-BSSA: the pool's block sums of squares (``sq``) go through :class:`Int8Flags` (``hb``,
``bound``: run-time inputs held for the head) into a small FIFO; ``flags`` carries one beat per
tile, bit ``j`` = granule ``j`` runs at INT8 if kept (the gather pairs it with the tile's kept
blocks from ``idx``). The FIFO (:data:`FLAG_DEPTH` tiles) lets the estimate run that many
tiles ahead of the gather before the pool waits.

Golden: :func:`attnforge.golden.lane.run_lane` (its ``est`` and ``mask``); the ``a``/``w``
beats come from ``RMMUModel.a_beats/w_beats`` of the estimate descriptors of
:func:`attnforge.golden.lane.run_lane_rmmu`. v0 assumes good tile commands (the lane's config
check rejects the rest before a tile is issued).
"""

from amaranth.hdl import Array, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..golden.numbers import Precision
from .detector import Detector
from ..golden.lane import INT8_BOUND_BITS, sumsq_bits
from .lane_pool import EstimateRows, GranulePool, Int8Flags
from .rmmu import act_layout, weight_layout
from .streams import Fork, RowPacker, StreamFIFO

__all__ = ["LaneFront", "tile_layout", "group_port", "rmmu_out_bits", "FLAG_DEPTH"]

#: Tiles of INT8 flags the front holds for the gather (HB-BSSA).
FLAG_DEPTH = 4


def rmmu_out_bits(max_k):
    """:attr:`attnforge.rtl.rmmu.RMMU.out_bits` of an RMMU built for ``max_k``."""
    from ..golden.rmmu import RMMUModel
    return RMMUModel(max_k=max_k).out_bits


def group_port(rmmu):
    """The member a block that *drives* one row group of an RMMU built with the parameters
    ``rmmu`` (a dict: rows, cols, max_m, max_k, max_n) declares: ``Out`` of the group's
    flipped signature (the block issues ``cmd``/``a``/``w`` and takes ``o``); join it to
    ``RMMU.g[i]`` with ``wiring.connect``."""
    from .rmmu import group_signature
    return Out(group_signature(rmmu["rows"], rmmu["cols"], rmmu["max_m"], rmmu["max_k"],
                               rmmu["max_n"], rmmu_out_bits(rmmu["max_k"])).flip())


def tile_layout(max_t, max_k, score_bits=8):
    return data.StructLayout({
        "n": range(max_t + 1),            # keys
        "k": range(max_k + 1),            # projected width m
        "precision": Precision,           # estimate precision (INT2/4/8)
        "shift": 6,                       # est_shift
        "k_keep": range(max_t + 1),       # top-k granules kept per block row
        "select": 1,                      # 0 top-k, 1 threshold (block kept if score >= it)
        "threshold": signed(score_bits + 1),
    })


class LaneFront(wiring.Component):
    """Parameters: ``est_rows``, ``cols`` (the estimate group: rows ``0 .. est_rows-1``),
    ``block`` (B: tile rows and granule width), ``max_t`` (keys), ``max_k`` (projected width),
    ``score_bits``, ``det_per_beat`` (detector P), ``rmmu`` (the parameters of the RMMU whose
    group ``g`` drives: ``rows, cols, tile_m, max_m, max_k, max_n``; default an array of just
    the estimate rows). The RMMU itself is outside (:class:`attnforge.rtl.lane_core.LaneCore`
    shares one array between this group and the compute group; :class:`WithRMMU` gives a
    block its own)."""

    def __init__(self, *, est_rows=1, cols=2, block=8, max_t=64, max_k=16, score_bits=8,
                 det_per_beat=1, rmmu=None):
        self.est_rows, self.cols, self.block = est_rows, cols, block
        self.max_t, self.max_k, self.score_bits = max_t, max_k, score_bits
        self.det_per_beat = det_per_beat
        self.rmmu_params = rmmu or dict(rows=est_rows, cols=cols, tile_m=block, max_m=block,
                                        max_k=max_k, max_n=max_t)
        # max_len = max_t: element granularity puts a whole estimate row through the detector
        self.detector = Detector(per_beat=det_per_beat, max_len=max(2, max_t),
                                 score_bits=score_bits, sched_lanes=1)
        self.max_blk = max(1, max_t // block)
        self.rows = EstimateRows(lanes=cols * 8, in_bits=rmmu_out_bits(self.rmmu_params["max_k"]),
                                 score_bits=score_bits, bq=block, max_n=max_t,
                                 min_width=cols * 2)
        self.flagger = Int8Flags(per_beat=max(1, cols * 8 // block),
                                 sq_bits=sumsq_bits(block, score_bits), max_blk=self.max_blk,
                                 bound_bits=INT8_BOUND_BITS)
        super().__init__({
            "hb": In(1),                                # HB-BSSA on (run-time, held)
            "fine": In(1),                              # per-row granularity (run-time, held)
            "gran": In(3),                              # its detector code (ELEM, VEC4, VEC8)
            "bound": In(INT8_BOUND_BITS),               # int8_bound
            "flags": Out(self.flagger.o.signature),     # per tile: INT8 granules
            "tile": In(stream.Signature(tile_layout(max_t, max_k))),
            "g": group_port(self.rmmu_params),
            "a": In(stream.Signature(act_layout(self.rmmu_params["rows"]))),
            "w": In(stream.Signature(weight_layout(cols))),
            "mask": Out(self.detector.signature.members["mask"].signature),
            "idx": Out(self.detector.signature.members["idx"].signature),
        })

    def elaborate(self, platform):
        m = Module()
        b, lanes = self.block, self.cols * 8
        m.submodules.pool = pool = GranulePool(lanes=lanes,
                                               in_bits=rmmu_out_bits(self.rmmu_params["max_k"]),
                                               score_bits=self.score_bits, block=b,
                                               max_n=self.max_t)
        m.submodules.pack = pack = RowPacker(lanes // b, self.det_per_beat,
                                             signed(self.score_bits))
        m.submodules.det = det = self.detector
        m.submodules.fork = fork = Fork(tile_layout(self.max_t, self.max_k), 3)
        g = self.g
        wiring.connect(m, wiring.flipped(self.tile), fork.i)
        wiring.connect(m, wiring.flipped(self.a), wiring.flipped(g.a))
        wiring.connect(m, wiring.flipped(self.w), wiring.flipped(g.w))
        m.submodules.rows = rows = self.rows
        m.submodules.pack_rows = pack2 = RowPacker(lanes, self.det_per_beat,
                                                   signed(self.score_bits))
        fine = self.fine
        # the estimate's output beats: to the pool (BxB) or the row buffer (per row)
        for dst in (pool.i, rows.i):
            m.d.comb += dst.payload.eq(g.o.payload)
        m.d.comb += [pool.i.valid.eq(g.o.valid & ~fine), rows.i.valid.eq(g.o.valid & fine),
                     g.o.ready.eq(Mux(fine, rows.i.ready, pool.i.ready))]
        wiring.connect(m, pool.o, pack.i)
        wiring.connect(m, rows.o, pack2.i)
        m.submodules.flagger = flagger = self.flagger
        m.submodules.flag_fifo = flag_fifo = StreamFIFO(flagger.o.payload.shape(), FLAG_DEPTH,
                                                        buffered=False)
        wiring.connect(m, pool.sq, flagger.i)
        wiring.connect(m, flagger.o, flag_fifo.i)
        wiring.connect(m, flag_fifo.o, wiring.flipped(self.flags))
        m.d.comb += [flagger.enable.eq(self.hb), flagger.bound.eq(self.bound)]
        wiring.connect(m, det.mask, wiring.flipped(self.mask))
        wiring.connect(m, det.idx, wiring.flipped(self.idx))

        # tile command -> RMMU descriptor, pool command, detector command (payload adapters)
        t0, t1, t2 = (fork.o[i] for i in range(3))
        lb = b.bit_length() - 1
        width = Array([self.cols * p.lanes for p in Precision])[t1.payload.precision]
        # per-row granularity: the estimate descriptor only once the row buffer has taken the
        # tile (its output then never waits); detector commands one per row the buffer plays
        est_ok = Signal()
        with m.If(rows.cmd.valid & rows.cmd.ready):
            m.d.sync += est_ok.eq(1)
        with m.If(g.cmd.valid & g.cmd.ready):
            m.d.sync += est_ok.eq(0)
        go_est = ~fine | est_ok
        m.d.comb += [
            g.cmd.valid.eq(t0.valid & go_est), t0.ready.eq(g.cmd.ready & go_est),
            g.cmd.payload.row0.eq(0), g.cmd.payload.nrows.eq(self.est_rows),
            g.cmd.payload.precision.eq(t0.payload.precision), g.cmd.payload.m.eq(b),
            g.cmd.payload.k.eq(t0.payload.k), g.cmd.payload.n.eq(t0.payload.n),
            g.cmd.payload.requant.eq(1),
            g.cmd.payload.out_fmt.eq(Precision.parse(f"int{self.score_bits}")),
            g.cmd.payload.shift.eq(t0.payload.shift),
            pool.cmd.valid.eq(t1.valid & ~fine), rows.cmd.valid.eq(t1.valid & fine),
            t1.ready.eq(Mux(fine, rows.cmd.ready, pool.cmd.ready)),
            pool.cmd.payload.n.eq(t1.payload.n), pool.cmd.payload.width.eq(width),
            rows.cmd.payload.n.eq(t1.payload.n), rows.cmd.payload.width.eq(width),
        ]
        # per-row granularity: one detector command per query row the row buffer plays (the
        # tile's fields are the head's: held from its tile command)
        held = Signal.like(t2.payload)
        owed = Signal(range(2 * b + 1))                 # rows started, not yet commanded
        with m.If(t2.valid & t2.ready & fine):
            m.d.sync += held.eq(t2.payload)
        m.d.sync += owed.eq(owed + Mux(rows.start, b, 0)
                            - (det.cmd.valid & det.cmd.ready & fine))
        cp = Mux(fine, held.as_value(), t2.payload.as_value())
        cp = tile_layout(self.max_t, self.max_k)(cp)
        m.d.comb += [
            det.cmd.valid.eq(Mux(fine, owed != 0, t2.valid)),
            t2.ready.eq(fine | det.cmd.ready),
            det.cmd.payload.mode.eq(~cp.select),
            det.cmd.payload.gran.eq(Mux(fine, self.gran, 0)),
            det.cmd.payload.length.eq(Mux(fine, cp.n, (cp.n + b - 1) >> lb)),
            det.cmd.payload.k.eq(cp.k_keep), det.cmd.payload.restart.eq(1),
            det.cmd.payload.threshold.eq(cp.threshold),
        ]
        # packed granule rows (BxB) or estimate rows -> detector scores (the command carries
        # the row length)
        src = [pack.o, pack2.o]
        m.d.comb += [det.i.valid.eq(Mux(fine, pack2.o.valid, pack.o.valid)),
                     pack.o.ready.eq(det.i.ready & ~fine), pack2.o.ready.eq(det.i.ready & fine)]
        for j in range(self.det_per_beat):
            m.d.comb += det.i.payload.scores[j].eq(Mux(fine, src[1].payload.data[j],
                                                       src[0].payload.data[j]))
        return m
