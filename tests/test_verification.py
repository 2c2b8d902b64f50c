"""The verification machinery itself: time-0 semantics of the emitted Verilog, simulator
selection, soak scaling, coverage parsing and merging (fast; the Icarus check skips without
Icarus Verilog)."""

import shutil
import subprocess

import pytest

from attnforge.rtl import build, verilog
from attnforge.rtl.emit import fix_time0
from attnforge.testbench import kit
from attnforge.testbench.coverage import demangle, merge_dats, parse_dat, summarize
from attnforge.testbench.runner import ICARUS_HOWTO, missing_simulator, reproduce, simulator
from attnforge.testbench.soak import points_of
from attnforge.rtl import UNITS

TRIGGER = "\\$auto$verilog_backend.cc:2355:dump_module$7 "


def test_fix_time0_rewrites_the_trigger():
    text = f"module m(a);\n  reg {TRIGGER} = 0;\n  always @* begin\n    if ({TRIGGER}) begin end\n"
    fixed = fix_time0(text)
    assert f"reg {TRIGGER};" in fixed and f"initial {TRIGGER} <= 1'h0;" in fixed
    assert "= 0;" not in fixed
    assert fix_time0(fixed) == fixed            # idempotent


def test_emitted_verilog_has_no_initializer_trigger():
    text = verilog(build("topk", max_n=32, score_bits=8, per_beat=4), "topk")
    assert "dump_module" in text and "initial \\$auto$verilog_backend" in text
    assert not [ln for ln in text.splitlines() if "dump_module" in ln and ln.endswith("= 0;")]


TB = """module tb;
  reg clk = 0, rst = 0;
  wire req__ready;
  topk dut(.clk(clk), .rst(rst), .req__valid(1'b0), .s__valid(1'b0), .s__payload(32'b0),
           .o__ready(1'b0), .req__payload(16'b0), .req__ready(req__ready));
  initial begin #1 $display("READY=%b", req__ready); $finish; end
endmodule
"""


@pytest.mark.skipif(shutil.which("iverilog") is None, reason=ICARUS_HOWTO)
def test_icarus_time0_semantics(tmp_path):
    """On an IEEE 1800 simulator (Icarus -g2012) the top-k engine's `req__ready`, driven by an
    `always @*` block whose inputs are registers that keep their initial value, is 1 at time 1
    without any input event (it stayed x forever before the emitter fixed the trigger)."""
    (tmp_path / "topk.v").write_text(verilog(build("topk", max_n=32, score_bits=8, per_beat=4), "topk"))
    (tmp_path / "tb.v").write_text(TB)
    subprocess.run(["iverilog", "-g2012", "-o", "sim", "tb.v", "topk.v"], cwd=tmp_path,
                   check=True, capture_output=True)
    out = subprocess.run(["vvp", "sim"], cwd=tmp_path, capture_output=True, text=True).stdout
    assert "READY=1" in out, out


def test_simulator_selection(monkeypatch):
    monkeypatch.delenv("SIM", raising=False)
    assert simulator() == "verilator"
    monkeypatch.setenv("SIM", "Icarus")
    assert simulator() == "icarus"
    with pytest.raises(ValueError, match="SIM must be one of verilator, icarus"):
        simulator("xcelium")
    monkeypatch.setenv("PATH", "/nonexistent")
    assert missing_simulator("icarus") == ICARUS_HOWTO
    assert missing_simulator("verilator") is None


def test_reproduce_command():
    cmd = reproduce("mac", {"max_depth": 8}, seed=7, xseed=9, testcase=["throughput"],
                    sim="icarus", scale=4.0)
    assert cmd.startswith("SEED=7 XSEED=9 SIM=icarus ATTNFORGE_SCALE=4.0 WAVES=1 ")
    assert "attnforge.testbench.runner mac '{\"max_depth\": 8}' --testcase throughput" in cmd


def test_scale(monkeypatch):
    monkeypatch.delenv(kit.SCALE_ENV, raising=False)
    assert kit.scale(1500) == 1500
    monkeypatch.setenv(kit.SCALE_ENV, "4")
    assert kit.scale(1500) == 6000
    monkeypatch.setenv(kit.SCALE_ENV, "0.001")
    assert kit.scale(1500) == 2 and kit.scale(10, minimum=3) == 3


