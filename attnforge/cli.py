"""Command line: ``python -m attnforge <command>`` (also installed as ``attnforge``).

    attnforge units [unit ...]                         generators, parameters, legal domains
    attnforge verilog mac --frac-bits 8 -o mac.v       emit one unit's Verilog
    attnforge verilog-all -o build/verilog             every unit at default parameters
    attnforge lint [unit ...]                          verilator --lint-only -Wall
    attnforge synth [unit ...]                         Yosys + ECP5 reports into build/reports/
    attnforge formal [proof ...] [--list]              SymbiYosys proofs -> build/reports/formal.md
    attnforge soak|coverage|mutants [unit ...]         the long verification tiers (docs/verification.md)
    attnforge sweep|search SPEC.toml                   design-space sweep / HB-BSSA search (docs/sweep.md)

Generator parameters become ``--kebab-case`` options automatically, from each unit's record
(:data:`attnforge.rtl.UNITS`). A bad parameter prints one line and exits with status 2.
"""

import argparse
import sys
from pathlib import Path

from . import attention_cli, board
from .sweep import cli as sweep_cli
from .rtl import UNITS, build, emit, unit as unit_record

__all__ = ["main"]


def _param_type(default):
    if isinstance(default, bool):
        return lambda s: {"1": True, "true": True, "0": False, "false": False}[s.lower()]
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if isinstance(default, tuple):
        return lambda s: tuple(int(x) for x in s.split(","))
    return str


def _parser():
    parser = argparse.ArgumentParser(prog="attnforge", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_units = sub.add_parser("units", help="list generators, their parameters and legal domains")
    p_units.add_argument("units", nargs="*", metavar="unit")
    p_units.add_argument("--markdown", action="store_true",
                         help="print each unit's parameter table as its doc page carries it")

    p_verilog = sub.add_parser("verilog", help="emit one unit's Verilog")
    units = p_verilog.add_subparsers(dest="unit", required=True, metavar="unit")
    for name, unit in UNITS.items():
        p_unit = units.add_parser(name, help=unit.summary)
        for param in unit.params:
            default = unit.defaults[param.name]
            p_unit.add_argument(f"--{param.name.replace('_', '-')}", dest=param.name,
                                default=None, type=_param_type(default),
                                metavar=type(default).__name__.upper(),
                                help=f"{param.doc}: {param.domain.text()} (default {default!r})")
        p_unit.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")
        p_unit.add_argument("--name", help="top module name (default: the file stem or unit)")

    p_all = sub.add_parser("verilog-all", help="every unit at default parameters")
    p_all.add_argument("-o", "--output", type=Path, default=Path("build/verilog"))

    p_lint = sub.add_parser("lint", help="verilator --lint-only -Wall on units")
    p_lint.add_argument("units", nargs="*", metavar="unit")

    p_synth = sub.add_parser("synth", help="Yosys area/depth and ECP5 (nextpnr) reports into build/reports/")
    p_synth.add_argument("units", nargs="*", metavar="unit")

    for name, text in (("soak", "many seeds x scaled transactions per unit -> build/reports/soak.md"),
                       ("coverage", "Verilator line/toggle + functional coverage -> "
                                    "build/reports/coverage.md"),
                       ("mutants", "Yosys mutate: kill rate per unit -> build/reports/mutants.md")):
        p_long = sub.add_parser(name, help=text)
        p_long.add_argument("units", nargs="*", metavar="unit")

    p_formal = sub.add_parser("formal", help="SymbiYosys proofs into build/reports/formal.md")
    p_formal.add_argument("proofs", nargs="*", metavar="proof")
    p_formal.add_argument("--list", action="store_true", help="list the proofs")
    attention_cli.add_parser(sub)
    board.add_parser(sub)
    sweep_cli.add_parsers(sub)
    return parser


def _check_units(names):
    return [unit_record(name).name for name in names] or list(UNITS)


def _print_units(names, markdown=False):
    for name in _check_units(names):
        unit = UNITS[name]
        if markdown:
            print(f"{name}:\n\n{unit.param_table()}\n")
            continue
        extra = f" (baseline of {unit.baseline_of})" if unit.baseline_of else ""
        print(f"{name}: {unit.summary}{extra}")
        width = max(len(p.name) for p in unit.params)
        for p in unit.params:
            print(f"  {p.name:{width}}  default {unit.defaults[p.name]!r:8}  "
                  f"{p.domain.text()}  -- {p.doc}")


def _run(args):
    if args.command == "units":
        _print_units(args.units, args.markdown)
    elif args.command == "verilog":
        params = {k: v for k, v in vars(args).items()
                  if k in UNITS[args.unit].defaults and v is not None}
        component = build(args.unit, **params)
        if args.output is None:
            from .rtl import verilog
            sys.stdout.write(verilog(component, name=args.name or args.unit))
        else:
            emit(component, args.output, name=args.name)
            print(f"wrote {args.output}", file=sys.stderr)
    elif args.command == "verilog-all":
        for name in UNITS:
            path = emit(build(name), args.output / f"{name}.v")
            print(f"wrote {path}", file=sys.stderr)
    elif args.command == "lint":
        from .testbench.runner import lint
        dirty = 0
        for name in _check_units(args.units):
            text = lint(name)
            print(f"{name}: {'clean' if not text else 'WARNINGS'}")
            if text:
                print(text)
                dirty += 1
        return 1 if dirty else 0
    elif args.command == "attention":
        return attention_cli.run(args)
    elif args.command == "synth":
        from .synth.figures import write_all
        for path in write_all(_check_units(args.units)):
            print(f"wrote {path}")
    elif args.command in ("soak", "coverage", "mutants"):
        import importlib
        long_run = importlib.import_module(f".testbench.{args.command}", __package__)
        return long_run.cli([unit_record(name).name for name in args.units])
    elif args.command == "formal":
        from .synth import formal
        if args.list:
            for p in formal.PROOFS.values():
                extra = "" if p.default else " [by name only]"
                print(f"{p.name:26} {p.mode} depth {p.depth}: {p.summary}{extra}")
            return 0
        path, passed = formal.report(args.proofs, progress=lambda s: print(s, flush=True))
        print(f"wrote {path}")
        return 0 if passed else 1
    elif args.command == "board":
        return board.run(args)
    elif args.command in ("sweep", "search"):
        return sweep_cli.run(args)
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, RuntimeError) as exc:
        print(f"attnforge: error: {exc}", file=sys.stderr)
        return 2
