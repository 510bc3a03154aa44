"""The experiment folder: one Markdown file per research phase, in ``<home>/experiments/<name>/``.

analysis.md (problem, hypothesis) -> design.md (arms, seeds, budget, metrics, success
criterion) -> implementation.md (techniques, flags, code version) -> tracking.md (live run
status; :func:`write_tracking` is cheap enough to call after every run) -> post.md (results,
plots, rating, critique and the one command that reproduces it). ``spec.yaml`` sits beside
them so the experiment can be rerun from the folder alone.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

from airlab.analysis.compare import Analysis, analyze, run_facts
from airlab.errors import AirlabError
from airlab.report.table import fmt, fmt_p, speedup
from airlab.store import Store
from airlab.validate import Verdict, rate

SUCCESS_RULE = ("an arm counts as better when its Holm-adjusted p < 0.05, its mean improves on "
                "the baseline by more than 2 sd of the baseline and Cohen's d >= 0.5; the lab's "
                "efficiency goal is a 2x cheaper run at the same quality")


def experiment_dir(home: Path | str, name: str) -> Path:
    # Names reach file names only through slug(): a stored name cannot point outside home.
    from airlab.spec import EXPERIMENT_NAME_MAX, slug

    return Path(home) / "experiments" / slug(name, EXPERIMENT_NAME_MAX)


def _exp(store: Store, name: str) -> dict[str, Any]:
    exp = store.experiment(name)
    if exp is None:
        raise AirlabError(f"no experiment named '{name}' in {store.url}")
    return exp


def _write(path: Path, text: str) -> Path:
    # Write then rename, so a reader (or a crash) never sees half a file.
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]()#|!~"}
                            | {"<": "&lt;", ">": "&gt;", "&": "&amp;"})


def md_escape(text: Any, multiline: bool = False) -> str:
    """User text (names, hypotheses, reasons) as literal Markdown: no markup, links, images or
    raw HTML can come from it; one line unless ``multiline``."""
    lines = str(text).translate(_MD_SPECIAL).splitlines() or [""]
    if not multiline:
        return " ".join(ln.strip() for ln in lines)
    # A line starting with '-', '+', '>' or 'N.' would open a list or a quote.
    return "\n".join("\\" + ln if ln.lstrip()[:1] in ("-", "+") else ln for ln in lines)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    def cell(s: str) -> str:
        return str(s).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _arms(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [spec.get("baseline", {"name": "baseline"}), *spec.get("arms", [])]


def _flags(arm: dict[str, Any], shared: dict[str, Any]) -> str:
    opts = {**shared, **(arm.get("options") or {})}
    parts = [f"--use_{u}" for u in arm.get("use", [])]
    parts += [f"--{k} {v}" for k, v in opts.items()]
    return " ".join(parts)


def reproduce_command(spec: dict[str, Any], spec_path: Path) -> str:
    """`airlab run NAME` when the stored spec is exactly a built-in one, else the spec file."""
    from airlab.spec import library_specs, load_spec

    name = spec.get("name", "")
    if name in library_specs():
        try:
            if load_spec(name).to_dict() == spec:
                return f"airlab run {name}"
        except AirlabError:
            pass
    return f"airlab run {spec_path}"


# --------------------------------------------------------------------------- phases


def analysis_md(exp: dict[str, Any]) -> str:
    spec = exp["spec"]
    arms = ", ".join(md_escape(a["name"]) for a in spec.get("arms", [])) or \
        "none (baseline only)"
    direction = "lower" if spec.get("direction", "minimize") == "minimize" else "higher"
    return (
        f"# {md_escape(exp['name'])}: problem analysis\n\n"
        f"- **area**: {exp['area']}\n- **workload**: {exp['workload']}"
        f" (dataset {spec.get('dataset') or 'workload default'})\n"
        f"- **created**: {time.strftime('%Y-%m-%d %H:%M', time.localtime(exp['created_at']))}\n\n"
        "## Problem\n\n"
        f"Can {arms} train more cheaply than, or better than, the baseline "
        f"{md_escape(spec['baseline']['name'])} at the same budget, judged on "
        f"`{spec.get('metric', 'val_loss')}` ({direction} is better)?\n\n"
        "## Hypothesis\n\n"
        + md_escape((spec.get('hypothesis') or exp.get('hypothesis') or '(none stated)')
                    .strip(), multiline=True) + "\n"
    )


def design_md(exp: dict[str, Any]) -> str:
    spec = exp["spec"]
    rows = [[md_escape(a["name"]) + (" (baseline)" if i == 0 else ""),
             ", ".join(a.get("use", [])) or "—",
             ", ".join(f"{k}={v}" for k, v in (a.get("options") or {}).items()) or "—",
             md_escape(a.get("description", "") or "")] for i, a in enumerate(_arms(spec))]
    budget = ", ".join(f"{k} = {v:g}" for k, v in spec["budget"].items())
    tol = float(spec.get("tolerance", 0) or 0)
    return (
        f"# {md_escape(exp['name'])}: design\n\n## Arms\n\n"
        + md_table(["arm", "techniques", "options", "description"], rows)
        + f"\n## Seeds\n\n{', '.join(map(str, spec.get('seeds', [])))} — shared by every arm, "
        "so seed i of an arm is paired with seed i of the baseline.\n\n"
        f"## Budget\n\n{budget} per run, the same for every arm (compute-matched).\n"
        + (f"Shared options: {', '.join(f'{k}={v}' for k, v in spec['options'].items())}.\n"
           if spec.get("options") else "")
        + f"\n## Metrics\n\nPrimary: `{spec.get('metric', 'val_loss')}` "
        f"({spec.get('direction', 'minimize')}). Also recorded: train_seconds, tokens_per_s or "
        "samples_per_s, flops, peak_mem_mb, params, model_bytes, energy_kwh_est (an estimate).\n"
        f"\n## Success criterion\n\n{SUCCESS_RULE}"
        + (f"; quality may drop by at most {tol:g}" if tol else "") + ".\n"
    )


def implementation_md(store: Store, exp: dict[str, Any]) -> str:
    spec = exp["spec"]
    shared = spec.get("options") or {}
    rows = []
    for a in _arms(spec):
        flags = _flags(a, shared)
        rows.append([md_escape(a["name"]), ", ".join(a.get("use", [])) or "—",
                     f"`{flags}`" if flags else "—"])
    versions: set[str] = set()
    libs: dict[str, str] = {}
    for r in store.runs(exp["id"]):
        prov = (r.get("info") or {}).get("provenance") or {}
        code = prov.get("code") or {}
        if code:
            commit = (code.get("commit") or "no git")[:12]
            versions.add(f"airlab {code.get('airlab', '?')} @ {commit}"
                         + (" (uncommitted changes)" if code.get("dirty") else ""))
        libs.update(prov.get("versions") or {})
    budget_flag = " ".join(f"--{k} {v:g}" for k, v in spec["budget"].items())
    text = (f"# {md_escape(exp['name'])}: implementation\n\n## Techniques and flags per arm\n\n"
            + md_table(["arm", "techniques", "flags (airlab train)"], rows)
            + f"\nOne run of an arm by hand: `airlab train {spec.get('workload', 'charlm')} "
            f"{budget_flag} --seed SEED <flags>`.\n\n## Code version\n\n"
            + ("\n".join(f"- {v}" for v in sorted(versions)) or "- no finished run yet")
            + "\n")
    if libs:
        text += "\nLibraries: " + ", ".join(f"{k} {v}" for k, v in sorted(libs.items())) + "\n"
    return text


def tracking_md(store: Store, exp: dict[str, Any]) -> str:
    spec = exp["spec"]
    metric = spec.get("metric", "val_loss")
    runs = store.runs(exp["id"])
    mets = store.metrics([r["id"] for r in runs])
    states: dict[str, int] = {}
    for r in runs:
        states[r["state"]] = states.get(r["state"], 0) + 1
    rows = []
    for r in runs:
        m = mets[r["id"]]
        rows.append([md_escape(r["arm"]), str(r["seed"]), r["state"], fmt(m.get(metric)),
                     fmt(m.get("train_seconds"), 3), md_escape(r["reason"] or "")])
    summary = ", ".join(f"{n} {s}" for s, n in sorted(states.items())) or "no runs yet"
    return (f"# {md_escape(exp['name'])}: tracking\n\n"
            f"Updated {time.strftime('%Y-%m-%d %H:%M:%S')}. "
            f"Runs: {summary} (of {len(runs)} planned).\n\n"
            + md_table(["arm", "seed", "state", metric, "train s", "reason"], rows))


def results_md(a: Analysis) -> str:
    """The arm-versus-baseline table in Markdown (also used by the publication report)."""
    rows = []
    for r in a.rows:
        s, c = r.summary, r.comparison
        speed = speedup(r) or "—"  # "1.13 [0.88, 1.46]", "not reached", with seeds reached
        rows.append([md_escape(r.arm), f"{r.finished}/{r.planned}",
                     f"{fmt(s.mean)} ± {fmt(s.sd, 2)}", f"[{fmt(s.ci_low)}, {fmt(s.ci_high)}]",
                     "" if c is None else f"{c.delta:+.4g}",
                     "" if c is None else fmt_p(r.p_holm),
                     "" if r.decision is None else fmt(r.decision.dz, 3),
                     fmt(r.means.get("train_seconds"), 3), speed,
                     r.verdict + "".join(f" ({k}: {n} runs)"
                                         for k, n in sorted(r.pathologies.items()))])
    table = md_table(["arm", "n", f"{a.metric} mean ± sd", "95% CI", "Δ vs base", "p (Holm)",
                      "d_z", "train s", "speed-up to target (x, 95% CI, pairs reached)",
                      "verdict"], rows)
    notes = [f"Equivalent: two one-sided tests within {a.margin.describe()}, decided first (a "
             "difference inside the margin is negligible, never better or worse). Better/worse: "
             "paired t test, Holm across arms. Quality kept: better, or equivalent without a "
             "significant loss."]
    if not a.quality_is_primary:
        notes.append(f"Quality is judged on {a.quality_metric} (margin "
                     f"{a.quality_margin.describe()}); {a.metric} is the saving.")
    for m, f in a.floors.items():
        notes.append(f"Noise floor of {m} (airlab calibrate): sd {fmt(f.sd, 3)} per run over "
                     f"{f.n} A/A runs.")
    return table + "\n" + " ".join(notes) + "\n"


def verdict_md(v: Any) -> str:
    rating = f"{v.rating}/10 ({v.band})" if v.rating >= 1 else v.band
    lines = [f"**Rating: {rating}**"
             + (f", best arm {md_escape(v.best_arm)}" if v.best_arm else "")
             + f" (rubric {v.rubric_version})\n",
             md_table(["component", "points", "max"],
                      [[k, str(b["points"]), str(b["max"])] for k, b in v.breakdown.items()])]
    if v.critique:
        lines.append("\nCritique:\n\n" + "\n".join(f"- {md_escape(c)}" for c in v.critique)
                     + "\n")
    return "\n".join(lines)


def rate_stored(store: Store, a: Analysis) -> Verdict:
    """The rubric on an analysis of a stored experiment, with its runs' facts (not saved)."""
    return rate(a, run_facts(store, a.name))


