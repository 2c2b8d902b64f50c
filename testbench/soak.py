"""``make soak``: every unit's cocotb testbench over many seeds with scaled transaction counts.

For each unit (``UNITS``, default all) the soak runs the unit's regression points (its record's
:class:`~attnforge.rtl.unit.SimPoint` s; points that declare a testcase subset -- the 512-PE
RMMU -- only with ``SOAK_POINTS=all``) round-robin, seed after seed, with every testbench's
transaction counts multiplied by ``SOAK_SCALE`` (:func:`attnforge.testbench.kit.scale`), until
the unit has run at least ``SOAK_SEEDS`` seeds per point *and* its scoreboards have checked at
least ``SOAK_TRANSACTIONS`` transactions (at most ``SOAK_MAX_SEEDS`` seeds per point). Every
transaction goes through the scoreboards: zero mismatches is the pass criterion. A transaction
is one item a scoreboard checked (a MAC result, an output beat ...); the report also gives the
count per scoreboard, which says what was checked: for the lane, ``lane.o`` output beats
(``ceil(d / cols)`` per output row), ``lane.importance`` beats (one per key of a head) and
``lane.status`` (one per head, rejected heads included: the heads played).

Seeds are ``SOAK_SEED0``, ``SOAK_SEED0 + 1`` ... (default: drawn at random and printed, so two
soaks cover different ground); the Verilator reset-value seed of each run is its seed. Progress
is printed per run (unit, point, seed, transactions so far, elapsed time, what remains); the
report (``build/reports/soak.md`` / ``.json``) lists per unit the transactions, seeds and wall
time, and for every failing run the exact command that reproduces it with waveforms.
"""

import os
import random
import time

from ..reports import md_table, write_report
from ..rtl import UNITS
from .runner import run

__all__ = ["soak", "cli"]


def _env_int(name, default):
    return int(os.environ.get(name) or default)


def points_of(unit, every=False):
    """The regression points a soak (or coverage / mutant) run uses for ``unit``."""
    points = [p for p in unit.sim if every or not p.testcases]
    return points or list(unit.sim[:1])


def _clock(seconds):
    return time.strftime("%H:%M:%S", time.gmtime(seconds))


def soak(units=None, *, transactions=None, seeds=None, scale=None, seed0=None,
         max_seeds=None, every=None, log=print):
    """Soak ``units`` (names; default all) and return the report rows (see the module doc)."""
    names = list(units or UNITS)
    transactions = transactions if transactions is not None else \
        _env_int("SOAK_TRANSACTIONS", 100_000)
    seeds = seeds if seeds is not None else _env_int("SOAK_SEEDS", 8)
    scale = scale if scale is not None else float(os.environ.get("SOAK_SCALE") or 4)
    max_seeds = max_seeds if max_seeds is not None else _env_int("SOAK_MAX_SEEDS", 200)
    every = every if every is not None else os.environ.get("SOAK_POINTS", "") == "all"
    if seed0 is None:
        seed0 = _env_int("SOAK_SEED0", random.SystemRandom().randrange(1000, 1_000_000))
    log(f"soak: units {', '.join(names)}; >= {transactions} transactions and >= {seeds} seeds "
        f"per point per unit, scale {scale}, seeds from {seed0} (SOAK_SEED0={seed0})")
    begin = time.monotonic()
    rows = []
    for ui, name in enumerate(names):
        unit = UNITS[name]
        points = points_of(unit, every)
        row = {"unit": name, "points": [p.label for p in points], "transactions": 0, "runs": 0,
               "seeds": [], "tests": 0, "failures": [], "seconds": 0.0, "scoreboards": {}}
        rows.append(row)
        start = time.monotonic()
        for r in range(max_seeds):
            if r >= seeds and row["transactions"] >= transactions:
                break
            seed = seed0 + r
            row["seeds"].append(seed)
            for point in points:
                done = run(name, point.params, seed=seed, scale=scale, check=False,
                           testcase=list(point.testcases) if point.testcases else None,
                           quiet=True)
                row["runs"] += 1
                row["tests"] += done.tests
                row["transactions"] += done.transactions
                for board, n in getattr(done, "scoreboards", {}).items():
                    row["scoreboards"][board] = row["scoreboards"].get(board, 0) + n
                status = "ok"
                if done.failed:
                    status = "FAILED"
                    row["failures"].append({"point": point.label, "seed": seed,
                                            "command": done.command})
                elapsed = time.monotonic() - begin
                log(f"[soak {_clock(elapsed)}] {name} {point.label} seed {seed}: {status}, "
                    f"+{done.transactions} transactions in {done.seconds:.1f} s "
                    f"(unit: {row['transactions']}/{transactions}, seed {r + 1}/>={seeds}); "
                    f"units left after this one: {len(names) - ui - 1}")
                if done.failed:
                    log(f"    simulator log: {done.log}")
                    log(f"    reproduce with waveforms: {done.command}")
            if row["failures"]:
                break                    # one failing seed is enough: report it
        row["seconds"] = round(time.monotonic() - start, 1)
    return rows


def report(rows, name="soak"):
    """Write ``build/reports/soak.md`` / ``.json``."""
    table = md_table(["unit", "points", "seeds", "runs", "cocotb tests", "transactions checked",
                      "per scoreboard", "mismatches / failures", "wall time"],
                     [[r["unit"], ", ".join(r["points"]),
                       f"{len(r['seeds'])} ({r['seeds'][0]}..{r['seeds'][-1]})" if r["seeds"]
                       else "0", r["runs"], r["tests"], r["transactions"],
                       ", ".join(f"{b} {n}" for b, n in sorted(r.get("scoreboards", {}).items())),
                       len(r["failures"]), f"{r['seconds']:.0f} s"] for r in rows])
    fails = [f"- `{f['command']}`  ({r['unit']} {f['point']}, seed {f['seed']})"
             for r in rows for f in r["failures"]]
    md = ["# Soak (make soak)", "", table, "",
          "Failures (each line reproduces one with waveforms):" if fails else "No failures.",
          *fails, ""]
    return write_report(name, "\n".join(md), rows)


def cli(names):
    """``attnforge soak [unit ...]`` (``make soak``): run, write the report, print a summary;
    exit status 1 when anything failed. ``names`` are checked unit names (empty: the default
    set)."""
    rows = soak(names or None)
    paths = report(rows)
    print(f"soak report: {paths}")
    for r in rows:
        print(f"  {r['unit']}: {r['transactions']} transactions, {len(r['seeds'])} seeds x "
              f"{len(r['points'])} points, {r['seconds']:.0f} s, {len(r['failures'])} failures")
    return 1 if any(r["failures"] for r in rows) else 0

