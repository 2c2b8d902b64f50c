"""MAC throughput in simulation: MACs per cycle per mode (cocotb + Verilator, no stalls).

Writes build/reports/mac_bench.md and .json. Run by `make bench`.
"""

import json
import tempfile
from pathlib import Path

from attnforge.golden.numbers import Precision
from attnforge.synth.report import md_table, write_report
from attnforge.testbench.kit import FIGURES_ENV
from attnforge.testbench.runner import run


def measure(unit, params=None):
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "figures.json"
        run(unit, params or {}, test_module="attnforge.testbench.mac", testcase="throughput",
            extra_env={FIGURES_ENV: str(out)})
        return json.loads(out.read_text())


def main():
    data = {unit: measure(unit) for unit in ("mac", "mac_fx16", "mac_separate")}
    rows = []
    for unit, figs in data.items():
        for mode, f in figs.items():
            peak = Precision[mode].macs_per_word
            rows.append([unit, mode, f["words"], f["cycles"], f["macs_per_cycle"], peak])
    md = ["# MAC throughput (cocotb + Verilator)", "",
          "Back-to-back packets of 1-8 words, no valid gaps, no ready stalls, one weight tile "
          "per mode. MACs/cycle = n*n * words / cycles from the first to the last accepted "
          "word. Produced by `make bench` (benchmarks/mac.py).", "",
          md_table(["design", "mode", "words", "cycles", "MACs/cycle", "n*n"], rows)]
    print(write_report("mac_bench", "\n".join(md), data))


if __name__ == "__main__":
    main()
