"""MAC throughput in simulation: MACs per cycle per mode (cocotb + Verilator, no stalls).

Writes build/reports/mac_bench.md and .json. Run by `make bench`.
"""

from attnforge.golden.numbers import Precision
from attnforge.reports import md_table, write_report
from attnforge.testbench.runner import measure


def main():
    data = {unit: measure(unit, testcase="throughput") for unit in ("mac", "mac_fx16", "mac_separate")}
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
