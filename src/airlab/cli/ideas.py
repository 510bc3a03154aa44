"""`airlab ideas`: the knowledge base's ideas with their status from the store and the team's
prediction record; `airlab ideas show NAME`: everything about one idea."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from rich.text import Text

from airlab.cli.common import console, open_store

if TYPE_CHECKING:
    from airlab.agents.knowledge import Idea
    from airlab.agents.status import IdeaStatus

app = typer.Typer(add_completion=False, no_args_is_help=False,
                  help="List the research ideas with their status and scored predictions; "
                       "`airlab ideas show NAME` for one idea.")

STATUS_STYLE = {"better": "bold green", "worse": "red", "equivalent": "cyan",
                "undecided": "yellow", "running": "magenta", "untested": "dim"}


def _check_choice(flag: str, value: str | None, choices: tuple[str, ...]) -> None:
    from airlab.errors import AirlabError, did_you_mean

    if value is not None and value not in choices:
        raise AirlabError(f"{flag}: unknown value '{value}'", did_you_mean(value, choices))


def _num(x: float | None, fmt: str = "+.3g") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:{fmt}}"


def _prediction_short(idea: Idea) -> str:
    p = idea.prediction
    if p.kind == "ratio":
        return f"{p.metric} {p.expected:g}x [{p.low:g}, {p.high:g}]"
    return f"Δ{p.metric} {p.expected:+g} [{p.low:+g}, {p.high:+g}]" + (
        " vs ablation" if p.against == "ablation" else "")


def _score_short(s: dict[str, Any] | None) -> str:
    """The last scored result: observed value, hit or miss and by how far."""
    if not s:
        return "—"
    fmt = ".3g" if s.get("kind") == "ratio" else "+.3g"
    unit = "x" if s.get("kind") == "ratio" else ""
    obs = f"{_num(s.get('observed'), fmt)}{unit}"
    if s.get("hit"):
        return f"hit ({obs})"
    side = "" if s.get("direction_right") else ", wrong way"
    return f"miss by {_num(s.get('miss_by'), '.2g')} ({obs}{side})"


def _record_line(summary: dict[str, Any]) -> str:
    n = summary["scored"]
    if not n:
        return "prediction record: nothing scored yet"
    return (f"prediction record: {summary['hits']}/{n} hits ({100 * summary['hit_rate']:.0f}%), "
            f"direction right {summary['direction_right']}/{n}, median miss "
            f"{_num(summary['median_miss'], '.3g')}")


def _status_cell(st: IdeaStatus) -> Text:
    label = st.status + ("*" if st.needs_code and st.status == "untested" else "")
    return Text(label, style=STATUS_STYLE.get(st.status, ""))


def _help(doc: str | None) -> str:
    return " ".join((doc or "").split())  # Rich help keeps a docstring's hard line breaks


IDEAS_OPTION = typer.Option(None, "--ideas", help="A folder of your own ideas files (the "
                            "knowledge base's schema) beside <home>/ideas/; repeat for more.")


def lab_ideas(folders: list[str] | None, *, model: bool = True
              ) -> tuple[dict[str, Idea], dict[str, str]]:
    """The lab's ideas (``knowledge.lab_ideas``): the knowledge base, <home>/ideas/ (and the
    model's, unless ``model`` is False) and each ``--ideas`` folder, with where each was read."""
    from airlab.agents.knowledge import lab_ideas as read
    from airlab.cli.common import settings

    return read(settings().home, [Path(f).expanduser() for f in folders or ()], model=model)


def _source(at: str) -> str:
    """Where an idea was read, short: 'built-in' for the knowledge base."""
    return "built-in" if at.startswith("knowledge/") else at


