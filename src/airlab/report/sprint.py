"""``sprint.md``: the team's reasoning for one sprint, phase by phase, beside the experiment's
post: the candidates and why one was chosen, the novelty check, why these seeds and this
budget, the flags of each arm, the results, the scored prediction, how the time box was spent,
and what came from the language model.
"""

from __future__ import annotations

from pathlib import Path

from airlab.store.records import ArmResult, SprintRecord


def _ratio(r: ArmResult) -> str:
    if r.ratio is None:
        return "no time-to-target"
    ci = f" [{r.ci_low:.2f}, {r.ci_high:.2f}]" if r.ci_low is not None and \
        r.ci_high is not None else ""
    return f"{r.ratio:.2f}x{ci}"


def arm_line(r: ArmResult) -> str:
    return f"{r.arm}: {r.verdict}, {_ratio(r)}{' (wins)' if r.wins else ''}"


def sprint_md(rec: SprintRecord) -> str:
    """The sprint's reasoning as Markdown."""
    prop = rec.proposal
    q = rec.request
    task = q.task.label(q.tokens) if q.tokens else q.task.label()
    lines = [f"# Sprint: {rec.kind}", "", f"Task: {task} ({q.task.workload} {q.task.preset}); "
             "every ratio is measured against its default configuration.", ""]
    lines += ["## Ideas", "", prop.summary if prop else "", ""]
    for c in (prop.researcher if prop else {}).get("candidates", []):
        nov = c.get("novelty") or {}
        sim = ", ".join(f"{n} {s:.2f}" for n, s in (nov.get("similar") or [])[:3])
        ev = c.get("expected_value")
        ev_text = {"model": "proposed by the model", "random": "drawn at random"}.get(
            str(c.get("source")), f"expected value {float('nan') if ev is None else ev:.3g}")
        lines.append(f"- **{c.get('idea')}** ({c.get('aspect')}, {c.get('area')}): {ev_text}; "
                     f"{'; '.join(c.get('reasons', []))}"
                     f"{'; similar: ' + sim if sim else ''}"
                     f"{'; known as ' + nov['known_as'] if nov.get('known_as') else ''}")
    lines += _transfer_md(rec)
    d = rec.design
    lines += ["", "## Design", "", f"- seeds: {d.seeds_reason if d else ''}",
              f"- budget: {d.budget_reason if d else ''}"]
    lines += [f"- note: {n}" for n in (d.notes if d else [])]
    impl = rec.implementation
    lines += ["", "## Implementation", "", f"Source: {impl.source if impl else ''}; "
              f"{impl.runs if impl else 0} runs planned.", ""]
    for a in impl.arms if impl else []:
        lines.append(f"- {a['arm']}: {' '.join('--use_' + u for u in a['use']) or '(none)'} "
                     f"{a['options'] or ''}")
    runs = rec.runs
    lines += ["", "## Runs", ""]
    if runs is not None:
        lines.append(f"planned {runs.planned}, reused {runs.reused}, adopted {runs.adopted}, "
                     f"ran {runs.ran}, failed {runs.failed}, incomplete {runs.incomplete}, "
                     f"rating {runs.rating}")
    val = rec.validation
    lines += ["", "## Validation", ""]
    if val is not None:
        lines += [f"Rated {val.rating}/10 ({val.band}).", ""]
        lines += [f"- {arm_line(r)}; quality {r.quality}" for r in val.arms.values()]
        lines += [f"- {k.replace('/', ' against ')}, paired by seed at the default "
                  f"configuration's quality: {_ratio(r)} ({r.reached}/{r.n} pairs reached it)"
                  f"{': it replaces the current recipe' if r.wins else ': not shown faster'}"
                  for k, r in val.versus.items()]
        lines += _prediction(val.prediction)
        lines += [""] + [f"- {c}" for c in val.critique]
        mc = val.llm_critique
        if mc:
            lines += ["", f"The model's critique ({mc.get('by')}; it does not change the "
                          f"rating {val.rating}/10):", ""]
            lines += [f"- {c}" for c in mc.get("lines", [])]
            if mc.get("ungrounded_numbers"):
                lines.append(f"- (numbers not in the statistics: "
                             f"{', '.join(mc['ungrounded_numbers'])})")
    lines += _box_md(rec) + _model_md(rec)
    return "\n".join(lines) + "\n"