def test_soak_points_skip_the_heavy_subset_points():
    rmmu = UNITS["rmmu"]
    assert all(not p.testcases for p in points_of(rmmu))
    assert len(points_of(rmmu, every=True)) == len(rmmu.sim)


DAT = ("# SystemC::Coverage-3\n"
       "C '\x01f\x02m.v\x01l\x022\x01t\x02branch\x01page\x02v_branch/m\x01o\x02if\x01h\x02m' 0\n"
       "C '\x01f\x02m.v\x01l\x023\x01t\x02line\x01page\x02v_line/m\x01o\x02block\x01h\x02m' 4\n"
       "C '\x01f\x02m.v\x01l\x021\x01t\x02toggle\x01page\x02v_toggle/m\x01o\x02"
       "o___05Fx__02elast:0->1\x01h\x02m' 0\n")


def test_coverage_merge_and_summary(tmp_path):
    (tmp_path / "a.dat").write_text(DAT)
    (tmp_path / "b.dat").write_text(DAT.replace("' 0\n", "' 1\n", 1))
    merge_dats([tmp_path / "a.dat", tmp_path / "b.dat"], tmp_path / "m.dat")
    points = parse_dat(tmp_path / "m.dat")
    assert [(p["type"], p["count"]) for p in points] == [("branch", 1), ("line", 8),
                                                        ("toggle", 0)]
    (tmp_path / "m.v").write_text('(* src = "rtl/x.py:3" *)\n'
                                  "  if (a) begin\n    b = 1;\n")
    s = summarize(parse_dat(tmp_path / "a.dat"), tmp_path / "m.v")
    assert s["line_points"] == 2 and s["line_covered"] == 1
    assert s["uncovered_lines"][0]["line"] == 2
    assert s["untoggled_named_bits"] == ["o__x.last"]
    assert demangle("o___05Fpayload__02elanes__05b1__05d") == "o__payload.lanes[1]"


def test_coverage_bin_helpers():
    assert [kit.delay_bin(c) for c in (0, 1, 2, 9)] == ["none", "one", "burst", "burst"]
    assert [kit.size_bin(n, 8) for n in (0, 1, 5, 8, 9)] == list(kit.SIZE_BINS)


def test_contract_classifiers():
    """The request classifiers the benches' functional coverage uses agree with the golden
    models' own error checks."""
    import random
    from attnforge.golden.detector import command_error
    from attnforge.golden.topk import score_beats
    from attnforge.testbench.detector import bad_ops, command_class, model_of, random_ops
    from attnforge.testbench.rmmu import descriptor_class, model_of as rmmu_model
    from attnforge.testbench.rmmu import random_ops as rmmu_ops
    from attnforge.testbench.topk import malformed_row, request_class
    rng = random.Random(3)
    model = model_of(build("detector", per_beat=4, max_len=32, score_bits=4, sched_lanes=3))
    for cmd, _ in bad_ops(rng, model, 50) + random_ops(rng, model, 50):
        assert (command_class(cmd, 32) == "good") == (command_error(cmd, 32) is None)
    assert request_class(4, 2, score_beats([1, 2, 3, 4], 2), 8, 2) == "good"
    assert request_class(4, 5, score_beats([1, 2, 3, 4], 2), 8, 2) == "k > n"
    assert request_class(9, 1, score_beats([0] * 9, 2), 8, 2) == "n > max_n"
    assert request_class(4, 2, malformed_row(rng, 4, 2, [1, 2, 3, 4], 2), 8, 2) == \
        "malformed row"
    rm = rmmu_model(build("rmmu", rows=4, cols=2, groups=2, tile_m=4, max_m=64, max_k=64,
                          max_n=64))
    for d in rmmu_ops(rng, rm, 200, bad=0.5):
        assert (descriptor_class(rm, d) == "good") == (rm.error(d) is None)


def test_mutant_tests_name_cocotb_tests():
    """Every unit's testbench declares MUTANT_TESTS, and each names one of its cocotb tests."""
    import importlib
    for name, unit in UNITS.items():
        module = importlib.import_module(unit.test_module)
        tests = getattr(module, "MUTANT_TESTS", None)
        assert tests, f"{unit.test_module} has no MUTANT_TESTS"
        for t in tests:
            assert getattr(module, t, None) is not None, f"{unit.test_module}.{t}"