@app.callback(invoke_without_command=True)
def ideas(
    ctx: typer.Context,
    area: str = typer.Option(None, "--area", help="Only ideas of this research area."),
    status: str = typer.Option(None, "--status", help="Only ideas with this status (untested, "
                               "running, better, worse, equivalent, undecided)."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    folders: list[str] = IDEAS_OPTION,
) -> None:
    """List the research ideas (the knowledge base, the lab's own in <home>/ideas/, those the
    language model proposed, and --ideas DIR): where each comes from, area, aspect, tier,
    status from the store, the prediction and its scored result; the footer gives the team's
    prediction record."""
    if ctx.invoked_subcommand is not None:
        return
    from airlab.agents.knowledge import AREAS
    from airlab.agents.status import (
        STATUSES,
        idea_statuses,
        prediction_record,
        record_summary,
    )

    _check_choice("--area", area, AREAS)
    _check_choice("--status", status, STATUSES)
    known, sources = lab_ideas(folders)
    store = open_store(readonly=True)
    try:
        statuses = idea_statuses(store, known)
        record = prediction_record(store, statuses=statuses)
    finally:
        store.close()
    shown = [st for st in statuses.values()
             if (area is None or st.area == area) and (status is None or st.status == status)]
    summary = record_summary(record)
    if as_json:
        out = {"ideas": [{**st.to_dict(), "title": known[st.name].title,
                          "source": sources.get(st.name),
                          "workloads": list(known[st.name].workloads),
                          "prediction": known[st.name].prediction.text()} for st in shown],
               "record": summary, "history": record}
        typer.echo(json.dumps(_clean(out), indent=2))
        return
    t = Table(title=f"ideas ({len(shown)} of {len(statuses)})", title_justify="left")
    for c in ("name", "area", "aspect", "tier", "status", "prediction", "scored result",
              "source"):
        # Names and statuses stay on one line; the result gets room before the rest wraps.
        t.add_column(c, no_wrap=c in ("name", "status"),
                     min_width=30 if c == "scored result" else None)
    for st in shown:
        t.add_row(st.name, st.area, st.aspect, str(st.tier), _status_cell(st),
                  _prediction_short(known[st.name]),
                  _score_short(st.scores[-1] if st.scores else None),
                  _source(sources.get(st.name, "")))
    console.print(t)
    if any(st.needs_code and st.status == "untested" for st in shown):
        console.print("* needs code: no switch implements it yet (the Coder writes it)",
                      highlight=False)
    console.print(_record_line(summary), highlight=False)


@app.command(help=_help("""Everything about one idea: what it is, how it is run, its
    prediction, its experiments and their scored predictions."""))
def show(name: str = typer.Argument(..., help="The idea's name (see `airlab ideas`)."),
         as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
         folders: list[str] = IDEAS_OPTION) -> None:
    """Everything about one idea: what it is, how it is run, its prediction, its experiments
    and their scored predictions."""
    from airlab.agents.status import idea_statuses
    from airlab.errors import AirlabError, did_you_mean
    from airlab.store import latest_verdicts

    known, sources = lab_ideas(folders)
    if name not in known:
        raise AirlabError(f"NAME: unknown idea '{name}'", did_you_mean(name, known))
    idea = known[name]
    store = open_store(readonly=True)
    try:
        st = idea_statuses(store, {name: idea})[name]
        verdicts = latest_verdicts(store) if st.experiments else {}
        exps = [store.experiment(e) for e in st.experiments]
    finally:
        store.close()
    ratings = {e["name"]: verdicts[e["id"]]["rating"] for e in exps
               if e is not None and e["id"] in verdicts}
    if as_json:
        out = {"idea": idea.model_dump(mode="json"), "status": st.to_dict(),
               "ratings": ratings, "source": sources.get(name)}
        typer.echo(json.dumps(_clean(out), indent=2))
        return
    _print_idea(idea, st)
    console.print(f"source: {sources.get(name, '')}", highlight=False)
    if st.experiments:
        t = Table(title="experiments", title_justify="left")
        for c in ("experiment", "rating", "observed", "scored result", "decided",
                  "at the predicted budget"):
            t.add_column(c)
        by_exp = {s["experiment"]: s for s in st.scores}
        for e in st.experiments:
            s = by_exp.get(e)
            fmt = ".3g" if idea.prediction.kind == "ratio" else "+.3g"
            t.add_row(e, str(ratings.get(e, "—")), _num(s.get("observed") if s else None, fmt),
                      _score_short(s), (s or {}).get("decided", "—"),
                      "—" if s is None or s.get("budget_match") is None
                      else "yes" if s["budget_match"] else "no")
        console.print(t)


def _print_idea(idea: Idea, st: IdeaStatus) -> None:
    impl = idea.implementation
    me = idea.minimum_experiment
    p = console.print
    p(Text.assemble((f"{idea.name}", "bold"), f": {idea.title}"))
    p(Text.assemble(f"area {idea.area}, aspect {idea.aspect}, tier {idea.tier}, workloads "
                    f"{', '.join(idea.workloads)}; status ", _status_cell(st)))
    p(f"\n{idea.pitch}", highlight=False)
    for label, body in (("mathematics", idea.math), ("why it might work", idea.why_it_might_work),
                        ("why it might not", idea.why_it_might_not)):
        p(Text(f"\n{label}", style="bold"))
        p(" ".join(body.split()), highlight=False)
    p(Text("\nimplementation", style="bold"))
    if impl.needs_code:
        p(f"needs code: --use_{impl.switch}: {' '.join(impl.sketch.split())}", highlight=False)
    else:
        use = " ".join(f"--use_{u}" for u in impl.use)
        opts = " ".join(f"--{k} {v}" for k, v in impl.options.items())
        p(f"{use} {opts}".strip(), highlight=False)
        for opt, dim in impl.search.items():
            rng = (f"one of {dim.choices}" if dim.choices is not None
                   else f"[{dim.low:g}, {dim.high:g}]{' log' if dim.log else ''}")
            p(f"  search {opt}: {rng}", highlight=False)
    budget = ", ".join(f"{v:g} {k}" for k, v in me.budget.items())
    p(Text("\nminimum experiment", style="bold"))
    p(f"{me.workload} {me.preset} on {me.dataset}, {budget}, seeds "
      f"{', '.join(map(str, me.seeds))}; baseline {me.baseline.name}"
      + (f", ablation {idea.ablation.name}" if idea.ablation is not None else "")
      + f"; {me.metric} ({me.direction})", highlight=False)
    p(Text("\nprediction", style="bold"))
    p(idea.prediction.text(), highlight=False)
    if st.effect is not None or st.ratio is not None or st.rating is not None:
        p(f"last observed: {_num(st.effect)}; time-to-target {_num(st.ratio, '.2f')}x; "
          f"rating {st.rating if st.rating is not None else '—'}", highlight=False)
    for label, items in (("aliases", idea.aliases), ("related", idea.related),
                         ("references", idea.references)):
        if items:
            p(f"{label}: {', '.join(items)}", highlight=False)
    if not st.experiments:
        p("\nno experiment has tested it yet"
          + ("" if idea.needs_code else f": `airlab sprint --idea {idea.name}`"),
          highlight=False)


def _clean(v: Any) -> Any:
    """NaN and infinities as null: the output is strict JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    return v
