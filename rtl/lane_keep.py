"""Keep-list of the attention lane (SpAtten cascade token pruning, docs/lane.md sections 3
and 5): the tokens a head keeps as keys and values, their kept-key coordinates, the check of
the list, and the importance output mapped back to token coordinates.

Golden: :func:`attnforge.golden.lane.run_lane` with ``keep`` (keys and values restricted to the
kept tokens, every query still computed, importance 0 at a pruned token) and
:func:`attnforge.golden.lane.rtl_keep_error` (the checks below).

* ``i`` takes **every** ``load`` beat of the head (always ready; the lane feeds it the beats it
  takes): ``keep`` = a ``KEEP`` beat, ``token`` = its ``addr``, ``last`` = the load's ``last``.
  A KEEP beat ``j`` (``j`` = KEEP beats so far) records ``token`` as kept key ``j``: bit
  ``token`` of a kept-token vector (``max_t`` flip-flops, cleared in one cycle by ``clear``),
  ``inv[token] = j`` and ``fwd[j] = token`` (two memories with asynchronous read ports: the
  load path looks a K/V row's token up in the cycle it arrives).
* ``error`` (sticky until ``clear``) rises in the cycle after a bad beat: a KEEP beat without
  ``prune``, with ``token >= t``, not above the previous kept token, beyond ``n_keep``, or
  after a non-KEEP beat; with ``prune``, a non-KEEP beat (or the load's ``last``) before
  ``n_keep`` KEEP beats were taken. ``bad`` is the same condition on the payload of ``i``
  (combinational, whether valid or not: the lane's ``load.ready`` may depend on it), for the
  beat that ends the load.
* Lookup (combinational): ``token`` -> ``kept`` (the token is on the list, or ``prune`` is
  off), ``index`` (its kept-key coordinate; the token itself without ``prune``).
* ``imp_i`` -> ``imp_o``: the importance row in kept-key coordinates (``n_keys`` beats,
  ``index`` = kept key) -> ``t`` beats in token coordinates (``index`` = token): a kept token's
  beat is the next input beat, a pruned token's a zero beat; ``last`` on token ``t - 1``.
  Without ``prune`` the beats pass through. The row starts with the first valid input beat
  (the importance unit emits ``n_keys >= 1`` beats); one beat per cycle, no added latency
  (combinational), held while stalled.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["KeepList"]


class KeepList(wiring.Component):
    """Parameters: ``max_t`` (tokens), ``imp_layout`` (the importance row layout,
    :attr:`attnforge.rtl.lane_imp.Importance.out_layout`)."""

    def __init__(self, *, max_t=32, imp_layout):
        self.max_t = max_t
        tb = range(max_t + 1)
        super().__init__({
            "t": In(tb), "n_keep": In(tb), "prune": In(1), "clear": In(1),
            "i": In(stream.Signature(data.StructLayout({"keep": 1, "token": range(max_t),
                                                        "last": 1}))),
            "error": Out(1), "bad": Out(1), "count": Out(tb),
            "token": In(range(max_t)), "kept": Out(1), "index": Out(range(max_t)),
            "imp_i": In(stream.Signature(imp_layout)),
            "imp_o": Out(stream.Signature(imp_layout)),
        })

    def elaborate(self, platform):
        m = Module()
        n = self.max_t
        bits = Signal(n)
        inv = Memory(shape=range(n), depth=n, init=[])
        fwd = Memory(shape=range(n), depth=n, init=[])
        m.submodules.inv, m.submodules.fwd = inv, fwd
        w_inv, w_fwd = inv.write_port(), fwd.write_port()
        r_inv, r_fwd = inv.read_port(domain="comb"), fwd.read_port(domain="comb")

        # ---- the list and its check
        ip = self.i.payload
        prev = Signal(range(n))
        other = Signal()                               # a non-KEEP beat was taken
        m.d.comb += self.i.ready.eq(1)
        bad_keep = ~self.prune | (ip.token >= self.t) | (self.count >= self.n_keep) | other \
            | ((self.count != 0) & (ip.token <= prev))
        short = self.prune & (self.count < self.n_keep)
        m.d.comb += self.bad.eq(Mux(ip.keep, bad_keep | (
            ip.last & (self.count + 1 < self.n_keep)), short))
        take_keep = self.i.valid & ip.keep
        m.d.comb += [w_inv.addr.eq(ip.token), w_inv.data.eq(self.count), w_inv.en.eq(take_keep),
                     w_fwd.addr.eq(self.count), w_fwd.data.eq(ip.token),
                     w_fwd.en.eq(take_keep & (self.count < n))]
        with m.If(take_keep):
            m.d.sync += [prev.eq(ip.token), self.count.eq(self.count + 1),
                         bits.bit_select(ip.token, 1).eq(1)]
        with m.If(self.i.valid & ~ip.keep):
            m.d.sync += other.eq(1)
        with m.If(self.i.valid & self.bad):
            m.d.sync += self.error.eq(1)
        with m.If(self.clear):
            m.d.sync += [bits.eq(0), self.count.eq(0), other.eq(0), self.error.eq(0)]

        # ---- lookup (load path)
        m.d.comb += [r_inv.addr.eq(self.token),
                     self.kept.eq(~self.prune | bits.bit_select(self.token, 1)),
                     self.index.eq(Mux(self.prune, r_inv.data, self.token))]

        # ---- importance: kept-key coordinates -> token coordinates
        tok, j = Signal(range(n)), Signal(range(n + 1))
        hit = Signal()
        active = Signal()              # the row started (its first input beat was valid)
        go = active | self.imp_i.valid
        m.d.comb += [r_fwd.addr.eq(j), hit.eq(~self.prune | ((j < self.n_keep) &
                                                             (r_fwd.data == tok)))]
        op, xp = self.imp_o.payload, self.imp_i.payload
        m.d.comb += [self.imp_o.valid.eq(go & Mux(hit, self.imp_i.valid, 1)),
                     self.imp_i.ready.eq(hit & self.imp_o.ready),
                     op.count.eq(Mux(hit, xp.count, 1)), op.error.eq(hit & xp.error)]
        with m.If(self.prune):
            m.d.comb += [op.index[0].eq(tok), op.data[0].eq(Mux(hit, xp.data[0], 0)),
                         op.last.eq(tok == self.t - 1)]
        with m.Else():
            m.d.comb += [op.index.eq(xp.index), op.data.eq(xp.data), op.last.eq(xp.last)]
        with m.If(self.imp_o.valid & self.imp_o.ready):
            m.d.sync += [tok.eq(Mux(op.last, 0, tok + 1)), j.eq(Mux(op.last, 0, j + hit)),
                         active.eq(~op.last)]
        with m.If(self.clear):
            m.d.sync += [tok.eq(0), j.eq(0), active.eq(0)]
        return m
