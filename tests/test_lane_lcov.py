"""Lane coverage closure (issue 16): the estimate feeder's word packing at generator points the
lane's regression point does not build (a projected width ``max_m`` that is not a multiple of
the values per word, several estimate rows), the coverage exclusion records, and the lane's
soak accounting (quick tests; the coverage and soak runs themselves are ``attnforge coverage
lane`` / ``attnforge soak lane``)."""

import random

import numpy as np
import pytest

from attnforge.golden.numbers import Precision, value_range
from attnforge.golden.rmmu import Descriptor, RMMUModel
from attnforge.testbench import quick


@pytest.mark.parametrize("max_m,est_rows,cols,words", [(5, 1, 2, 3), (3, 3, 1, 4), (7, 2, 2, 2)])
@pytest.mark.parametrize("bits", [8, 4, 2])
def test_estimate_feeder_every_width(max_m, est_rows, cols, words, bits):
    """Every projected width ``m`` in ``1 .. max_m`` at INT8/4/2 (one tile command each, at
    random ``q0`` and ``n_keys``, values over the precision's whole range): the ``a`` and
    ``w`` beats equal ``RMMUModel.a_beats`` / ``w_beats`` of the golden descriptor. The packing
    reads dim ``b*n + j`` for value ``j`` of word ``b`` (``rtl/lane_est.py`` ``_pack``), so an
    odd ``max_m`` leaves values whose last dim is the chain's default: a wrong default, or an
    arm for the wrong base, shows here. Consecutive commands change ``m``: a command taken
    while the previous tile's last beat is stalled must not change that beat (it did, before
    the engines packed from the fields of their own last issue: ``_Presented``)."""
    from attnforge.rtl.lane_est import EstimateFeeder
    max_t, block = 16, 8
    rng = np.random.default_rng(100 * max_m + 10 * est_rows + bits)
    lo, hi = value_range(bits)
    qt, kt = (rng.integers(lo, hi + 1, size=(max_t, max_m)) for _ in range(2))
    p = Precision.parse(f"int{bits}")
    model = RMMUModel(rows=words, cols=cols, groups=1, tile_m=block, max_m=32, max_k=32,
                      max_n=32)
    loads = [{"target": tgt, "addr": i, "row": [int(x) for x in mat[i]],
              "en": (1 << max_m) - 1} for tgt, mat in ((0, qt), (1, kt)) for i in range(max_t)]
    tiles, want_a, want_w = [], [], []
    for m in range(1, max_m + 1):
        q0 = int(rng.integers(0, max_t - block + 1))
        n_keys = int(rng.integers(1, max_t + 1))
        d = Descriptor(0, est_rows, p, block, m, n_keys, True, Precision.INT8, 0)
        tiles.append({"q0": q0, "n_keys": n_keys, "m": m, "precision": p})
        want_a += [[int(x) for x in r] for r in model.a_beats(d, qt[q0:q0 + block, :m])]
        want_w += [[[int(x) for x in c] for c in b]
                   for b in model.w_beats(d, kt[:n_keys, :m].T)]
    dut = EstimateFeeder(est_rows=est_rows, cols=cols, block=block, max_t=max_t, max_m=max_m,
                         words=words)
    got_a, got_w = quick.run_feeder(dut, loads, tiles, len(want_a), len(want_w),
                                    random.Random(bits))
    assert got_a == want_a
    assert got_w == want_w


