"""Golden model of the RMMU, the reconfigurable PE array (DESIGN.md section 4.2, DOTA Sec. 6.2).

Contract (timing-free; the RTL produces exactly these output beats, in order, per row group):

* The array has ``rows x cols`` multi-precision PEs. A GEMM ``C = A @ B`` (``A``: M x K,
  ``B``: K x N, signed values of the operation's precision ``p``, ``n = 16 / p`` values per
  16-bit word) runs on a *row group*: the contiguous PE rows ``row0 .. row0 + nrows - 1``, all
  at precision ``p``. Groups with disjoint rows run concurrently, each on its own ports.
* Dataflow: weight-stationary. PE ``(r, c)`` of the group holds an ``n x n`` tile of ``B``: in
  *pass* ``kp`` and *N-tile* ``nt`` its tile row ``i`` packs ``B[k0 + r*n + j, n0 + c*n + i]``
  for ``j < n`` (lane ``j`` in the low bits), with ``k0 = kp * nrows * n`` and
  ``n0 = nt * cols * n``. A pass covers ``nrows * n`` values of K; ``P = ceil(K / (nrows*n))``
  passes cover K and ``T_n = ceil(N / (cols*n))`` N-tiles cover N. M is processed in M-tiles of
  ``tile_m`` rows (the depth of the group's accumulator memory).
* Stream order (:func:`a_beats`, :func:`w_beats`, :func:`o_beats`)::

      for nt in N-tiles:  for mt in M-tiles:  for kp in passes:
          w: nrows beats, beat r = the cols tiles of PE row r (cols x 8 words, rows >= n unused)
          a: one beat per m of the M-tile, word r = A[m, k0 + r*n : k0 + (r+1)*n] packed
      o: per (nt, mt), after its last pass: one beat per m, lane j = C[m, n0 + j]

  ``A`` is streamed once per N-tile and ``B`` once per M-tile: the array stores neither.
* Results: ``C`` at full width (no lane can wrap: lanes are ``acc_bits(p, 1, max_k)`` wide), or,
  with ``requant``, ``requantize(C, shift, out_fmt.bits)`` (round half to even, saturate; the
  output format and shift are run-time, e.g. FX16 with ``shift = frac_bits``).
  Lanes ``j >= min(cols*n, N - n0)`` of an output beat are zero. Activation lanes beyond K and
  weight columns beyond N are ignored (masked), so padding content does not matter.
* A descriptor with ``nrows = 0``, ``row0 + nrows > rows``, ``M``, ``K`` or ``N`` equal to 0 or
  above its bound is rejected: the group emits one output beat with ``error`` set and consumes
  no ``a``/``w`` beats.
"""

from dataclasses import dataclass

import numpy as np

from .numbers import Precision, acc_bits, pack, requantize, value_range

__all__ = ["Descriptor", "RMMUModel", "peak_macs", "tile_counts"]

#: Words per PE tile (an INT2 tile has 8 rows of 8 values).
TILE_WORDS = 8


@dataclass(frozen=True)
class Descriptor:
    """One GEMM on one row group."""
    row0: int
    nrows: int
    precision: Precision
    m: int
    k: int
    n: int
    requant: bool = False
    out_fmt: Precision = Precision.FX16
    shift: int = 0


