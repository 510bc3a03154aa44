"""The publication report over every experiment: Markdown, one self-contained HTML page,
LaTeX (booktabs) tables, every run as CSV and JSON, and optionally TensorBoard event files.

The HTML embeds its plots as base64 PNG and carries a tiny self-check script: once the page
has loaded it marks ``<body data-plots="ok">`` when every image decoded with a nonzero size,
and ``window.onerror`` writes any script error into the page. A reader sees nothing of it; a
headless browser (the test) can read both from the DOM.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airlab.analysis.compare import Analysis, analyze
from airlab.errors import AirlabError
from airlab.report.post import (
    figures,
    md_escape,
    rate_stored,
    reproduce_command,
    results_md,
    verdict_md,
)
from airlab.report.table import fmt, fmt_p
from airlab.spec import EXPERIMENT_NAME_MAX, slug
from airlab.store import Store

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                  "^": r"\textasciicircum{}"}

_SELF_CHECK = """
window.__airlabErrors = [];
window.onerror = function (msg, src, line) {
  window.__airlabErrors.push(String(msg) + " (line " + line + ")");
  document.documentElement.setAttribute("data-errors", String(window.__airlabErrors.length));
  var pre = document.getElementById("js-errors");
  if (pre) { pre.textContent = window.__airlabErrors.join("\\n"); }
};
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 &&
                                              i.naturalHeight > 0; });
  document.body.setAttribute("data-plots", imgs.length && ok.length === imgs.length ?
                             "ok" : "missing");
  document.body.setAttribute("data-plot-count", ok.length + "/" + imgs.length);
});
"""

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
.band-publishable { color: #1a7f37; } .band-good { color: #9a6700; } .band-needs { color: #cf222e; }
code, pre { background: #f6f8fa; padding: 2px 4px; }
#js-errors:empty { display: none; }
"""


@dataclass
class ExperimentReport:
    """Everything the report shows for one experiment."""

    name: str
    analysis: Analysis
    verdict: Any
    reproduce: str
    plots: dict[str, bytes]  # "curves" | "efficiency" | "pareto" -> PNG


@dataclass
class ExportResult:
    out: Path
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def latex_escape(s: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(s))


def latex_table(a: Analysis) -> str:
    """A booktabs table of one experiment (needs \\usepackage{booktabs})."""
    arrow = r"$\downarrow$" if a.direction == "minimize" else r"$\uparrow$"
    lines = [r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(a.name)}: {latex_escape(a.metric)} ({arrow} better), "
             rf"mean $\pm$ sd over seeds; $p$ Holm-adjusted.}}",
             rf"\label{{tab:{latex_escape(a.name).replace(chr(92), '')}}}",
             r"\begin{tabular}{lrrrrrrl}", r"\toprule",
             rf"Arm & $n$ & {latex_escape(a.metric)} & 95\% CI & $\Delta$ & $p$ & $d$ & "
             r"Verdict \\", r"\midrule"]
    for r in a.rows:
        s, c = r.summary, r.comparison
        cells = [latex_escape(r.arm), f"{r.finished}/{r.planned}",
                 f"{fmt(s.mean)} $\\pm$ {fmt(s.sd, 2)}", f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]",
                 "" if c is None else f"{c.delta:+.4g}",
                 "" if c is None else latex_escape(fmt_p(r.p_holm)),
                 "" if c is None else fmt(c.d, 3), latex_escape(r.verdict)]
        lines.append(" & ".join(cells).replace("—", "--") + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)


def _experiment_report(store: Store, exp: dict[str, Any]) -> ExperimentReport | None:
    try:
        a = analyze(store, exp["name"])
    except AirlabError:
        return None
    v = rate_stored(store, a)
    figs = figures(store, a)
    spec_path = Path("experiments") / _file(exp["name"]) / "spec.yaml"
    return ExperimentReport(exp["name"], a, v, reproduce_command(exp["spec"], spec_path), figs)


# --------------------------------------------------------------------------- runs


def run_records(store: Store) -> list[dict[str, Any]]:
    """Every run of every experiment with its metrics (config, provenance and curve too)."""
    out = []
    for e in store.experiments():
        runs = store.runs(e["id"])
        mets = store.metrics([r["id"] for r in runs])
        for r in runs:
            prov = (r["info"] or {}).get("provenance") or {}
            out.append({
                "experiment": e["name"], "kind": e["kind"], "area": e["area"],
                "arm": r["arm"], "seed": r["seed"], "state": r["state"],
                "reason": r["reason"], "run_key": r["run_key"], "attempts": r["attempts"],
                "wall_seconds": r["wall_seconds"], "host": prov.get("host"),
                "commit": (prov.get("code") or {}).get("commit"),
                "metrics": mets[r["id"]], "config": r["config"], "info": r["info"],
                "curve": store.curve(r["id"]),
            })
    return out