def figures(store: Store, a: Analysis) -> dict[str, bytes]:
    """The experiment's three plots as PNG bytes: curves, efficiency (cost ratios), pareto."""
    from airlab.report import plots

    name = a.name
    pts = [(r.arm, r.means["train_seconds"], r.summary.mean) for r in a.rows
           if "train_seconds" in r.means and r.summary.mean == r.summary.mean]
    return {
        "curves": plots.loss_curves_png(plots.arm_curves(store, name), name),
        "efficiency": plots.efficiency_png(plots.efficiency_bars(a),
                                           f"{name}: cost ratios baseline/arm"),
        "pareto": plots.pareto_png(pts, "train_seconds (mean over seeds)",
                                   f"{a.metric} (mean over seeds)", f"{name}: quality vs cost",
                                   a.direction == "minimize"),
    }


def post_md(store: Store, exp: dict[str, Any], folder: Path, a: Analysis, v: Verdict) -> str:
    """The results post from one analysis and its verdict; writes the plots beside it."""
    name = exp["name"]
    for fig, png in figures(store, a).items():
        (folder / f"{fig}.png").write_bytes(png)
    failures = [f"- {md_escape(r.arm)} {md_escape(f)}" for r in a.rows for f in r.failures]
    hypothesis = md_escape((a.spec.get('hypothesis') or '').strip(), True)
    return (f"# {md_escape(name)}: results\n\n{hypothesis}\n\n"
            + results_md(a)
            + ("\nFailed runs:\n\n" + "\n".join(failures) + "\n" if failures else "")
            + "\n![validation loss over training, mean ± sd across seeds](curves.png)\n\n"
            "![cost ratios baseline/arm](efficiency.png)\n\n"
            "![quality versus cost, Pareto front in red](pareto.png)\n\n"
            "## Verdict\n\n" + verdict_md(v)
            + "\n## Reproduce\n\n```\n"
            + reproduce_command(exp["spec"], folder / "spec.yaml") + "\n```\n")