def tile_counts(desc, cols, tile_m):
    """``(N-tiles, M-tiles, passes)`` of a descriptor."""
    n = Precision(desc.precision).lanes
    return (-(-desc.n // (cols * n)), -(-desc.m // tile_m), -(-desc.k // (desc.nrows * n)))


def peak_macs(nrows, cols, precision):
    """MACs per cycle of ``nrows`` PE rows at ``precision`` (the utilization denominator)."""
    return nrows * cols * Precision(precision).macs_per_word


class RMMUModel:
    """Reference for :class:`attnforge.rtl.rmmu.RMMU` with the same generator parameters."""

    def __init__(self, *, rows=32, cols=16, groups=2, tile_m=32, max_m=4096, max_k=4096,
                 max_n=4096):
        self.rows, self.cols, self.groups, self.tile_m = rows, cols, groups, tile_m
        self.max_m, self.max_k, self.max_n = max_m, max_k, max_n

    @property
    def out_bits(self):
        """Width of an output lane: the widest accumulator (FX16 over ``max_k`` products)."""
        return max(self.acc_bits(p) for p in Precision)

    def acc_bits(self, precision):
        return acc_bits(Precision(precision).bits, 1, self.max_k)

    def error(self, desc):
        """Why the hardware rejects ``desc`` (a string), or ``None`` when it runs it."""
        if not 1 <= desc.nrows or desc.row0 + desc.nrows > self.rows:
            return f"rows {desc.row0}..{desc.row0 + desc.nrows - 1} outside 0..{self.rows - 1}"
        for name, bound in (("m", self.max_m), ("k", self.max_k), ("n", self.max_n)):
            if not 1 <= getattr(desc, name) <= bound:
                return f"{name} = {getattr(desc, name)} outside 1..{bound}"
        return None

    def gemm(self, desc, a, b):
        """``C`` (M x N int64) as the output lanes carry it: full width or requantized."""
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        p = Precision(desc.precision)
        lo, hi = value_range(p.bits)
        if a.shape != (desc.m, desc.k) or b.shape != (desc.k, desc.n):
            raise ValueError(f"A must be {desc.m} x {desc.k} and B {desc.k} x {desc.n}")
        if min(a.min(), b.min()) < lo or max(a.max(), b.max()) > hi:
            raise ValueError(f"operands must be {p.name} values in [{lo}, {hi}]")
        c = a @ b
        if desc.requant:
            c = requantize(c, desc.shift, Precision(desc.out_fmt).bits)
        return c

    # -- stream formatting -----------------------------------------------------------------------

    def _pad(self, desc, x, shape, rng):
        """``x`` zero- or randomly (``rng``) padded to ``shape``: padding must not matter."""
        lo, hi = value_range(Precision(desc.precision).bits)
        out = (rng.integers(lo, hi + 1, size=shape) if rng is not None
               else np.zeros(shape, dtype=np.int64))
        x = np.asarray(x, dtype=np.int64)
        out[:x.shape[0], :x.shape[1]] = x
        return out

    def a_beats(self, desc, a, rng=None):
        """Activation beats, shape ``(beats, rows)`` of 16-bit words (words >= nrows zero)."""
        p = Precision(desc.precision)
        n = p.lanes
        t_n, t_m, passes = tile_counts(desc, self.cols, self.tile_m)
        ap = self._pad(desc, a, (desc.m, passes * desc.nrows * n), rng)
        # words[kp, m, r]: the n values of row r in pass kp
        words = pack(ap.reshape(desc.m, passes, desc.nrows, n), p).transpose(1, 0, 2)
        beats = []
        for _nt in range(t_n):
            for mt in range(t_m):
                ms = slice(mt * self.tile_m, min(desc.m, (mt + 1) * self.tile_m))
                for kp in range(passes):
                    beats.append(words[kp, ms])
        out = np.concatenate(beats)
        full = np.zeros((len(out), self.rows), dtype=np.int64)
        full[:, :desc.nrows] = out
        return full

    def w_beats(self, desc, b, rng=None):
        """Weight beats, shape ``(beats, cols, 8)`` of 16-bit words (tile rows >= n zero)."""
        p = Precision(desc.precision)
        n = p.lanes
        t_n, t_m, passes = tile_counts(desc, self.cols, self.tile_m)
        bp = self._pad(desc, b, (passes * desc.nrows * n, t_n * self.cols * n), rng)
        # bp[kp, r, j, nt, c, i] -> tile word [kp, nt, r, c, i] packs j
        t = bp.reshape(passes, desc.nrows, n, t_n, self.cols, n)
        words = pack(t.transpose(0, 3, 1, 4, 5, 2), p)        # (kp, nt, r, c, i)
        beats = []
        for nt in range(t_n):
            for _mt in range(t_m):
                for kp in range(passes):
                    beats.append(words[kp, nt])
        out = np.concatenate(beats)                           # (beats, cols, n)
        full = np.zeros((len(out), self.cols, TILE_WORDS), dtype=np.int64)
        full[:, :, :n] = out
        return full

    def o_beats(self, desc, a, b):
        """Expected output beats: ``(lanes (beats, cols*8) int64, last (beats,) bool)``, or a
        single error beat (``lanes`` None) for a rejected descriptor."""
        if self.error(desc):
            return None, np.array([True])
        p = Precision(desc.precision)
        width = self.cols * p.lanes
        c = self.gemm(desc, a, b)
        t_n = tile_counts(desc, self.cols, self.tile_m)[0]
        lanes = np.zeros((t_n * desc.m, self.cols * TILE_WORDS), dtype=np.int64)
        for nt in range(t_n):
            part = c[:, nt * width:(nt + 1) * width]
            lanes[nt * desc.m:(nt + 1) * desc.m, :part.shape[1]] = part
        last = np.zeros(len(lanes), dtype=bool)
        last[-1] = True
        return lanes, last

    def useful_macs(self, desc):
        return desc.m * desc.k * desc.n