def _write_runs(records: list[dict[str, Any]], out: Path) -> list[Path]:
    js = out / "runs.json"
    js.write_text(json.dumps(records, indent=1, default=str))
    names = sorted({k for r in records for k in r["metrics"]})
    fixed = ["experiment", "kind", "area", "arm", "seed", "state", "reason", "run_key",
             "attempts", "wall_seconds", "host", "commit"]
    cs = out / "runs.csv"
    with cs.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fixed + names)
        for r in records:
            w.writerow([r[k] for k in fixed] + [
                "" if r["metrics"].get(m) is None else r["metrics"][m] for m in names])
    return [cs, js]


def _write_tensorboard(store: Store, records: list[dict[str, Any]], out: Path
                       ) -> tuple[list[Path], str]:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return [], ("TensorBoard export skipped: the tensorboard package is not installed "
                    "(pip install tensorboard)")
    root = out / "tensorboard"
    n = 0
    for r in records:
        if r["state"] != "finished" or not r["curve"]:
            continue
        w = SummaryWriter(str(root / _file(r["experiment"]) / f"{slug(r['arm'])}-seed{r['seed']}"))
        for p in r["curve"]:
            x = int(p.get("units") or p.get("step") or 0)
            for key in ("val_loss", "val_acc", "train_loss"):
                if p.get(key) is not None:
                    w.add_scalar(key, float(p[key]), x)
        w.close()
        n += 1
    return [root], f"TensorBoard: {n} runs in {root} (tensorboard --logdir {root})"


# --------------------------------------------------------------------------- documents


def _summary_md(store: Store) -> str:
    from airlab.report.tracker import lab_status

    st = lab_status(store)
    avg = st.average_rating
    bests = []
    for label, b in (("speed-up", st.best_speedup), ("compression", st.best_compression),
                     ("energy saving (estimate)", st.best_energy)):
        bests.append(f"- best {label}: " + (f"{b.ratio:.2f}x ({b.source}), {b.experiment} / "
                                            f"{b.arm}" if b else "—"))
    return (f"{len(st.experiments)} experiments, {sum(st.runs.values())} runs "
            f"({st.runs.get('failed', 0)} failed); average stored rating "
            + (f"{avg:.1f}" if avg is not None else "—")
            + f", {st.rated_publishable} rated 7 or more.\n\n" + "\n".join(bests) + "\n")


def report_md(store: Store, reports: list[ExperimentReport], plot_dir: str) -> str:
    parts = [f"# airlab report\n\nGenerated {time.strftime('%Y-%m-%d %H:%M')} from "
             f"`{store.url}`.\n\n", _summary_md(store)]
    for r in reports:
        hyp = md_escape((r.analysis.spec.get("hypothesis") or "").strip(), multiline=True)
        parts.append(f"\n## {md_escape(r.name)}\n\n{hyp}\n\n" + results_md(r.analysis) + "\n")
        for key, alt in (("curves", "loss curves, mean ± sd over seeds"),
                         ("efficiency", "cost ratios with 95% CI"),
                         ("pareto", "quality versus cost, Pareto front")):
            parts.append(f"![{alt}]({plot_dir}/{_file(r.name)}-{key}.png)\n\n")
        parts.append(verdict_md(r.verdict) + f"\nReproduce: `{r.reproduce}`\n")
    return "".join(parts)


