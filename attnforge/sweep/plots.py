"""Sweep and search plots (matplotlib, Agg back end, PNG)."""

import numpy as np

__all__ = ["sweep_plots", "search_plot", "frontier"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def frontier(x, y):
    """Indices of the 2-D Pareto frontier of points ``(x, y)`` (both minimized), by ``x``."""
    order = sorted(range(len(x)), key=lambda i: (x[i], y[i]))
    out, best = [], float("inf")
    for i in order:
        if y[i] < best:
            out.append(i)
            best = y[i]
    return out


def _scatter(ax, x, y, colors, labels, pareto, xlabel, ylabel):
    for c in sorted(set(colors), key=str):
        idx = [i for i, ci in enumerate(colors) if ci == c]
        ax.scatter([x[i] for i in idx], [y[i] for i in idx], s=22, alpha=0.75,
                   label=f"{labels} {c}")
    f = frontier(x, y)
    ax.step([x[i] for i in f], [y[i] for i in f], where="post", color="k", lw=1.2,
            label="2-D Pareto frontier")
    px = [x[i] for i in range(len(x)) if pareto[i]]
    py = [y[i] for i in range(len(y)) if pareto[i]]
    ax.scatter(px, py, s=70, facecolors="none", edgecolors="r", lw=1.2,
               label="Pareto (area, cycles, error)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def sweep_plots(records, gen, run, out):
    """``cycles_vs_area.png``, ``cycles_vs_error.png``, ``knobs.png`` in ``out``; returns the
    paths."""
    plt = _plt()
    ok = [r for r in records if r["status"] == "ok"]
    cyc = [r["cycles"] for r in ok]
    area = [r["transistors"] for r in ok]
    err = [r["head_error"] for r in ok]
    blocks = [("dense" if r["run"]["sparsity"] == "dense" else r["run"]["block"]) for r in ok]
    sparsity = [str(r["run"]["sparsity"]) for r in ok]
    pareto = [r["pareto"] for r in ok]
    paths = []
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    _scatter(ax, area, cyc, sparsity, "sparsity", pareto, "area (transistors, Yosys)",
             "cycles per head (model)")
    ax.set_title("cycles vs area")
    paths.append(_save(fig, out / "cycles_vs_area.png"))
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    _scatter(ax, err, cyc, blocks, "block", pareto, "head error (rel. Frobenius vs float64)",
             "cycles per head (model)")
    ax.set_title("cycles vs accuracy")
    paths.append(_save(fig, out / "cycles_vs_error.png"))
    knobs = [("gen", k) for k in gen if len({r["gen"][k] for r in ok}) > 1] + \
            [("run", k) for k in run if len({str(r["run"][k]) for r in ok}) > 1]
    if knobs:
        n = len(knobs)
        fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.2), squeeze=False)
        for ax, (part, k) in zip(axes[0], knobs):
            values = sorted({str(r[part][k]) for r in ok}, key=_order)
            med_c = [np.median([r["cycles"] for r in ok if str(r[part][k]) == v])
                     for v in values]
            med_e = [np.median([r["head_error"] for r in ok if str(r[part][k]) == v])
                     for v in values]
            ax.plot(values, med_c, "o-", color="C0")
            ax.set_ylabel("median cycles", color="C0")
            ax.set_xlabel(k)
            ax2 = ax.twinx()
            ax2.plot(values, med_e, "s--", color="C3")
            ax2.set_ylabel("median head error", color="C3")
            ax.grid(alpha=0.3)
        fig.suptitle("effect of each knob (median over the other knobs)")
        paths.append(_save(fig, out / "knobs.png"))
    return paths


def _order(v):
    try:
        return (0, float(v))
    except ValueError:
        return (1, v)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)
    return path


def search_plot(curves, path, exhaustive_best=None):
    """Best reward so far against distinct evaluations: ``{method: [curve, ...]}``, a curve per
    seed (``[(evaluations, best)]``), one colour per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, (name, runs) in enumerate(curves.items()):
        for j, pts in enumerate(runs):
            if pts:
                ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color=f"C{k}",
                        lw=1.6 if j == 0 else 0.7, alpha=1 if j == 0 else 0.5,
                        label=name if j == 0 else None)
    if exhaustive_best is not None:
        ax.axhline(exhaustive_best, color="k", ls=":", label="exhaustive optimum")
    ax.set_xlabel("distinct evaluations")
    ax.set_ylabel("best reward so far")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
