"""Sweep (attnforge.sweep): spec validation, Pareto flags, outputs, resume, failures, the area
cache, the model-vs-RTL check, Dask. Yosys is replaced by a stand-in (real synthesis of a lane
takes minutes); evaluations run the real golden and cycle models on tiny fixture workloads."""

import csv
import json

import numpy as np
import pytest

from attnforge.cli import main
from attnforge.sweep import engine, lanepoint, run as sweep_run
from attnforge.sweep.spec import SpecError, parse_spec

TINY = """
name = "{name}"
seed = 3
[generator]
block = [8, 16]
max_t = 16
d = 32
max_m = 8
[runtime]
sparsity = ["dense", 0.5]
block = [8, 16]
[workload]
seq_len = 16
layers = [2]
heads = [0]
[rtl_check]
sample = {sample}
"""


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Outputs and the area cache under tmp_path; Yosys replaced by a stand-in that counts its
    runs (area grows with the tile, so the Pareto front is not trivial)."""
    monkeypatch.setattr(sweep_run, "BUILD", tmp_path / "build")
    monkeypatch.setattr(lanepoint, "AREA_CACHE", tmp_path / "build" / "sweeps" / "_area")
    calls = []

    def fake_synth(unit, params=None, *, component=None, name=None, flatten=True):
        calls.append(dict(params))
        t = 1000 * params["rows"] * params["cols"] + 50 * params["block"]
        return {"cells": t // 4, "transistors": t, "transistors_with_sram": t, "ffs": 1,
                "memory_bits": 0, "depth": 10}

    monkeypatch.setattr("attnforge.synth.yosys.synthesize", fake_synth)
    monkeypatch.setattr(lanepoint, "build_lane", lambda gen: gen)
    monkeypatch.setattr("attnforge.rtl.verilog", lambda comp, name: f"// lane {sorted(comp.items())}")
    return tmp_path, calls


def fake_rtl(gen, params, cfg, qi, ki, vi, pq, pk):
    """An 'RTL' that agrees with the models (the golden output, the model's cycles)."""
    r = lanepoint.run_lane(params, cfg, qi, ki, vi, pq, pk)
    return r.out, lanepoint.model_cycles_for_rtl(lanepoint.cycles(params, cfg, r))


# -- spec -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, key", [
    ("[generator]\nunit = 'nope'", "generator.unit"),
    ("[generator]\nwidth = 3", "generator.width"),
    ("[generator]\nrows = [4, 100]", "generator.rows"),
    ("[generator]\nblock = [12]", "generator.block"),
    ("[generator]\nrows = []", "generator.rows"),
    ("[runtime]\nblock = [8, 12]", "runtime.block"),
    ("[runtime]\nsparsity = [1.5]", "runtime.sparsity"),
    ("[runtime]\nspeed = 1", "runtime.speed"),
    ("[workload]\nfixtures = ['long_glaciers']", "workload.fixtures"),
    ("[workload]\nseq_len = 4", "workload.seq_len"),
    ("[bogus]\nx = 1", "bogus"),
    ("[generator\nrows = 1", "malformed TOML"),
    ("[rtl_check]\ncycle_ratio = [2, 1]", "rtl_check.cycle_ratio"),
])
def test_bad_spec_one_line(text, key):
    with pytest.raises(SpecError) as e:
        parse_spec(text)
    msg = str(e.value)
    assert key in msg and "\n" not in msg


def test_bad_value_names_legal_values():
    with pytest.raises(SpecError, match=r"generator.rows: .*100.* \(legal: an integer in"):
        parse_spec("[generator]\nrows = [4, 100]")
    with pytest.raises(SpecError, match="one of 8, 16, 32"):
        parse_spec("[runtime]\nblock = 12")


