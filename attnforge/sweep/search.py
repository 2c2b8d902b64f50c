"""``attnforge search SPEC.toml``: HB-BSSA's design-space search (paper Sec. 3.3-3.4) on the lane.

Action: ``(block b in 8/16/32, per-block precision bound, mask budget)``: the block size of the
BxB mask, the ``int8_quantile`` below which a kept block runs at INT8 (HB-BSSA's norm rule,
"off" = every block FX16), and the sparsity of the mask (top-k blocks per block row). One
evaluation runs the lane's golden and cycle models on the spec's fixture heads
(:func:`attnforge.sweep.lanepoint.evaluate`) at the spec's first generator point, with the
``[search] generator`` and ``[search] workload`` tables' overrides.

Reward (paper Sec. 3.3): ``alpha / cycles - beta * dAcc`` with ``alpha`` = the dense lane's
cycles on the same heads (so the first term is the speed-up over dense) and ``dAcc`` = head
error of the point minus the dense lane's head error (relative Frobenius error against float64);
under the budget: a point keeping more than ``max_kept`` of the blocks (the cache budget of
active blocks) gets ``infeasible_reward``.

Methods, same evaluator, evaluations counted as distinct points evaluated:

* **reinforce**: a factored softmax policy (one categorical per action field), REINFORCE with
  a moving-average baseline: ``theta += lr * (r - baseline) * grad log pi(a)``
  (:func:`reinforce`), ``batch`` actions per episode evaluated in parallel on Dask;
* **random**: uniform actions, as many distinct evaluations as REINFORCE used;
* **heuristic**: the norm-threshold rule: INT8 below the ``heuristic_quantile`` of block
  norms, the largest mask the budget allows, each block size;
* **exhaustive**: every action (when the space has at most ``max_exhaustive`` points): the
  optimum and the Pareto frontier (cycles, dAcc) the others are measured against.
"""

import itertools
import json
import time

import numpy as np

from ..reports import md_table
from . import engine, lanepoint
from .run import out_dir, pareto_flags

__all__ = ["SEARCH_DEFAULTS", "Policy", "reinforce", "search_config", "search"]

SEARCH_DEFAULTS = {
    "blocks": [8, 16, 32],
    "quantiles": ["off", 0.25, 0.5, 0.75, 1.0],
    "sparsities": [0.25, 0.5, 0.625, 0.75, 0.875],
    "max_kept": 0.5,
    "beta": 5.0,
    "infeasible_reward": -1.0,
    "episodes": 12,
    "batch": 4,
    "lr": 0.5,
    "baseline_decay": 0.8,
    "heuristic_quantile": 0.5,
    "max_exhaustive": 200,
    "seeds": [],              # REINFORCE / random seeds (default: the spec's seed)
    "generator": {},          # overrides of the spec's first generator point (e.g. tile = 32)
    "workload": {},           # overrides of the spec's workload (e.g. seq_len = 256)
}


class Policy:
    """A factored categorical policy: ``sizes[i]`` choices for field ``i``, logits ``theta``."""

    def __init__(self, sizes):
        self.theta = [np.zeros(n) for n in sizes]

    def probs(self):
        out = []
        for t in self.theta:
            e = np.exp(t - t.max())
            out.append(e / e.sum())
        return out

    def sample(self, rng):
        return tuple(int(rng.choice(len(p), p=p)) for p in self.probs())

    def update(self, actions, rewards, baseline, lr):
        """One REINFORCE step: ``theta += lr * mean_j (r_j - baseline) grad log pi(a_j)``;
        for a softmax, ``grad_theta log pi(a) = onehot(a) - pi``."""
        probs = self.probs()
        grads = [np.zeros_like(t) for t in self.theta]
        for a, r in zip(actions, rewards):
            for i, ai in enumerate(a):
                g = -probs[i].copy()
                g[ai] += 1.0
                grads[i] += (r - baseline) * g
        for t, g in zip(self.theta, grads):
            t += lr * g / max(1, len(actions))

    def best(self):
        return tuple(int(np.argmax(t)) for t in self.theta)