def test_exclusions_waive_only_matching_uncovered_points(tmp_path):
    """An exclusion waives the uncovered points whose Amaranth source (and kind) match, counts
    the matching points that were hit, leaves every other hole listed; the figure after
    exclusions drops the waived points from the denominator."""
    from attnforge.testbench.coverage import Exclusion, parse_dat, summarize
    rec = "C '\x01f\x02m.v\x01l\x02{line}\x01t\x02branch\x01page\x02v_branch/m\x01o\x02{kind}" \
          "\x01h\x02m.{hier}' {count}\n"
    (tmp_path / "a.dat").write_text("# SystemC::Coverage-3\n" + "".join(
        rec.format(line=n, kind=k, hier=h, count=c) for n, k, h, c in (
            (2, "cond_then", "est", 0), (2, "cond_else", "est", 3), (4, "cond_then", "est", 0),
            (4, "cond_else", "est", 0), (6, "if", "det", 0), (6, "else", "det", 5))))
    (tmp_path / "m.v").write_text(
        '(* src = "rtl/x.py:3" *)\n  assign a = s ? b : c;\n'
        '(* src = "rtl/x.py:9" *)\n  assign d = t ? e : f;\n'
        '(* src = "rtl/y.py:5" *)\n  if (g) h = 1;\n')
    ex = (Exclusion(r"rtl/x\.py:3", "test: x.py:3 never selects"),
          Exclusion(r"rtl/x\.py:9", "test: only the then arm", what="cond_then"),
          Exclusion(r"rtl/y\.py:5", "test: another instance", hier=r"\.est$"),
          Exclusion(r"rtl/z\.py:1", "test: matches nothing"))
    s = summarize(parse_dat(tmp_path / "a.dat"), tmp_path / "m.v", ex)
    assert (s["line_points"], s["line_covered"], s["excluded_points"]) == (6, 2, 2)
    assert s["line_pct"] == 33.3 and s["line_pct_after_exclusions"] == 50.0
    assert [(h["line"], h["what"]) for h in s["uncovered_lines"]] == [(4, "cond_else"), (6, "if")]
    assert [(h["line"], h["reason"]) for h in s["excluded_lines"]] == [
        (2, "test: x.py:3 never selects"), (4, "test: only the then arm")]
    assert [(x["waived"], x["hit"]) for x in s["exclusions"]] == [(1, 1), (1, 0), (0, 0),
                                                                  (0, 0)]
    with pytest.raises(ValueError, match="reason"):
        Exclusion("rtl/x.py:1", " ")


def test_soak_counts_transactions_per_scoreboard(monkeypatch):
    """The soak sums each run's scoreboard counts per unit (the lane's report says how many
    output beats, importance beats and heads were checked), runs every point for at least
    ``seeds`` seeds and stops once the transactions are reached."""
    from attnforge.testbench import soak as soak_mod
    from attnforge.testbench.runner import Run
    calls = []

    def fake_run(name, params, *, seed, **kw):
        calls.append(seed)
        return Run(tests=6, failed=False, transactions=161, seconds=0.1, command="",
                   scoreboards={"lane.o": 128, "lane.importance": 32, "lane.status": 1})
    monkeypatch.setattr(soak_mod, "run", fake_run)
    (row,) = soak_mod.soak(["lane"], transactions=500, seeds=2, scale=1, seed0=7,
                           log=lambda *_: None)
    assert calls == [7, 8, 9, 10] and row["transactions"] == 644
    assert row["scoreboards"] == {"lane.o": 512, "lane.importance": 128, "lane.status": 4}


def test_exclusion_sources_follow_their_code():
    """``at`` finds a snippet's line (so an exclusion survives edits elsewhere in the file), a
    vanished snippet gives a pattern matching nothing; every anchor of the lane's exclusions
    is still in its file (a failure here: the code an exclusion argues about changed -- re-read
    the reason, then update the snippet or drop the exclusion)."""
    import re
    from attnforge.paths import ROOT
    from attnforge.testbench.coverage import EXCLUSIONS, at
    lines = (ROOT / "rtl/lane_est.py").read_text().splitlines()
    n = next(i for i, line in enumerate(lines, 1) if "w_r.eq(Mux(w_r == E - 1" in line)
    assert re.fullmatch(at("rtl/lane_est.py", "w_r.eq(Mux(w_r == E - 1"), f"rtl/lane_est.py:{n}")
    gone = at("rtl/lane_est.py", "no such line")
    assert not any(re.fullmatch(gone, f"rtl/lane_est.py:{i}") for i in range(1, len(lines) + 1))
    assert not [e.source for e in EXCLUSIONS["lane"] if "not found" in e.source]