def test_cli_bad_spec_exits_2_before_work(tmp_path, capsys):
    spec = tmp_path / "bad.toml"
    spec.write_text("name = 'bad'\n[generator]\nrows = [1]\n")
    assert main(["sweep", str(spec), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "generator.rows" in err


def test_all_enumerates_the_record_domain():
    spec = parse_spec("[generator]\nblock = 16\nmax_t = 'all'\n")
    rec = lanepoint.lane_record()
    assert [g["max_t"] for g in spec.generators] == list(rec.legal_values("max_t", block=16))
    assert all(g["max_t"] % 16 == 0 for g in spec.generators)


def test_dense_is_one_point_per_generator():
    spec = parse_spec(TINY.format(name="x", sample=0))
    pts = spec.points()
    assert len(pts) == 2 * (1 + 2)                   # 2 tiles x (dense + 2 blocks at 0.5)
    assert len({p["id"] for p in pts}) == len(pts)


# -- Pareto -----------------------------------------------------------------------------------------
def brute_pareto(v):
    out = []
    for i, a in enumerate(v):
        out.append(not any(all(b[k] <= a[k] for k in range(len(a))) and
                           any(b[k] < a[k] for k in range(len(a)))
                           for j, b in enumerate(v) if j != i))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_pareto_flags_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    v = rng.integers(0, 6, (40, 3)).tolist()          # small integers: many ties
    assert sweep_run.pareto_flags(v) == brute_pareto(v)


# -- the sweep --------------------------------------------------------------------------------------
def test_sweep_outputs_failures_cache_and_rtl(sandbox, client, monkeypatch):
    tmp, calls = sandbox
    monkeypatch.setattr(lanepoint, "simulate_rtl", fake_rtl)
    spec = parse_spec(TINY.format(name="tiny", sample=2))
    out = sweep_run.sweep(spec, client=client, progress=False)
    d = tmp / "build" / "sweeps" / "tiny"
    records = json.loads((d / "points.json").read_text())
    assert len(records) == out["points"] == 6
    # block 16 on an 8-row query tile: found illegal by the lane's own check, recorded
    failed = [r for r in records if r["status"] == "failed"]
    assert len(failed) == 1 and "must divide the query tile" in failed[0]["error"]
    assert failed[0]["gen"]["block"] == 8 and failed[0]["run"]["block"] == 16
    ok = [r for r in records if r["status"] == "ok"]
    # schema: every parameter, the seed, the figures, the flag, in CSV and JSON
    rows = list(csv.DictReader((d / "points.csv").open()))
    assert len(rows) == 6
    for col in ("id", "status", "error", "seed", *spec.generators[0], *spec.runtime[0],
                "transistors", "cycles", "head_error", "kept_fraction", "verilog_digest",
                "pareto"):
        assert col in rows[0], col
    assert {r["seed"] for r in rows} == {"3"}
    assert all(isinstance(r["cycles"], float) and 0 < r["head_error"] < 2 for r in ok)
    # Pareto flags = brute force over the successful points
    want = brute_pareto([[r[k] for k in sweep_run.OBJECTIVES] for r in ok])
    assert [r["pareto"] for r in ok] == want and not failed[0]["pareto"]
    # T = 16: b = 8 keeps 1 of 2 blocks; b = 16 (tile 16) keeps its one block; dense all
    assert sorted(r["kept_fraction"] for r in ok) == [0.5, 0.5, 1.0, 1.0, 1.0]
    # two generators: Yosys ran twice; the RTL check ran on the sample
    assert len(calls) == 2
    assert len(out["rtl"]) == 2
    assert all(r["rtl_ok"] and r["rtl_bit_exact"] and r["rtl_ratio"] == 1.0
               for r in records if "rtl_ok" in r)
    for png in ("cycles_vs_area.png", "cycles_vs_error.png", "knobs.png"):
        assert (d / png).stat().st_size > 1000
    summary = (d / "summary.md").read_text()
    assert "## Failed points" in summary and "Pareto" in summary
    # another sweep over the same generators: every area from the cache, Yosys not run
    again = sweep_run.sweep(parse_spec(TINY.format(name="other", sample=0)), client=client,
                            progress=False)
    recs = json.loads((tmp / "build" / "sweeps" / "other" / "points.json").read_text())
    assert len(calls) == 2 and again["ok"] == 5
    assert all(r["area_cached"] for r in recs if r["status"] == "ok")


def test_resume_redoes_nothing_finished(sandbox, client, monkeypatch):
    tmp, _ = sandbox
    spec = parse_spec(TINY.format(name="resume", sample=0))
    sweep_run.sweep(spec, client=client, progress=False)
    log = tmp / "build" / "sweeps" / "resume" / "points.jsonl"
    lines = log.read_text().splitlines()
    assert len(lines) == 6
    log.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])      # killed mid-write
    kept = {json.loads(x)["id"] for x in lines[:2]}
    seen = []
    real = lanepoint.evaluate

    def counting(gen, run, heads):
        seen.append((gen, run))
        return real(gen, run, heads)

    monkeypatch.setattr(lanepoint, "evaluate", counting)
    out = sweep_run.sweep(spec, client=client, progress=False, resume=True)
    assert out["points"] == 6
    assert len(seen) == 4                                             # the 2 finished: not redone
    redone = {p["id"] for p in spec.points() if (p["gen"], p["run"]) in seen}
    assert not redone & kept