# --------------------------------------------------------------------------- entry points


def write_tracking(store: Store, name: str, home: Path | str) -> Path:
    """Rewrite tracking.md with every run's state; cheap, so call it after each run."""
    exp = _exp(store, name)
    folder = experiment_dir(home, name)
    folder.mkdir(parents=True, exist_ok=True)
    return _write(folder / "tracking.md", tracking_md(store, exp))


def write_artifacts(store: Store, name: str, home: Path | str, *,
                    analysis: Analysis | None = None, verdict: Verdict | None = None
                    ) -> list[Path]:
    """Write every phase's Markdown (and the plots and spec.yaml) for one experiment.

    The pipeline passes the analysis and verdict it already has; else they are computed here.
    """
    exp = _exp(store, name)
    folder = experiment_dir(home, name)
    folder.mkdir(parents=True, exist_ok=True)
    out = [_write(folder / "spec.yaml", yaml.safe_dump(exp["spec"], sort_keys=False)),
           _write(folder / "analysis.md", analysis_md(exp)),
           _write(folder / "design.md", design_md(exp)),
           _write(folder / "implementation.md", implementation_md(store, exp)),
           _write(folder / "tracking.md", tracking_md(store, exp))]
    if exp["kind"] == "experiment":
        a = analysis or analyze(store, name)
        v = verdict or rate_stored(store, a)
        out.append(_write(folder / "post.md", post_md(store, exp, folder, a, v)))
        out += [folder / "curves.png", folder / "efficiency.png", folder / "pareto.png"]
    return out