def _transfer_md(rec: SprintRecord) -> list[str]:
    """What the Researcher skipped (ideas that do not apply to the task) and discounted (ideas
    whose win did not transfer)."""
    prop, lines = rec.proposal, []
    if rec.request.discount:
        lines += ["", "Discounted in this choice (their win did not transfer):", ""]
        lines += [f"- {idea}: {why}" for idea, why in rec.request.discount]
    if prop is not None and prop.skipped:
        by: dict[str, list[str]] = {}
        for idea, why in prop.skipped.items():
            by.setdefault(why, []).append(idea)
        lines += ["", f"Skipped: {len(prop.skipped)} ideas do not apply to "
                      f"{rec.request.task.label()}:", ""]
        lines += [f"- {', '.join(sorted(ideas))}: {why}" for why, ideas in sorted(by.items())]
    return lines


def _prediction(pred: dict | None) -> list[str]:  # type: ignore[type-arg]
    if not pred:
        return []
    p = pred.get("prediction") or {}
    obs = pred.get("observed")
    return ["", f"Prediction: {p.get('metric')} {p.get('kind')} {p.get('expected')} "
                f"[{p.get('low')}, {p.get('high')}] ({p.get('direction')}); observed "
                f"{'n/a' if obs is None else format(obs, '.4g')}: "
                f"{'hit' if pred.get('hit') else 'miss'}"
                + ("" if pred.get("hit") or pred.get("miss_by") is None
                   else f" by {pred['miss_by']:.3g}") + "."]


def _box_md(rec: SprintRecord) -> list[str]:
    """How the time box was spent: seconds per phase, and the model's share of them."""
    if not rec.box:
        return []
    phases = {k: v for k, v in rec.box.items() if not k.startswith("model.")}
    model = {k[6:]: v for k, v in rec.box.items() if k.startswith("model.")}
    lines = ["", "## Time box", "", f"{rec.request.minutes:g} minutes: "
             + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) + "."]
    if model:
        lines.append("Waiting for the model: " + ", ".join(f"{k} {v:.1f} s"
                                                           for k, v in model.items()) + ".")
    return lines


def _model_md(rec: SprintRecord) -> list[str]:
    """The sprint post's account of the language model: which parts it gave, at what cost."""
    llm, failed = rec.llm, rec.failed_implementations
    if llm is None and not failed:
        return []
    lines = ["", "## Language model", ""]
    if llm is not None:
        tok = llm.tokens or {}
        models = ", ".join(tok.get("models") or [llm.model])
        replay = (f" Replayed from the answers stored with sprint {llm.replay_of}: no model "
                  "was called; the counts are the original's." if llm.replay_of else "")
        lines += [f"Model {models}: {tok.get('calls', 0)} calls ({tok.get('failed', 0)} without "
                  f"a usable answer), {tok.get('prompt_tokens', 0):,} prompt + "
                  f"{tok.get('completion_tokens', 0):,} completion tokens.{replay}", ""]
        lines += [f"- {part}: {how}" for part, how in llm.parts.items()]
        lines += [f"- warning: {w}" for w in llm.warnings]
        code = llm.code or {}
        if code.get("ok"):
            attempts = code.get("attempts") or []
            committed = "committed to " if (attempts or [{}])[-1].get("commit") else ""
            lines.append(f"- generated technique `--use_{code['switch']}`: passed the "
                         f"sandboxed contract check after {len(attempts)} attempt(s); sha256 "
                         f"{code.get('sha256')}; stored as {code.get('path')}; "
                         f"{committed}{code.get('git')}")
            lines += [f"  - attempt {a.get('attempt')} failed the check: {a.get('reason')}"
                      for a in attempts if not a.get("ok")]
    for f in failed:
        lines.append(f"- failed implementation of {f.get('idea')} (`--use_{f.get('switch')}`) "
                     f"after {len(f.get('attempts') or [])} attempt(s): {f.get('reason')}")
    return lines


def write_sprint_md(home: Path, experiment: str, rec: SprintRecord) -> Path:
    """Write ``sprint.md`` into the experiment's folder; returns the folder."""
    from airlab.report.post import experiment_dir

    folder = experiment_dir(home, experiment)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sprint.md").write_text(sprint_md(rec), encoding="utf-8")
    return folder