def _md_table_html(a: Analysis) -> str:
    head = ["arm", "n", f"{a.metric} mean ± sd", "95% CI", "Δ vs base", "p (Holm)", "d",
            "train s", "verdict"]
    rows = []
    for r in a.rows:
        s, c = r.summary, r.comparison
        rows.append([r.arm, f"{r.finished}/{r.planned}", f"{fmt(s.mean)} ± {fmt(s.sd, 2)}",
                     f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]",
                     "" if c is None else f"{c.delta:+.4g}",
                     "" if c is None else fmt_p(r.p_holm), "" if c is None else fmt(c.d, 3),
                     fmt(r.means.get("train_seconds"), 3), r.verdict])
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def report_html(store: Store, reports: list[ExperimentReport]) -> str:
    summary = html.escape(_summary_md(store)).replace("\n- ", "<br>• ").replace("\n", " ")
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             "<title>airlab report</title>", f"<style>{_CSS}</style>",
             f"<script>{_SELF_CHECK}</script></head><body>",
             "<h1>airlab report</h1>",
             f"<p>Generated {time.strftime('%Y-%m-%d %H:%M')} from "
             f"<code>{html.escape(store.url)}</code>.</p>", f"<p>{summary}</p>",
             "<pre id='js-errors'></pre>"]
    for r in reports:
        v = r.verdict
        band_cls = "band-" + v.band.split()[0]
        parts.append(f"<section><h2 id='{html.escape(r.name)}'>{html.escape(r.name)}</h2>")
        hyp = (r.analysis.spec.get("hypothesis") or "").strip()
        if hyp:
            parts.append(f"<p><em>{html.escape(hyp)}</em></p>")
        parts.append(_md_table_html(r.analysis))
        for key, alt in (("curves", "loss curves, mean ± sd over seeds"),
                         ("efficiency", "cost ratios with 95% CI"),
                         ("pareto", "quality versus cost, Pareto front")):
            b64 = base64.b64encode(r.plots[key]).decode("ascii")
            parts.append(f"<img alt='{html.escape(r.name)}: {alt}' "
                         f"src='data:image/png;base64,{b64}'>")
        parts.append(f"<p class='{band_cls}'><strong>Rating {v.rating}/10 "
                     f"({html.escape(v.band)})</strong>"
                     + (f", best arm <code>{html.escape(v.best_arm)}</code>" if v.best_arm
                        else "") + " — "
                     + ", ".join(f"{html.escape(k)} {b['points']}/{b['max']}"
                                 for k, b in v.breakdown.items()) + "</p>")
        if v.critique:
            parts.append("<ul>" + "".join(f"<li>{html.escape(c)}</li>" for c in v.critique)
                         + "</ul>")
        parts.append(f"<p>Reproduce: <code>{html.escape(r.reproduce)}</code></p></section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _write_sessions(store: Store, md: Path, page: Path, plot_dir: Path) -> list[Path]:
    """The research sessions of the store (`airlab auto`): their best confirmed ratio against
    sprint hours, a plot and a table appended to report.md and report.html."""
    from airlab.report.sessions import compare_md, compare_png, session_curve
    from airlab.store import team as team_store

    names = [str(r["name"]) for r in team_store.list_sessions(store)]
    curves = [c for c in (session_curve(store, n) for n in names) if c.sprints]
    if not curves:
        return []
    png = plot_dir / "sessions.png"
    png.write_bytes(compare_png(curves))
    table = compare_md(curves)
    intro = ("Each `airlab auto` session: the best recipe confirmed on fresh seeds so far, as "
             "time to the default configuration's quality (default / recipe), against the "
             "sprint hours spent.")
    md.write_text(md.read_text() + f"\n## Research sessions\n\n{intro}\n\n"
                  f"![best confirmed ratio against sprint hours]({plot_dir.name}/sessions.png)"
                  f"\n\n{table}")
    b64 = base64.b64encode(png.read_bytes()).decode("ascii")
    section = (f"<section><h2>Research sessions</h2><p>{html.escape(intro)}</p>"
               f"<img alt='best confirmed ratio against sprint hours' "
               f"src='data:image/png;base64,{b64}'><pre>{html.escape(table)}</pre></section>")
    page.write_text(page.read_text().replace("</body></html>", section + "\n</body></html>"))
    return [png]


# --------------------------------------------------------------------------- entry point


def _file(name: str) -> str:
    """An experiment name as a file name: through slug() only, never outside ``out``."""
    return slug(name, EXPERIMENT_NAME_MAX)


def export(store: Store, out: Path | str, *, tensorboard: bool = False) -> ExportResult:
    """Write the whole publication report into ``out``."""
    out = Path(out)
    plot_dir = out / "plots"
    tex_dir = out / "latex"
    for d in (out, plot_dir, tex_dir):
        d.mkdir(parents=True, exist_ok=True)
    res = ExportResult(out)
    reports = []
    for e in store.experiments(kind="experiment"):
        r = _experiment_report(store, e)
        if r is None:
            res.notes.append(f"skipped {e['name']}: its spec no longer analyses")
            continue
        reports.append(r)
        for key, png in r.plots.items():
            p = plot_dir / f"{_file(r.name)}-{key}.png"
            p.write_bytes(png)
            res.files.append(p)
        tex = tex_dir / f"{_file(r.name)}.tex"
        tex.write_text(latex_table(r.analysis))
        res.files.append(tex)
    all_tex = out / "tables.tex"
    all_tex.write_text("% \\usepackage{booktabs}\n" + "\n".join(
        latex_table(r.analysis) for r in reports))
    md = out / "report.md"
    md.write_text(report_md(store, reports, "plots"))
    page = out / "report.html"
    page.write_text(report_html(store, reports))
    res.files += [all_tex, md, page]
    res.files += _write_sessions(store, md, page, plot_dir)
    records = run_records(store)
    res.files += _write_runs(records, out)
    if tensorboard:
        files, note = _write_tensorboard(store, records, out)
        res.files += files
        res.notes.append(note)
    return res