def test_mutant_selector_makes_the_ctrl_port_a_plusarg_register():
    """The top's ``mutsel`` input leaves the port list and becomes a register set from
    ``+MUTANT=<i>``; submodules keep their ``mutsel`` ports; a netlist without one is
    unchanged."""
    from attnforge.testbench.mutants import mutant_selector
    text = ("module sub(a, y, mutsel);\n  input a;\n  wire a;\n  output y;\n  wire y;\n"
            "  input [1:0] mutsel;\n  wire [1:0] mutsel;\nendmodule\n"
            "module top(a, y, mutsel);\n  input a;\n  wire a;\n  output y;\n  wire y;\n"
            "  input [1:0] mutsel;\n  wire [1:0] mutsel;\n"
            "  sub s (.a(a), .y(y), .mutsel(mutsel));\nendmodule\n")
    out = mutant_selector(text, "top")
    top = out[out.index("module top"):]
    assert top.startswith("module top(a, y);")
    assert "reg [1:0] mutsel;" in top and "input [1:0] mutsel" not in top
    assert 'initial if (!$value$plusargs("MUTANT=%d", mutsel)) mutsel = 0;' in top
    assert "wire [1:0] mutsel;" not in top
    assert out[:out.index("module top")] == text[:text.index("module top")]
    plain = text.replace(", mutsel);", ");")
    assert mutant_selector(plain.replace("mutsel", "other"), "top") == \
        plain.replace("mutsel", "other")


