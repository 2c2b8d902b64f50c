"""``attnforge attention``: the attention algorithms on real MiniLM-L6 attention.

    attnforge attention                                   DSA INT4, sigma 0.25, 90 % on a fixture
    attnforge attention --fixture long_volcano --sparsity 0.8 --precision int2
    attnforge attention --algorithm bssa --block 32 --block-bound 1.5 --arithmetic fx16
    attnforge attention --text "Your own text ..."       (needs pip install -e '.[model]')

On a fixture (the stored heads, see ``golden/minilm.py``): per head the kept fraction, the
recall of the oracle top-10 %, and the output error against dense float64 beside the oracle
mask's at the same sparsity; then the means. With ``--text`` the model runs over the text:
the same head figures over all 72 heads, and the end-to-end embedding cosine against the dense
model with the algorithm in every layer (predicted and oracle). Options are checked by
:class:`attnforge.golden.attention.HeadConfig`; a bad one prints one line and exits 2.
"""

import numpy as np

__all__ = ["add_parser", "run"]

_PRECISIONS = {"fp32": None, "int8": 8, "int4": 4, "int2": 2}


def add_parser(subparsers):
    """Register the ``attention`` subcommand (numbers are parsed by :func:`run`, so that a bad
    value gets the one-line ``attnforge: error:`` message)."""
    p = subparsers.add_parser("attention", help="attention algorithms on MiniLM-L6 attention "
                                                "(fixtures, or --text with the model)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--fixture", default="long_printing",
                     help="stored fixture to evaluate (default long_printing)")
    src.add_argument("--text", help="your own text (needs the model package)")
    p.add_argument("--algorithm", default="dsa", help="dense, dsa or bssa (default dsa)")
    p.add_argument("--predictor", default="calibrated", help="calibrated, random or oracle")
    p.add_argument("--precision", default="int4", help="estimate precision: fp32, int8, int4, int2")
    p.add_argument("--sigma", default="0.25", help="projected dims / head dim, in (0, 1]")
    p.add_argument("--sparsity", default="0.9", help="fraction pruned (top-k), in [0, 1)")
    p.add_argument("--threshold", default=None,
                   help="adaptive mode: keep within THRESHOLD (log units) of the row maximum")
    p.add_argument("--granularity", default="element",
                   help="element, 1x4, 1x8, 8x8, 16x16 or 32x32")
    p.add_argument("--block", default="16", help="HB-BSSA block size: 8, 16, 32")
    p.add_argument("--block-bound", default="0", help="HB-BSSA: RMS estimate bound for INT8 blocks")
    p.add_argument("--block-softmax", action="store_true", help="HB-BSSA block-wise softmax")
    p.add_argument("--arithmetic", default="float",
                   help="kept work in float (float64) or fx16 (the hardware pipeline; slower)")
    return p


def _num(name, text, kind=float):
    try:
        return kind(text)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a {'number' if kind is float else 'integer'}, "
                         f"not {text!r}") from None


def _config(args):
    from .golden.attention import HeadConfig
    if args.precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(_PRECISIONS)}, "
                         f"not {args.precision!r}")
    threshold = None if args.threshold is None else _num("threshold", args.threshold)
    return HeadConfig(algorithm=args.algorithm, arithmetic=args.arithmetic,
                      predictor=args.predictor, sigma=_num("sigma", args.sigma),
                      estimate_bits=_PRECISIONS[args.precision],
                      granularity=args.granularity, sparsity=_num("sparsity", args.sparsity),
                      threshold=threshold, block=_num("block", args.block, int),
                      block_bound=_num("block-bound", args.block_bound),
                      block_softmax=args.block_softmax)


def _head_rows(heads, cfg, projections):
    from .golden import attention as A
    from .golden.attention_eval import head_error
    rows = []
    for layer, head, q, k, v in heads:
        proj = projections.get((layer, head)) if projections else None
        ref = A.attend_float(q, k, v)
        err, info = head_error(q, k, v, cfg, proj, ref)
        oerr = head_error(q, k, v, cfg.replace(predictor="oracle"), ref=ref)[0] \
            if cfg.algorithm != "dense" else err
        rows.append((layer, head, info["kept_fraction"], A.recall(q, k, info["mask"]), err, oerr))
    return rows


def _print_rows(rows):
    print(f"{'layer':>5} {'head':>4} {'kept':>7} {'recall@10%':>10} {'error':>8} {'oracle err':>10}")
    for layer, head, kept, rec, err, oerr in rows:
        print(f"{layer:>5} {head:>4} {kept:7.3f} {rec:10.3f} {err:8.4f} {oerr:10.4f}")
    m = np.mean(np.array([r[2:] for r in rows]), axis=0)
    print(f"{'mean':>10} {m[0]:7.3f} {m[1]:10.3f} {m[2]:8.4f} {m[3]:10.4f}")


def run(args):
    """Evaluate and print; returns the exit status (errors are raised as ValueError /
    RuntimeError for the caller's one-line message)."""
    from .golden import attention_eval as E
    from .golden import minilm
    cfg = _config(args)
    print(f"config: {cfg}")
    if args.text is None:
        f = minilm.load_fixture(args.fixture)
        if f["v"] is None:
            raise ValueError(f"fixture must not be a calibration passage "
                             f"({', '.join(minilm.CALIBRATION)}), not {args.fixture!r}")
        projections = E.fixture_projections(cfg.sigma) if cfg.predictor == "calibrated" else None
        heads = [(li, h, f["q"][li, j], f["k"][li, j], f["v"][li, j])
                 for li in f["layers"] for j, h in enumerate(f["heads"])]
        print(f"fixture {args.fixture}: {len(f['ids'])} tokens, {len(heads)} stored heads; "
              f"calibration: {', '.join(minilm.CALIBRATION)}")
        _print_rows(_head_rows(heads, cfg, projections))
        return 0
    model = minilm.load_model()
    ids = model.tokenize(args.text)
    e2e = E.EndToEnd(texts=[args.text], pairs=[])
    projections = e2e.projections(cfg.sigma) if cfg.predictor == "calibrated" else None
    rec = []
    model.forward(ids, record=rec)
    heads = [(li, h, rec[li][0][h], rec[li][1][h], rec[li][2][h])
             for li in range(minilm.LAYERS) for h in range(minilm.HEADS)]
    print(f"text: {len(ids)} tokens, 72 heads; calibration: {', '.join(minilm.CALIBRATION)}")
    _print_rows(_head_rows(heads, cfg, projections))
    pred = e2e.run(cfg, pairs=False)
    line = f"end to end: embedding cosine vs dense {pred['cosine']:.5f}"
    if cfg.algorithm != "dense":
        orc = e2e.run(cfg.replace(predictor="oracle"), pairs=False)
        line += f" (oracle mask {orc['cosine']:.5f}), kept {pred['kept']:.3f}"
    print(line)
    return 0
