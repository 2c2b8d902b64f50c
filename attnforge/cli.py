"""Command line: ``python -m attnforge <command>`` (also installed as ``attnforge``).

    attnforge units                                    list the generators and their parameters
    attnforge verilog mac --frac-bits 8 -o mac.v       emit one unit's Verilog
    attnforge verilog-all -o build/verilog             every unit at default parameters
    attnforge lint [unit ...]                          verilator --lint-only -Wall
    attnforge synth [unit ...]                         Yosys + ECP5 reports into build/reports/

Generator parameters become ``--kebab-case`` options automatically (from each generator's
keyword-only constructor parameters). A bad parameter prints one line and exits with status 2.
"""

import argparse
import sys
from pathlib import Path

from . import attention_cli
from .rtl import UNITS, build, emit

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
    sub.add_parser("units", help="list generators and their parameters")

    p_verilog = sub.add_parser("verilog", help="emit one unit's Verilog")
    units = p_verilog.add_subparsers(dest="unit", required=True, metavar="unit")
    for name, unit in UNITS.items():
        p_unit = units.add_parser(name, help=unit.summary)
        for param, default in unit.params.items():
            p_unit.add_argument(f"--{param.replace('_', '-')}", dest=param, default=None,
                                type=_param_type(default), metavar=type(default).__name__.upper(),
                                help=f"default {default!r}")
        p_unit.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")
        p_unit.add_argument("--name", help="top module name (default: the file stem or unit)")

    p_all = sub.add_parser("verilog-all", help="every unit at default parameters")
    p_all.add_argument("-o", "--output", type=Path, default=Path("build/verilog"))

    p_lint = sub.add_parser("lint", help="verilator --lint-only -Wall on units")
    p_lint.add_argument("units", nargs="*", metavar="unit")

    p_synth = sub.add_parser("synth", help="Yosys area/depth and ECP5 (nextpnr) reports into build/reports/")
    p_synth.add_argument("units", nargs="*", metavar="unit")
    attention_cli.add_parser(sub)
    return parser


def _check_units(names):
    for name in names:
        if name not in UNITS:
            raise ValueError(f"unit must be one of {', '.join(UNITS)}, not {name!r}")
    return list(names) or list(UNITS)


def _run(args):
    if args.command == "units":
        for name, unit in UNITS.items():
            params = ", ".join(f"{k}={v!r}" for k, v in unit.params.items())
            print(f"{name:16} {unit.summary}\n{'':16} {params}")
    elif args.command == "verilog":
        params = {k: v for k, v in vars(args).items()
                  if k in UNITS[args.unit].params and v is not None}
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
        from .synth.reports import write_all
        for path in write_all(_check_units(args.units)):
            print(f"wrote {path}")
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, RuntimeError) as exc:
        print(f"attnforge: error: {exc}", file=sys.stderr)
        return 2