def reinforce(sizes, evaluate, *, seed, episodes, batch, lr, decay):
    """REINFORCE with a moving-average baseline. ``evaluate(list of actions) -> list of
    rewards`` (actions are index tuples); returns ``(policy, history)`` with ``history`` the
    ``(action, reward)`` of every sample in order."""
    rng = np.random.default_rng(seed)
    policy = Policy(sizes)
    baseline, history = None, []
    for _ in range(episodes):
        actions = [policy.sample(rng) for _ in range(batch)]
        rewards = evaluate(actions)
        history += list(zip(actions, rewards))
        mean = float(np.mean(rewards))
        baseline = mean if baseline is None else decay * baseline + (1 - decay) * mean
        policy.update(actions, rewards, baseline, lr)
    return policy, history


class _Evaluator:
    """Evaluations of actions on Dask, memoized (a repeated action costs nothing), with the
    order in which distinct actions were first evaluated."""

    def __init__(self, c, gen, heads_spec, fields, cfg, dense):
        self.c, self.gen, self.workload, self.fields = c, gen, heads_spec, fields
        self.cfg, self.dense = cfg, dense
        self.cache = {}

    def run_of(self, action):
        b, q, s = (f[i] for f, i in zip(self.fields, action))
        return {"sparsity": s, "block": b, "est_bits": self.cfg["est_bits"],
                "sigma": self.cfg["sigma"], "int8_quantile": q}

    def figures(self, actions):
        new = [a for a in dict.fromkeys(actions) if a not in self.cache]
        futs = {a: self.c.submit(_evaluate, self.gen, self.run_of(a), self.workload, pure=False)
                for a in new}
        for a, f in futs.items():
            try:
                self.cache[a] = f.result()
            except Exception as exc:                   # an illegal point: recorded, no reward
                self.cache[a] = {"error": engine.error_text(exc)}
        return [self.cache[a] for a in actions]

    def reward(self, fig):
        if "error" in fig:
            return self.cfg["infeasible_reward"], False
        feasible = fig["kept_fraction"] <= self.cfg["max_kept"] + 1e-9
        if not feasible:
            return self.cfg["infeasible_reward"], False
        d_acc = fig["head_error"] - self.dense["head_error"]
        return self.dense["cycles"] / fig["cycles"] - self.cfg["beta"] * d_acc, True

    def rewards(self, actions):
        return [self.reward(f)[0] for f in self.figures(actions)]


def _evaluate(gen, run, workload):
    return lanepoint.evaluate(gen, run, lanepoint.workload_heads(workload),
                              schedule="pipelined")


def search_config(spec):
    """The ``[search]`` table of ``spec`` checked and completed (defaults, the generator and
    workload with their overrides); raises :class:`.spec.SpecError`."""
    cfg = {**SEARCH_DEFAULTS, **spec.search}
    unknown = set(spec.search) - set(SEARCH_DEFAULTS) - {"est_bits", "sigma"}
    if unknown:
        from .spec import SpecError
        raise SpecError(f"search.{sorted(unknown)[0]}: unknown key (legal: "
                        f"{', '.join([*SEARCH_DEFAULTS, 'est_bits', 'sigma'])})")
    from .spec import RUNTIME, SpecError
    if not isinstance(cfg["seeds"], list) or not all(
            isinstance(x, int) and not isinstance(x, bool) for x in cfg["seeds"]):
        raise SpecError(f"search.seeds: must be a list of integers, not {cfg['seeds']!r}")
    for key, knob in (("blocks", "block"), ("quantiles", "int8_quantile"),
                      ("sparsities", "sparsity")):
        vals = cfg[key]
        if not isinstance(vals, list) or not vals:
            raise SpecError(f"search.{key}: must be a non-empty list")
        for v in vals:
            RUNTIME[knob].check(f"search.{key}", v)
    from .lanepoint import lane_record
    if not isinstance(cfg["generator"], dict):
        raise SpecError("search.generator: must be a table of generator parameters")
    try:
        cfg["generator"] = lane_record().validate(**{**spec.generators[0], **cfg["generator"]})
    except ValueError as exc:
        raise SpecError(f"search.generator: {exc}") from None
    if not isinstance(cfg["workload"], dict):
        raise SpecError("search.workload: must be a table of workload keys")
    from .spec import parse_workload
    try:
        cfg["workload"] = parse_workload({**spec.workload, **cfg["workload"]})
    except SpecError as exc:
        raise SpecError(f"search.{exc}") from None
    cfg.setdefault("est_bits", spec.runtime[0]["est_bits"])
    cfg.setdefault("sigma", spec.runtime[0]["sigma"])
    return cfg


