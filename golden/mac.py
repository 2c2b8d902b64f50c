"""Golden model of the multi-precision MAC / PE (DESIGN.md section 4.1, DOTA Fig. 16).

Contract (timing-free; the RTL must produce exactly these output transactions, in order):

* A **weight tile** is a list of up to 8 16-bit row words loaded through the weight port. Row
  ``i`` packs ``W[i][0..n-1]`` like an activation word (lane 0 in the low bits). Rows the load
  does not write are zero. Before the first tile is made active, every weight is zero.
* An **activation word** carries ``data`` (n packed values), ``mode``, ``requant``, ``swap`` and
  ``last``. A word with ``swap`` makes the next loaded tile active *before* it is multiplied:
  the k-th swap activates the k-th loaded tile.
* A **packet** is the run of words up to and including one with ``last``. ``mode`` and
  ``requant`` are taken from the packet's first word (later words' fields are ignored). Lane
  ``i`` of a packet's result is ``sum over words of sum_j W[i][j] * a[j]`` at full width.
* ``requant`` set: each lane is requantized to the packet's own format -- FX16 by
  ``frac_bits`` (the product carries ``2 * frac_bits`` fraction bits), INTp by 0 -- with
  round-half-to-even then saturation (:func:`attnforge.golden.numbers.requantize`).
* ``error`` is set when a packet is longer than ``max_depth`` words; lane ``i`` then wraps
  modulo ``2**lane_bits[i]`` (see :func:`lane_bits`). Within ``max_depth`` no lane can wrap.
* Lanes a mode does not use read as zero.
"""

from dataclasses import dataclass

import numpy as np

from .numbers import Precision, acc_bits, requantize, unpack, wrap

__all__ = ["MAX_LANES", "TILE_ROWS", "lane_bits", "tile_matrix", "word_products", "MACModel"]

#: Output lanes of the PE: INT2 has 8 values per word.
MAX_LANES = 8
#: Rows in a weight tile (INT2: 8 x 8 values).
TILE_ROWS = 8


def lane_bits(max_depth, modes=tuple(Precision)):
    """Accumulator width of each of the 8 output lanes for packets of up to ``max_depth`` words.

    Lane ``i`` is used by every mode with more than ``i`` lanes; its width is the largest
    :func:`~attnforge.golden.numbers.acc_bits` among them (lane 0: FX16, lane 1: INT8, ...).
    Unused lanes (for a restricted ``modes``) have width 0.
    """
    widths = []
    for i in range(MAX_LANES):
        w = [acc_bits(p.bits, p.lanes, max_depth) for p in modes if p.lanes > i]
        widths.append(max(w, default=0))
    return tuple(widths)


def tile_matrix(rows, precision):
    """``n x n`` weight matrix of a tile (list of row words; missing rows are zero)."""
    precision = Precision.parse(precision)
    n = precision.lanes
    words = np.zeros(n, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)[:n]
    words[:len(rows)] = rows
    return unpack(words, precision)


def word_products(words, tiles, precision):
    """Per-word lane results ``W @ a`` for many words of one precision.

    ``words``: shape ``(T,)`` packed activation words; ``tiles``: shape ``(T, n, n)``. Returns
    ``(T, n)`` int64.
    """
    a = unpack(words, precision)                         # (T, n)
    return np.einsum("tij,tj->ti", np.asarray(tiles, dtype=np.int64), a)


@dataclass(frozen=True)
class Word:
    data: int
    mode: Precision = Precision.FX16
    last: bool = True
    swap: bool = False
    requant: bool = False


class MACModel:
    """Reference for :class:`attnforge.rtl.mac.MAC` (and its baselines, restricted to their modes).

    Parameters
    ----------
    frac_bits : int
        FX16 fraction bits (requantization shift of an FX16 packet).
    max_depth : int
        Longest packet, in words, the accumulators hold without wrapping.
    """

    def __init__(self, *, frac_bits=8, max_depth=1024, modes=tuple(Precision)):
        self.frac_bits = frac_bits
        self.max_depth = max_depth
        self.modes = tuple(Precision.parse(m) for m in modes)
        self.lane_bits = lane_bits(max_depth, self.modes)

    def run(self, tiles, words):
        """Outputs for the weight ``tiles`` (in load order) and activation ``words``.

        ``words`` is a sequence of :class:`Word` (or dicts with its fields). Returns one dict per
        packet: ``{"mode", "lanes" (8 ints), "error", "requant"}``. A trailing packet with
        no ``last`` word produces nothing (it is still in flight).
        """
        words = [w if isinstance(w, Word) else Word(**w) for w in words]
        if not words:
            return []
        data = np.array([w.data for w in words], dtype=np.int64)
        last = np.array([w.last for w in words], dtype=bool)
        swap = np.array([w.swap for w in words], dtype=bool)
        # Packet index of every word, and its first word (source of mode/requant).
        pkt = np.concatenate([[0], np.cumsum(last)[:-1]])
        first = np.concatenate([[True], last[:-1]])
        first_idx = np.flatnonzero(first)
        pkt_mode = np.array([words[i].mode for i in first_idx], dtype=np.int64)
        pkt_requant = np.array([words[i].requant for i in first_idx], dtype=bool)
        mode = pkt_mode[pkt]
        # Active tile of every word: tile k after the (k+1)-th swap; -1 = all-zero reset tile.
        active = np.cumsum(swap) - 1
        if active.max(initial=-1) >= len(tiles):
            raise ValueError("more swaps than loaded tiles: the RTL would wait for a tile forever")

        per_word = np.zeros((len(words), MAX_LANES), dtype=np.int64)
        for prec in set(Precision(m) for m in mode):
            if prec not in self.modes:
                raise ValueError(f"{prec.name} is not a mode of this MAC")
            sel = np.flatnonzero(mode == prec)
            n = prec.lanes
            mats = np.zeros((len(tiles) + 1, n, n), dtype=np.int64)
            for k, rows in enumerate(tiles):
                mats[k + 1] = tile_matrix(rows, prec)
            per_word[sel, :n] = word_products(data[sel], mats[active[sel] + 1], prec)

        n_pkts = int(last.sum())
        sums = np.zeros((n_pkts, MAX_LANES), dtype=np.int64)
        complete = pkt < n_pkts
        np.add.at(sums, pkt[complete], per_word[complete])
        lengths = np.bincount(pkt[complete], minlength=n_pkts)
        out = []
        for k in range(n_pkts):
            prec = Precision(pkt_mode[k])
            lanes = [int(wrap(sums[k, i], self.lane_bits[i])) if self.lane_bits[i] else 0
                     for i in range(MAX_LANES)]
            if pkt_requant[k]:
                shift = self.frac_bits if prec == Precision.FX16 else 0
                lanes = [int(requantize(v, shift, prec.bits)) if i < prec.lanes else 0
                         for i, v in enumerate(lanes)]
            out.append({"mode": prec, "lanes": lanes,
                        "error": bool(lengths[k] > self.max_depth),
                        "requant": bool(pkt_requant[k])})
        return out