def test_insert_mutants_one_netlist_selected_at_run_time(tmp_path):
    """All sampled mutations of a small hierarchical design land in one netlist, each behind
    ``mutsel == i`` (1-based), the submodule keeps its hierarchy and gets the selector as a
    port, and Verilator accepts the result (seconds)."""
    from attnforge.testbench.mutants import insert_mutants
    from attnforge.testbench.runner import VERILATOR_WAIVERS
    from attnforge.tools import verilator_env
    (tmp_path / "top.v").write_text(
        "module inc(input [3:0] a, output [3:0] y);\n  assign y = a + 4'd1;\nendmodule\n"
        "module top(input clk, input rst, input [3:0] d, output reg [3:0] q);\n"
        "  wire [3:0] n;\n  inc u (.a(d), .y(n));\n"
        "  always @(posedge clk) if (rst) q <= 4'd0; else q <= n ^ q;\nendmodule\n")
    lines = insert_mutants(tmp_path, "top", 6, 1)
    assert lines and len(lines) == 6
    assert [int(ln.split()[4]) for ln in lines] == list(range(1, 7))       # -ctrl mutsel 3 i
    assert any("-module inc " in ln for ln in lines)                       # not flattened
    text = (tmp_path / "mutants.v").read_text()
    assert "module inc(" in text and "$value$plusargs" in text
    env = verilator_env()
    exe = shutil.which("verilator", path=env["PATH"])
    proc = subprocess.run([exe, "--lint-only", "-Wall", "-Wno-fatal", *VERILATOR_WAIVERS,
                           "--top-module", "top", "mutants.v"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_gemm_terms_and_score_query_build_what_they_promise():
    """The directed-stimulus builders of the mutant kill tests: RMMU accumulators made of
    in-range products, progressive-quantization queries whose scores are the given row."""
    import random
    import numpy as np
    from attnforge.golden.numbers import requantize
    from attnforge.testbench.progressive_quant import KILL_ROWS, score_query
    from attnforge.testbench.rmmu import gemm_terms
    for x in (-9600, 0, 32767, -32768, 10 ** 6, -(10 ** 9)):
        a, b = gemm_terms(x, 16, 64)
        assert sum(p * q for p, q in zip(a, b)) == x
        assert all(-32768 <= v <= 32767 for v in a + b)
    assert gemm_terms(1 << 40, 4, 3) is None
    unit = build("progressive_quant")
    cfg = unit.config
    for row in KILL_ROWS:
        q, keys = score_query(unit, row, random.Random(1))
        s = keys @ np.array(q)
        assert list(requantize(s, cfg.score_shift, cfg.softmax.in_bits)) == list(row)
        assert keys.min() >= -(1 << (cfg.key_bits - 1)) and keys.max() < 1 << (cfg.key_bits - 1)


def test_cached_verdict_reuses_kills_of_fewer_tests():
    """A verdict is reused for the same seed, scale, tests and mutation; a kill also when the
    tests grew, never a survivor (it must meet the new tests) nor another seed's kill; an
    equivalent verdict (a proof) whatever the tests."""
    from attnforge.testbench.mutants import cached_verdict
    m = "mutate -mode inv -module top -cell $and$1 -port \\Y -portbit 0"
    kill, alive = {"status": "killed"}, {"status": "survived"}
    cache = {f"1/1.0/{['a']}/{m}": kill, f"1/1.0/{['a', 'b']}/{m}x": alive}
    assert cached_verdict(cache, 1, 1.0, ["a"], m) is kill
    assert cached_verdict(cache, 1, 1.0, ["a", "c"], m) is kill
    assert cached_verdict(cache, 1, 1.0, ["b"], m) is None
    assert cached_verdict(cache, 2, 1.0, ["a", "c"], m) is None
    assert cached_verdict(cache, 1, 2.0, ["a", "c"], m) is None
    assert cached_verdict(cache, 1, 1.0, ["a", "b"], m + "x") is alive
    assert cached_verdict(cache, 1, 1.0, ["a", "b", "c"], m + "x") is None
    proof = {"status": "equivalent"}                  # a proof: whatever the tests
    assert cached_verdict({f"2/1.0/{['a']}/{m}": proof}, 1, 1.0, ["b"], m) is proof


def test_first_failure_names_the_failed_test():
    """A mutant's run stops at the first test cocotb reports as failed (not at a passed or
    a running one)."""
    from attnforge.testbench.mutants import first_failure
    log = ("     0.00ns INFO     cocotb.regression      running t.random_heads (1/3)\n"
           "  9.00ns INFO     cocotb.regression      t.random_heads passed\n"
           "  9.00ns INFO     cocotb.regression      running t.bad_configs (2/3)\n")
    assert first_failure(log) is None
    log += "2410010.00ns WARNING  cocotb.regression      t.bad_configs failed\n"
    assert first_failure(log) == "t.bad_configs"


def test_survivor_classification_climbs_to_the_module_that_drops_the_bit(tmp_path):
    """A mutation of a bit that its module and the next one up pass on but the top drops:
    ``sat`` tells it apart at its module and its parent, and proves it equivalent two levels
    up (``in_parent`` twice names the cell as ``flatten`` does there). Seconds."""
    from attnforge.testbench.mutants import counterexample, in_parent
    (tmp_path / "top.v").write_text(
        "module inc(input [3:0] a, output [3:0] y);\n  assign y = a + 4'd1;\nendmodule\n"
        "module mid(input [3:0] a, output [3:0] y);\n  inc u (.a(a), .y(y));\nendmodule\n"
        "module top(input clk, input [3:0] d, output reg [2:0] q);\n"
        "  wire [3:0] n;\n  mid m (.a(d), .y(n));\n"
        "  always @(posedge clk) q <= n[2:0];\nendmodule\n")
    import re
    from attnforge.testbench.mutants import insert_mutants
    assert insert_mutants(tmp_path, "top", 1, 1)         # writes design.il (hierarchy kept)
    add = re.search(r"cell \$add (\S+)", (tmp_path / "design.il").read_text()).group(1)
    line = f"mutate -mode inv -module inc -cell {add} -port Y -portbit 3"
    assert counterexample("top", line, tmp_path, "c0")[0] == "killable"
    up = in_parent(tmp_path, line)
    assert f"-module mid -cell $flatten\\u.{add}" in up
    assert counterexample("top", up, tmp_path, "c1")[0] == "killable"
    up2 = in_parent(tmp_path, up)
    assert f"-module top -cell $flatten\\m.\\u.{add}" in up2
    assert counterexample("top", up2, tmp_path, "c2")[0] == "equivalent"
    assert in_parent(tmp_path, up2) is None