def _curve(history, reward_of):
    """``[(distinct evaluations, best reward so far)]`` and the evaluations that first reached
    the best."""
    seen, best, curve, needed = set(), -np.inf, [], 0
    for a in history:
        if a in seen:
            continue
        seen.add(a)
        r = reward_of(a)
        if r > best:
            best, needed = r, len(seen)
        curve.append((len(seen), best))
    return curve, needed


def search(spec, *, scheduler=None, workers=None, progress=True, client=None):
    """Run the four methods of the module docstring on ``spec``; write
    ``build/sweeps/<name>/search/{search.md, search.json, reward_vs_evals.png}``; returns the
    results dict (``methods``: per method best reward/action/evaluations/gap, ``out``)."""
    from . import plots
    cfg = search_config(spec)
    start = time.monotonic()
    gen = cfg["generator"]
    fields = [cfg["blocks"], cfg["quantiles"], cfg["sparsities"]]
    sizes = [len(f) for f in fields]
    space = list(itertools.product(*[range(n) for n in sizes]))
    made = client is None
    c = engine.client(scheduler, workers) if made else client
    try:
        dense_run = {"sparsity": "dense", "block": 8, "est_bits": cfg["est_bits"],
                     "sigma": cfg["sigma"], "int8_quantile": "off"}
        workload = cfg["workload"]
        dense = c.submit(_evaluate, gen, dense_run, workload, pure=False).result()
        ev = _Evaluator(c, gen, workload, fields, cfg, dense)
        bar = engine.Progress(4, f"search {spec.name}", progress)
        results, curves = {}, {}
        runs = []                                       # (seed, REINFORCE samples, random)
        for seed in cfg["seeds"] or [spec.seed]:
            _, hist = reinforce(sizes, ev.rewards, seed=seed, episodes=cfg["episodes"],
                                batch=cfg["batch"], lr=cfg["lr"], decay=cfg["baseline_decay"])
            rl = [a for a, _ in hist]
            rng = np.random.default_rng(seed + 1)
            rnd = [space[i] for i in rng.permutation(len(space))][:len(set(rl))]
            ev.figures(rnd)
            runs.append((seed, rl, rnd))
        bar.update()
        bar.update()
        q_h = min(cfg["quantiles"], key=lambda q: 2 if q == "off" else abs(q - cfg[
            "heuristic_quantile"]))
        s_h = min((s for s in cfg["sparsities"] if 1 - s <= cfg["max_kept"] + 1e-9),
                  default=max(cfg["sparsities"]))
        heur = [(i, cfg["quantiles"].index(q_h), cfg["sparsities"].index(s_h))
                for i in range(len(cfg["blocks"]))]
        ev.figures(heur)
        bar.update()
        exhaustive = len(space) <= cfg["max_exhaustive"]
        if exhaustive:
            ev.figures(space)
        bar.update()
        bar.close()
        workers_used = len(c.scheduler_info()["workers"])
    finally:
        if made:
            c.close()

    def reward_of(a):
        return ev.reward(ev.cache[a])[0]

    opt = max(space, key=reward_of) if exhaustive else None
    front = []
    if exhaustive:
        feas = [a for a in space if ev.reward(ev.cache[a])[1]]
        flags = pareto_flags([[ev.cache[a]["cycles"], ev.cache[a]["head_error"]] for a in feas])
        front = [a for a, f in zip(feas, flags) if f]
    def summary(actions):
        curve, needed = _curve(actions, reward_of)
        best = max(dict.fromkeys(actions), key=reward_of)
        fig = ev.cache[best]
        return {
            "best_reward": reward_of(best), "action": ev.run_of(best), "cycles": fig["cycles"],
            "head_error": fig["head_error"], "kept_fraction": fig["kept_fraction"],
            "evaluations": len(set(actions)), "evaluations_to_best": needed,
            "gap_to_optimum": reward_of(opt) - reward_of(best) if opt else None,
            "on_frontier": best in front if exhaustive else None}, curve

    by_seed = {"reinforce": [], "random": []}
    for seed, rl, rnd in runs:
        for name, actions in (("reinforce", rl), ("random", rnd)):
            res, curve = summary(actions)
            by_seed[name].append({"seed": seed, **res})
            curves.setdefault(name, []).append(curve)
    for name in by_seed:
        results[name] = {k: v for k, v in by_seed[name][0].items() if k != "seed"}
    for name, actions in (("heuristic", heur), ("exhaustive", space if exhaustive else [])):
        if actions:
            results[name], curve = summary(actions)
            curves[name] = [curve]
    out = out_dir(spec) / "search"
    out.mkdir(parents=True, exist_ok=True)
    png = plots.search_plot(curves, out / "reward_vs_evals.png",
                            reward_of(opt) if opt else None)
    data = {"spec": str(spec.path), "generator": gen, "config": cfg, "dense": dense,
            "methods": results, "seeds": by_seed, "space": len(space), "workers": workers_used,
            "seconds": time.monotonic() - start,
            "frontier": [ev.run_of(a) | {k: ev.cache[a][k] for k in ("cycles", "head_error")}
                         for a in front]}
    (out / "search.json").write_text(json.dumps(data, indent=1, default=str) + "\n")
    rows = [[m, r["best_reward"], _action_text(r["action"]), r["cycles"], r["head_error"],
             r["kept_fraction"], r["evaluations"], r["evaluations_to_best"],
             "-" if r["gap_to_optimum"] is None else r["gap_to_optimum"],
             "-" if r["on_frontier"] is None else ("yes" if r["on_frontier"] else "no")]
            for m, r in results.items()]
    md = [f"# Search `{spec.name}` (HB-BSSA: REINFORCE vs random, heuristic, exhaustive)", "",
          f"Generator {gen}; workload: first {workload['seq_len']} tokens of "
          f"{', '.join(workload['fixtures'])}, layers {workload['layers']}. "
          f"Space: blocks {cfg['blocks']} x INT8 quantiles {cfg['quantiles']} x sparsities "
          f"{cfg['sparsities']} = {len(space)} points. Reward = dense cycles / cycles - "
          f"{cfg['beta']} x (head error - dense head error); budget: kept fraction <= "
          f"{cfg['max_kept']} (else {cfg['infeasible_reward']}). Dense lane: "
          f"{dense['cycles']:.0f} cycles, head error {dense['head_error']:.4f}. REINFORCE: "
          f"{cfg['episodes']} episodes x {cfg['batch']}, lr {cfg['lr']}, seed {runs[0][0]}. "
          f"{time.monotonic() - start:.0f} s on {workers_used} worker(s). "
          "Produced by `attnforge search`.", "",
          md_table(["method", "best reward", "action", "cycles", "head error", "kept",
                    "evaluations", "evaluations to best", "gap to optimum",
                    "on exhaustive frontier"], rows), "",
          ]
    if len(runs) > 1:
        agg = [[name, len(rs), float(np.mean([r["best_reward"] for r in rs])),
                min(r["best_reward"] for r in rs), max(r["best_reward"] for r in rs),
                float(np.mean([r["evaluations"] for r in rs])),
                float(np.mean([r["evaluations_to_best"] for r in rs])),
                sum(1 for r in rs if r["gap_to_optimum"] is not None
                    and r["gap_to_optimum"] <= 1e-12),
                sum(1 for r in rs if r["on_frontier"])]
               for name, rs in by_seed.items()]
        md += [f"Over seeds {[r['seed'] for r in by_seed['reinforce']]} (the table above is "
               f"seed {runs[0][0]}):", "",
               md_table(["method", "seeds", "mean best reward", "min", "max",
                         "mean evaluations", "mean evaluations to best",
                         "seeds that found the optimum", "seeds ending on the frontier"], agg),
               ""]
    md += [f"![reward vs evaluations]({png.name})"]
    (out / "search.md").write_text("\n".join(md) + "\n")
    data["out"] = str(out)
    return data


def _action_text(run):
    return f"b={run['block']} int8<q{run['int8_quantile']} sparsity={run['sparsity']}"