def test_rtl_check_fails_when_model_is_perturbed(sandbox, client, monkeypatch):
    real = lanepoint.cycles

    def rtl(gen, params, cfg, qi, ki, vi, pq, pk):   # agrees with the unperturbed model
        r = lanepoint.run_lane(params, cfg, qi, ki, vi, pq, pk)
        return r.out, lanepoint.model_cycles_for_rtl(real(params, cfg, r))

    def perturbed(params, cfg, result):               # the model now claims 3x the cycles
        c = real(params, cfg, result)
        return {**c, "total": 3 * c["total"]}

    monkeypatch.setattr(lanepoint, "simulate_rtl", rtl)
    monkeypatch.setattr(lanepoint, "cycles", perturbed)
    with pytest.raises(sweep_run.RTLMismatch, match="model and RTL disagree on 2 of 2"):
        sweep_run.sweep(parse_spec(TINY.format(name="perturbed", sample=2)), client=client,
                        progress=False)
    summary = (sandbox[0] / "build" / "sweeps" / "perturbed" / "summary.md").read_text()
    assert "FAILED: RTL" in summary


def test_rtl_check_fails_on_a_wrong_output(sandbox, client, monkeypatch):
    def wrong(*a):
        out, cyc = fake_rtl(*a)
        out = out.copy()
        out[0, 0] += 1
        return out, cyc

    monkeypatch.setattr(lanepoint, "simulate_rtl", wrong)
    with pytest.raises(sweep_run.RTLMismatch, match="output differs"):
        sweep_run.sweep(parse_spec(TINY.format(name="wrong", sample=1)), client=client,
                        progress=False)


# -- Dask ------------------------------------------------------------------------------------------
def _where(x):
    from distributed import get_worker
    if x == 3:
        raise ValueError("point 3 is illegal")
    import time
    time.sleep(0.3)
    return get_worker().address


def test_local_cluster_of_two_workers_runs_and_records_failures():
    got, errors = {}, {}
    with engine.client(workers=2) as c:
        assert len(c.scheduler_info()["workers"]) == 2
        futs = {i: c.submit(_where, i, pure=False) for i in range(8)}
        failed = engine.stream(c, futs, lambda k, v, e: (got.__setitem__(k, v) if e is None
                                                          else errors.__setitem__(k, e)))
    assert failed == 1 and errors == {3: "ValueError: point 3 is illegal"}
    assert len(got) == 7 and len(set(got.values())) == 2          # both workers did work


def test_log_ignores_a_torn_line(tmp_path):
    log = engine.Log(tmp_path / "p.jsonl")
    log.append({"id": "a", "x": 1})
    log.append({"id": "b", "x": 2})
    with (tmp_path / "p.jsonl").open("a") as f:
        f.write('{"id": "c", "x"')
    assert set(engine.Log(tmp_path / "p.jsonl", resume=True).records) == {"a", "b"}


def test_area_cache_keyed_by_verilog(sandbox):
    tmp, calls = sandbox
    g = {"block": 8, "max_t": 16, "d": 32, "max_m": 8, "est_rows": 1, "rows": 4, "cols": 2}
    a = lanepoint.area(g)
    b = lanepoint.area(dict(g))
    c = lanepoint.area({**g, "cols": 3})
    assert (a["cached"], b["cached"], c["cached"]) == (False, True, False)
    assert a["verilog_digest"] == b["verilog_digest"] != c["verilog_digest"]
    assert len(calls) == 2


def test_sweep_on_an_existing_scheduler(sandbox):
    """--scheduler tcp://HOST:PORT: the sweep connects to a running cluster (here one started
    in-process on TCP) instead of making a LocalCluster."""
    from distributed import LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tcp",
                      dashboard_address=":0") as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        out = sweep_run.sweep(parse_spec(TINY.format(name="remote", sample=0)),
                              scheduler=cluster.scheduler_address, progress=False)
    assert out["points"] == 6 and out["ok"] == 5 and out["workers"] == 1


def test_committed_default_spec_is_valid():
    from pathlib import Path
    from attnforge.sweep.search import search_config
    from attnforge.sweep.spec import load_spec
    spec = load_spec(Path(__file__).parent.parent / "sweeps" / "lane.toml")
    assert spec.name == "lane" and len(spec.points()) == 26
    assert sweep_run.rtl_sample(spec, spec.points())       # the RTL can run some of them
    cfg = search_config(spec)
    assert cfg["generator"]["block"] == 32 and cfg["workload"]["seq_len"] == 256
