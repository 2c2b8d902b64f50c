"""Golden model of progressive quantization and the bitwidth converter (DESIGN.md section 4.5,
SpAtten). Every output bit is defined here.

Key planes
    A key element is a signed ``msb_bits + lsb_bits`` integer ``k``. Its **MSB plane** value is
    ``k >> lsb_bits`` (arithmetic, signed ``msb_bits``), its **LSB plane** value is
    ``k & (2**lsb_bits - 1)`` (unsigned ``lsb_bits``); ``k == (msb << lsb_bits) | lsb``.

Dense packing (:func:`pack_dense`)
    A plane is the stream of its values in order (key 0 element 0, key 0 element 1, ...), each
    ``p`` bits, packed LSB first into ``w``-bit memory words: value ``i`` occupies stream bits
    ``[i*p, (i+1)*p)``, word ``j`` holds stream bits ``[j*w, (j+1)*w)``. When ``p`` does not
    divide ``w`` (e.g. 6 in 64) values straddle word boundaries. Each plane starts on a word
    boundary; the last word is zero-padded.

Bitwidth converter (:func:`convert`)
    Turns a plane's words back into beats of ``lanes`` aligned ``p``-bit fields (unsigned, the
    consumer knows their sign): beat ``b`` lane ``l`` is value ``b*lanes + l``. It emits every
    beat whose bits have all arrived: ``floor(n_words * w / (lanes * p))`` beats.

Progressive quantization (:func:`progressive_query`)
    For a query ``q`` (``dim`` signed ``q_bits`` values) and keys ``K`` (``n x dim``):

    1. fetch the MSB plane; ``s_i = sum_j q_j * (msb_ij << lsb_bits)``;
    2. softmax input ``x_i = requantize(s_i, score_shift, softmax in_bits)``;
       ``p = softmax_fx(x)`` (:mod:`attnforge.golden.softmax`: one statistics pass with the
       online normalizer, then normalization -- the streaming softmax the RTL embeds);
    3. if ``max(p) < threshold`` (unsigned, ``out_frac`` fraction bits; 0 never fetches,
       anything above ``2**out_frac`` always fetches) fetch the LSB plane and recompute 1-2 with
       the full keys ``k_ij``; output those probabilities with ``fetched = 1``. Else output the
       MSB-only probabilities with ``fetched = 0``.

    Memory traffic is counted in bytes of whole words requested: the MSB plane always, the LSB
    plane when fetched; without progressive quantization both planes are always read.
"""

from dataclasses import dataclass, field

import numpy as np

from .numbers import requantize, value_range
from .softmax import SoftmaxFormat, softmax_fx

__all__ = ["pack_dense", "unpack_dense", "convert", "split_planes", "words_for", "PQConfig",
           "progressive_query", "run_queries"]


def pack_dense(values, p, w):
    """Pack ``p``-bit fields (``values mod 2**p``) LSB first into ``w``-bit words (Python ints)."""
    stream = 0
    for i, v in enumerate(values):
        stream |= (int(v) & ((1 << p) - 1)) << (i * p)
    n_words = words_for(len(values), p, w)
    return [(stream >> (j * w)) & ((1 << w) - 1) for j in range(n_words)]


def words_for(n_values, p, w):
    """Words a plane of ``n_values`` ``p``-bit values occupies."""
    return -(-n_values * p // w)


def unpack_dense(words, p, w, n):
    """The first ``n`` unsigned ``p``-bit fields of a packed word list."""
    stream = 0
    for j, word in enumerate(words):
        stream |= int(word) << (j * w)
    return [(stream >> (i * p)) & ((1 << p) - 1) for i in range(n)]


def convert(words, p, w, lanes):
    """Converter output: ``floor(len(words) * w / (lanes * p))`` beats of ``lanes`` fields."""
    n_beats = len(words) * w // (lanes * p)
    fields = unpack_dense(words, p, w, n_beats * lanes)
    return [fields[b * lanes:(b + 1) * lanes] for b in range(n_beats)]


def split_planes(keys, msb_bits, lsb_bits):
    """``(msb, lsb)`` planes of signed ``msb_bits + lsb_bits`` keys."""
    k = np.asarray(keys, dtype=np.int64)
    lo, hi = value_range(msb_bits + lsb_bits)
    if k.size and (k.min() < lo or k.max() > hi):
        raise ValueError(f"keys must lie in [{lo}, {hi}]")
    return k >> lsb_bits, k & ((1 << lsb_bits) - 1)


@dataclass(frozen=True)
class PQConfig:
    """Generator-level parameters of progressive quantization."""
    dim: int = 8
    q_bits: int = 8
    msb_bits: int = 4
    lsb_bits: int = 4
    word_bits: int = 64
    score_shift: int = 4
    softmax: SoftmaxFormat = field(default_factory=lambda: SoftmaxFormat(max_len=64))

    @property
    def key_bits(self):
        return self.msb_bits + self.lsb_bits

    def plane_bytes(self, n_keys, p):
        return words_for(n_keys * self.dim, p, self.word_bits) * self.word_bits // 8


def _probs(q, keys, cfg):
    s = np.asarray(keys, dtype=np.int64) @ np.asarray(q, dtype=np.int64)
    x = requantize(s, cfg.score_shift, cfg.softmax.in_bits)
    return softmax_fx(x, cfg.softmax)


def progressive_query(q, keys, threshold, cfg=PQConfig()):
    """``(probs, fetched, bytes_requested)`` for one query (see the module docstring)."""
    keys = np.asarray(keys, dtype=np.int64)
    msb, _ = split_planes(keys, cfg.msb_bits, cfg.lsb_bits)
    p = _probs(q, msb << cfg.lsb_bits, cfg)
    nbytes = cfg.plane_bytes(len(keys), cfg.msb_bits)
    if int(p.max()) < threshold:
        return _probs(q, keys, cfg), True, nbytes + cfg.plane_bytes(len(keys), cfg.lsb_bits)
    return p, False, nbytes


def run_queries(queries, keys, threshold, cfg=PQConfig()):
    """Summary over many queries against one key set: fraction fetched, bytes with and
    without progressive quantization, and the max |p - p_full_precision| it costs."""
    fetched, nbytes, err = 0, 0, 0.0
    full_bytes = cfg.plane_bytes(len(keys), cfg.msb_bits) + \
        cfg.plane_bytes(len(keys), cfg.lsb_bits)
    for q in queries:
        p, f, b = progressive_query(q, keys, threshold, cfg)
        fetched += f
        nbytes += b
        err = max(err, float(np.abs(p - _probs(q, keys, cfg)).max()))
    n = len(queries)
    return {"queries": n, "fetched_fraction": fetched / n, "bytes_pq": nbytes,
            "bytes_full": full_bytes * n, "saved_fraction": 1 - nbytes / (full_bytes * n),
            "max_err_lsb_vs_full": err}
