"""``attnforge sweep SPEC.toml`` and ``attnforge search SPEC.toml`` (docs/sweep.md).

    attnforge sweep sweeps/lane.toml                      LocalCluster, one worker per CPU
    attnforge sweep sweeps/lane.toml --workers 2 --resume
    attnforge sweep sweeps/lane.toml --scheduler tcp://10.0.0.5:8786
    attnforge search sweeps/lane.toml

The spec is validated before any work starts: a bad one prints one line naming the key and
its legal values and exits 2. A model-vs-RTL disagreement on a sampled point exits 1 (after
writing the results).
"""

import sys

__all__ = ["add_parsers", "run"]


def add_parsers(subparsers):
    """Register ``sweep`` and ``search``."""
    for name, text in (("sweep", "design-space sweep: area x cycles x accuracy, Pareto, plots "
                                 "-> build/sweeps/<name>/"),
                       ("search", "HB-BSSA search: REINFORCE vs random, norm-threshold "
                                  "heuristic, exhaustive -> build/sweeps/<name>/search/")):
        p = subparsers.add_parser(name, help=text)
        p.add_argument("spec", help="TOML spec (e.g. sweeps/lane.toml)")
        p.add_argument("--scheduler", help="use a running Dask scheduler (tcp://HOST:PORT) "
                                           "instead of a LocalCluster")
        p.add_argument("--workers", type=int, default=None,
                       help="LocalCluster worker processes (default: one per CPU)")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        if name == "sweep":
            p.add_argument("--resume", action="store_true",
                           help="keep the finished points of build/sweeps/<name>/points.jsonl")


def run(args):
    from .run import RTLMismatch, sweep
    from .search import search
    from .spec import load_spec
    spec = load_spec(args.spec)                     # SpecError -> exit 2 before any work
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, not {args.workers}")
    kw = dict(scheduler=args.scheduler, workers=args.workers, progress=not args.no_progress)
    if args.command == "search":
        out = search(spec, **kw)
        print(f"wrote {out['out']}/search.md")
        return 0
    try:
        out = sweep(spec, resume=args.resume, **kw)
    except RTLMismatch as exc:
        print(f"attnforge: MODEL VS RTL MISMATCH: {exc}", file=sys.stderr)
        return 1
    print(f"{out['points']} points ({out['ok']} ok, {out['failed']} failed), "
          f"{len(out['pareto'])} on the Pareto frontier, {out['seconds']:.0f} s on "
          f"{out['workers']} worker(s): wrote {out['out']}/summary.md")
    return 0
