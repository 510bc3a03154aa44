"""The research team's commands: `sprint` (one cycle), `auto` (the loop), `leaderboard`.

Thin wrappers over airlab.agents.team (a sprint) and airlab.agents.loop (`auto`); each phase
prints one line as it ends, the runs show the same progress bars as `airlab run`.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import typer
from rich.table import Table

from airlab.cli.common import (
    TENSORBOARD_HELP,
    console,
    executor,
    open_store,
    run_reporter,
    settings,
)
from airlab.errors import AirlabError

PHASE_STYLE = {"ideas": "cyan", "design": "blue", "implementation": "magenta", "runs": "white",
               "validation": "green", "post": "bold green", "failed": "bold red",
               "warning": "bold yellow"}


class _PhaseReporter:
    def __init__(self, tensorboard: str | None = None, store: Any = None) -> None:
        self.tensorboard, self.store = tensorboard, store
        if tensorboard:
            from airlab.report.tensorboard import summary_writer_class

            summary_writer_class()  # not installed: one line now, before the first sprint

    def phase(self, sprint: str, phase: str, text: str) -> None:
        style = PHASE_STYLE.get(phase, "white")
        console.print(f"[{style}]{sprint} {phase:>14}[/] {text}", highlight=False)

    def runs(self, title: str) -> Any:
        return run_reporter(title, self.tensorboard, self.store)


def _options(items: list[str] | None) -> dict[str, Any]:
    """--option KEY=VALUE pairs, values read as `airlab train` reads them."""
    from airlab.cli.run import _parse_value

    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise AirlabError(f"--option: '{item}' is not KEY=VALUE", "e.g. --option lr=0.002")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _sprint_ref(ref: str) -> tuple[str, int]:
    session, _, num = ref.rpartition(":")
    try:
        n = int(num)
    except ValueError:
        raise AirlabError(f"--continue: '{ref}' is not SESSION:NUMBER or NUMBER",
                          "e.g. --continue sprints:3 (see `airlab sprint --list`)") from None
    from airlab.agents.team import SPRINT_SESSION

    return session or SPRINT_SESSION, n


def _llm(flag: bool | None, budget: int | None, **overrides: Any) -> Any:
    """The language model the team asks (``AIRLAB_LLM_*``, the ``--llm-*`` flags over them), or
    None for the offline team. ``--llm`` requires one; ``--no-llm`` ignores it; unset uses it
    when it is configured."""
    if flag is False:
        return None
    from airlab.agents.llm import LLMClient, LLMSettings, TokenBudget

    s = LLMSettings.from_env(**overrides)
    if s is None:
        if flag:
            raise AirlabError("--llm: no language model is configured",
                              "set AIRLAB_LLM_BASE_URL and AIRLAB_LLM_MODEL (see docs/llm.md)")
        return None
    return LLMClient(s, budget=TokenBudget(budget))


def _tuning(temperature: float | None, fmt: str | None, cap: int | None,
            timeout: float | None) -> dict[str, Any]:
    return {"temperature": temperature, "response_format": fmt, "max_tokens": cap,
            "timeout_s": timeout}


TEMPERATURE = typer.Option(None, "--llm-temperature", help="The model's sampling temperature "
                           "(AIRLAB_LLM_TEMPERATURE; default 0.2).")
FORMAT = typer.Option(None, "--llm-format", help="JSON mode asked first: json_schema, "
                      "json_object or none (AIRLAB_LLM_RESPONSE_FORMAT).")
CAP = typer.Option(None, "--llm-cap", help="Completion cap for every role, in tokens "
                   "(AIRLAB_LLM_MAX_TOKENS; default: each role's own, sized to its schema).")
TIMEOUT = typer.Option(None, "--llm-timeout", help="Seconds to wait for one answer "
                       "(AIRLAB_LLM_TIMEOUT; default 60; a role's share of the box bounds it).")


def _close(llm: Any) -> None:
    if llm is not None and hasattr(llm, "close"):
        llm.close()


def sprint(
    idea: str = typer.Option(None, "--idea", help="Test this idea of the knowledge base "
                             "(`airlab ideas`); default: the Researcher chooses."),
    area: str = typer.Option(None, "--area", help="Choose among the ideas of one area."),
    topic: str = typer.Option(None, "--topic", help="Steer the Researcher with a few words, "
                              "e.g. 'faster convergence at high learning rate'."),
    minutes: float = typer.Option(15.0, "--minutes", min=0.5, help="The sprint's time box; "
                                  "runs still going at its end are stored incomplete."),
    seed: int = typer.Option(0, "--seed", min=0, help="The Researcher's seed: the same seed and "
                             "store give the same choices."),
    tokens: float = typer.Option(None, "--tokens", min=1000, help="Budget per run (default: "
                                 "the idea's, cut to fit the time box)."),
    workers: int = typer.Option(2, "--workers", "-w", min=1, help="Runs at a time."),
    review: bool = typer.Option(False, "--review", help="Stop after the design so that you can "
                                "edit or approve the spec; `airlab sprint` then continues it."),
    continue_: str = typer.Option(None, "--continue", help="Continue sprint SESSION:NUMBER "
                                  "(after --review, or one that was killed)."),
    list_: bool = typer.Option(False, "--list", help="List the stored sprints."),
    option: list[str] = typer.Option(  # noqa: B008 - typer reads the default, once
        None, "--option", help="KEY=VALUE shared by every arm (e.g. --option n_layer=2); "
        "repeat for more."),
    llm: bool = typer.Option(None, "--llm/--no-llm", help="Ask the language model set by "
                             "AIRLAB_LLM_BASE_URL / AIRLAB_LLM_MODEL (default: when set)."),
    max_tokens: int = typer.Option(None, "--max-tokens", min=1, help="Tokens (prompt + "
                                   "completion) the model may spend on this sprint; then the "
                                   "team goes on offline."),
    replay: str = typer.Option(None, "--replay", help="Reproduce sprint ID (its row id or "
                               "SESSION:NUMBER) from its stored model answers, with no server, "
                               "as a new sprint of session 'replay'."),
    llm_temperature: float = TEMPERATURE,
    llm_format: str = FORMAT,
    llm_cap: int = CAP,
    llm_timeout: float = TIMEOUT,
    tensorboard: str = typer.Option(None, "--tensorboard", metavar="DIR",
                                    help=TENSORBOARD_HELP),
) -> None:
    """One research sprint: ideas -> design -> implementation -> runs -> validation -> post,
    inside a time box, with the team's reasoning written beside the experiment's post."""
    from airlab.agents.team import SPRINT_SESSION, Team
    from airlab.store import team as team_store

    if list_:
        _list_sprints(team_store.list_sprints(open_store(readonly=True)))
        return
    s = settings()
    store = open_store()
    model = None if replay else _llm(llm, max_tokens, **_tuning(
        llm_temperature, llm_format, llm_cap, llm_timeout))
    if idea is not None or area is not None:
        _check_idea_args(idea, area, coder=model is not None)
    if replay:
        _replay(store, s, replay, workers, tensorboard)
        return
    session, number = SPRINT_SESSION, None
    if continue_:
        session, number = _sprint_ref(continue_)
        if team_store.get_sprint(store, session, number) is None:
            raise AirlabError(f"--continue: no sprint {session}:{number} in the store",
                              "see `airlab sprint --list`")
    t0 = time.perf_counter()
    try:
        with executor(workers, None, None) as ex:
            team = Team(store, s, ex, seed=seed, workers=workers,
                        reporter=_PhaseReporter(tensorboard, store),
                        options=_options(option), llm=model)
            out = team.sprint(session=session, number=number, minutes=minutes, idea=idea,
                              area=area, topic=topic, review=review, tokens=tokens)
    finally:
        _close(model)
    took = time.perf_counter() - t0
    if out.status == "failed":
        raise AirlabError(f"sprint {out.session}:{out.number} failed: {out.reason}",
                          "see `airlab sprint --list`; fix and `airlab sprint --continue "
                          f"{out.session}:{out.number}`")
    if out.status == "review":
        return
    console.print(f"sprint {out.session}:{out.number} ({out.kind}, idea {out.idea}) done in "
                  f"{took / 60:.1f} min: {out.experiment} rated {out.rating}/10; "
                  f"artifacts in {out.folder}", highlight=False)


def _replay(store: Any, s: Any, ref: str, workers: int, tensorboard: str | None = None
            ) -> None:
    """``airlab sprint --replay ID``: the sprint again from its stored answers."""
    from airlab.agents.replay import compare_sprints, find_sprint, replay_backend
    from airlab.agents.team import Team

    row = find_sprint(store, ref)
    rec0 = row.record
    if row.kind != "explore":
        raise AirlabError(f"--replay: sprint {row.key} is a {row.kind} sprint",
                          "replay an explore sprint")
    backend = replay_backend(store, row)
    team0 = rec0.llm.team if rec0.llm is not None else {}
    spec0 = rec0.spec
    q = rec0.request
    t0 = time.perf_counter()
    with executor(workers, None, None) as ex:
        team = Team(store, s, ex, seed=int(team0.get("seed", 0)), workers=workers,
                    reporter=_PhaseReporter(tensorboard, store),
                    options=team0.get("options") or {}, llm=backend)
        # The original's seeds and budget (the Architect sizes them from the store, which has
        # grown since), so that the spec is the original's.
        out = team.sprint(session="replay", minutes=q.minutes, idea=q.idea, area=q.area,
                          topic=q.topic,
                          tokens=spec0.budget.get("tokens") if spec0 is not None else None,
                          seeds=spec0.seeds if spec0 is not None else None)
    if out.status == "failed":
        raise AirlabError(f"replay {out.session}:{out.number} failed: {out.reason}",
                          "see `airlab sprint --list`")
    diffs = compare_sprints(rec0, out.record)
    console.print(f"replay {out.session}:{out.number} of sprint {backend.replay_of} done in "
                  f"{(time.perf_counter() - t0) / 60:.1f} min: {out.experiment} rated "
                  f"{out.rating}/10; artifacts in {out.folder}", highlight=False)
    if diffs:
        console.print("differs from the original: " + "; ".join(diffs), highlight=False)
    else:
        console.print("ideas, spec and generated code equal the original's", highlight=False)
    if backend.mismatches:  # e.g. the Validator's: the runs were measured again
        console.print(f"note: the questions to {', '.join(sorted(set(backend.mismatches)))} "
                      "differ from the recorded ones (the store or the measurements changed "
                      "since); the recorded answers were used", highlight=False)


def _check_idea_args(idea: str | None, area: str | None, coder: bool = False) -> None:
    """``coder``: a language model is configured, so its Coder writes what an idea needs."""
    from airlab.agents.knowledge import load_ideas
    from airlab.errors import did_you_mean

    ideas = load_ideas()
    if idea is not None and idea not in ideas:
        raise AirlabError(f"--idea: unknown idea '{idea}'",
                          did_you_mean(idea, ideas) or "see `airlab ideas`")
    if idea is not None and ideas[idea].needs_code and not coder:
        raise AirlabError(f"--idea: '{idea}' needs code (no switch implements it yet)",
                          "the LLM-backed Coder writes it; pick a runnable idea (`airlab ideas`)")
    areas = sorted({i.area for i in ideas.values()})
    if area is not None and area not in areas:
        raise AirlabError(f"--area: unknown area '{area}'",
                          did_you_mean(area, areas) or f"one of {', '.join(areas)}")


def _list_sprints(rows: list[Any]) -> None:
    t = Table(title="sprints")
    for c in ("sprint", "kind", "idea", "phase", "status", "rating", "experiment"):
        t.add_column(c)
    for r in rows:
        val = r.record.validation
        t.add_row(r.key, r.kind, r.idea or "", r.phase, r.status,
                  "" if val is None else str(val.rating), r.experiment or "")
    console.print(t)


def auto(
    sprints: int = typer.Option(None, "--sprints", min=1, help="Stop after this many sprints."),
    hours: float = typer.Option(None, "--hours", min=0.01, help="Stop after this much sprint "
                                "time."),
    seed: int = typer.Option(0, "--seed", min=0, help="The session's seed (kept on restart)."),
    session: str = typer.Option("auto", "--session", help="Session name: the same name "
                                "continues a killed session."),
    tokens: float = typer.Option(400_000, "--tokens", min=1000, help="Every sprint's budget "
                                 "(one budget, so baselines are shared and ratios compare)."),
    minutes: float = typer.Option(15.0, "--minutes", min=0.5, help="Time box per sprint."),
    topic: str = typer.Option(None, "--topic", help="Steer the Researcher."),
    workers: int = typer.Option(2, "--workers", "-w", min=1, help="Runs at a time."),
    option: list[str] = typer.Option(  # noqa: B008 - typer reads the default, once
        None, "--option", help="KEY=VALUE shared by every arm of every sprint (e.g. --option "
        "n_layer=2)."),
    llm: bool = typer.Option(None, "--llm/--no-llm", help="Ask the language model set by "
                             "AIRLAB_LLM_BASE_URL / AIRLAB_LLM_MODEL (default: when set)."),
    max_tokens: int = typer.Option(None, "--max-tokens", min=1, help="Tokens the model may "
                                   "spend in this run of the session; then offline."),
    llm_temperature: float = TEMPERATURE,
    llm_format: str = FORMAT,
    llm_cap: int = CAP,
    llm_timeout: float = TIMEOUT,
    tensorboard: str = typer.Option(None, "--tensorboard", metavar="DIR",
                                    help=TENSORBOARD_HELP),
) -> None:
    """The autonomous loop: sprint after sprint; winners are stacked (each part ablated out)
    and a recipe is kept as the best only after it holds on fresh seeds. Killed and started
    again with the same --session, it continues with no run lost or run twice."""
    from airlab.agents.loop import run_auto
    from airlab.agents.team import Team
    from airlab.spec import slug

    if sprints is None and hours is None:
        raise AirlabError("auto needs a budget: --sprints N or --hours H",
                          "e.g. `airlab auto --sprints 3`")
    if slug(session, 60) != session:
        raise AirlabError(f"--session: '{session}' may use letters, digits, '_', '.', '-'",
                          f"e.g. --session {slug(session, 60)}")
    s = settings()
    store = open_store()
    model = _llm(llm, max_tokens, **_tuning(llm_temperature, llm_format, llm_cap, llm_timeout))
    t0 = time.perf_counter()
    try:
        with executor(workers, None, None) as ex:
            team = Team(store, s, ex, seed=seed, workers=workers,
                        reporter=_PhaseReporter(tensorboard, store),
                        options=_options(option), llm=model)
            out = run_auto(team, session=session, sprints=sprints, hours=hours,
                           tokens=tokens, minutes=minutes, topic=topic)
    finally:
        _close(model)
    console.print(f"auto session {session}: stopped ({out.stopped}) after "
                  f"{(time.perf_counter() - t0) / 60:.1f} min", highlight=False)
    _print_leaderboard(store, session)


def _ratio(d: dict[str, Any]) -> str:
    g = d.get("ratio")
    if g is None or not math.isfinite(g):
        return "-"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    return f"{g:.2f}x{ci}"


def _print_leaderboard(store: Any, session: str | None, as_json: bool = False) -> None:
    from airlab.agents.loop import leaderboard as board

    rows: list[dict[str, Any]] = [{"session": r.session, "recipe": r.name, "status": r.status,
             "use": list(r.recipe.use), "options": dict(r.recipe.options),
             "selection": r.selection, "confirmation": r.confirmation}
            for r in board(store, session)]
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console.print("no recipes yet: `airlab auto` builds them from ideas that won")
        return
    t = Table(title="leaderboard: time-to-target against the default configuration "
                    "(x faster, 95 % interval)")
    for c in ("recipe", "status", "switches", "selection", "seeds", "confirmation (fresh)",
              "seeds "):
        t.add_column(c, overflow="fold")  # long recipe names wrap: rows must stay apart
    for r in rows:
        sel, conf = r["selection"], r["confirmation"]
        flags = " ".join(f"--use_{u}" for u in r["use"])
        flags += "".join(f" --{k}={v}" for k, v in r["options"].items())
        t.add_row(r["recipe"].replace("+", " + "), r["status"], flags.strip(), _ratio(sel),
                  ",".join(map(str, sel.get("seeds", []))), _ratio(conf),
                  ",".join(map(str, conf.get("seeds", []))))
    console.print(t)


def leaderboard(
    session: str = typer.Option(None, "--session", help="One session (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Recipes the autonomous loop built, with their time-to-target against the default
    configuration on the selection seeds and on fresh confirmation seeds."""
    _print_leaderboard(open_store(readonly=True), session, as_json)
