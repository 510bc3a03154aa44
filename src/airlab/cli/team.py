"""The research team's commands: `sprint` (one cycle), `auto` (the loop), `leaderboard`.

Thin wrappers over airlab.agents.team (a sprint) and airlab.agents.loop (`auto`); each phase
prints one line as it ends, the runs show the same progress bars as `airlab run`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
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


SPEC = typer.Option(None, "--spec", help="A base experiment (YAML: workload, preset or model "
                   "fields as options, dataset including file:PATH, budget, options, seeds): "
                   "its configuration is the default every ratio is measured against.")
WORKLOAD = typer.Option(None, "--workload", help="charlm or vision (default charlm; replaces "
                        "the --spec file's).")
PRESET = typer.Option(None, "--preset", help="The model preset (charlm: tiny, small, seed88m; "
                      "vision: mlp, cnn).")
DATASET = typer.Option(None, "--dataset", help="pycode (the default: embedded, offline), "
                       "pydoc, shakespeare, file:PATH; vision: digits, mnist, cifar10.")
SAMPLES = typer.Option(None, "--samples", min=100, help="Budget per run in images (vision).")
IDEAS = typer.Option(None, "--ideas", help="A folder of your own ideas files (the knowledge "
                     "base's schema) beside <home>/ideas/; repeat for more.")


def _base(spec: str | None, workload: str | None, preset: str | None, dataset: str | None,
          tokens: float | None, samples: float | None, option: list[str] | None) -> Any:
    """The base experiment from --spec and the short forms (``agents.task``)."""
    from airlab.agents.task import base_experiment

    if tokens is not None and samples is not None:
        raise AirlabError("--tokens and --samples: give one budget",
                          "--tokens for charlm, --samples for vision")
    budget = {"tokens": tokens} if tokens is not None else \
        {"samples": samples} if samples is not None else None
    return base_experiment(spec, workload=workload, preset=preset, dataset=dataset,
                           budget=budget, options=_options(option), settings=settings())


def _lab_ideas(folders: list[str] | None, *, model: bool = True) -> tuple[Any, Any]:
    from airlab.cli.ideas import lab_ideas

    return lab_ideas(folders, model=model)


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
    samples: float = SAMPLES,
    spec: str = SPEC,
    workload: str = WORKLOAD,
    preset: str = PRESET,
    dataset: str = DATASET,
    ideas_dirs: list[str] = IDEAS,
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
    inside a time box, with the team's reasoning written beside the experiment's post. It
    studies charlm tiny on the embedded pycode corpus unless --spec or --workload, --preset,
    --dataset name another problem."""
    from airlab.agents.team import SPRINT_SESSION, Team
    from airlab.store import team as team_store

    if list_:
        _list_sprints(team_store.list_sprints(open_store(readonly=True)))
        return
    s = settings()
    base = _base(spec, workload, preset, dataset, tokens, samples, option)
    known, sources = _lab_ideas(ideas_dirs, model=not replay)
    store = open_store()
    model = None if replay else _llm(llm, max_tokens, **_tuning(
        llm_temperature, llm_format, llm_cap, llm_timeout))
    if idea is not None or area is not None:
        _check_idea_args(idea, area, coder=model is not None, ideas=known)
    if replay:
        _replay(store, s, replay, workers, known, tensorboard)
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
                        options=base.options, llm=model, task=base.task, ideas=known,
                        sources=sources)
            out = team.sprint(session=session, number=number, minutes=minutes, idea=idea,
                              area=area, topic=topic, review=review, tokens=base.amount,
                              seeds=base.seeds)
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


def _replay(store: Any, s: Any, ref: str, workers: int, known: Any,
            tensorboard: str | None = None) -> None:
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
                    options=team0.get("options") or {}, llm=backend, task=q.task, ideas=known)
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


def _check_idea_args(idea: str | None, area: str | None, coder: bool = False,
                     ideas: Any = None) -> None:
    """``coder``: a language model is configured, so its Coder writes what an idea needs."""
    from airlab.agents.knowledge import load_ideas
    from airlab.errors import did_you_mean

    ideas = ideas if ideas is not None else load_ideas()
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
    tokens: float = typer.Option(None, "--tokens", min=1000, help="Every sprint's budget "
                                 "(one budget, so baselines are shared and ratios compare; "
                                 "default 400,000)."),
    samples: float = SAMPLES,
    spec: str = SPEC,
    workload: str = WORKLOAD,
    preset: str = PRESET,
    dataset: str = DATASET,
    transfer: str = typer.Option(None, "--transfer", help="The dataset a recipe is measured "
                                 "on besides its own (default: another embedded one; none: "
                                 "skip)."),
    researcher: str = typer.Option(None, "--researcher", help="team (the default) or random: "
                                   "flat random search over the same ideas and ranges, the "
                                   "control."),
    ideas_dirs: list[str] = IDEAS,
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
    """The autonomous loop: sprint after sprint; winners are stacked (each part ablated out),
    a recipe replaces the current one only after it holds on fresh seeds beside it, and is
    measured at 4x the budget and on another dataset before it is called the session's best.
    Killed and started again with the same --session, it continues with no run lost or run
    twice."""
    from airlab.agents.loop import SELECTION_SEEDS, run_auto
    from airlab.agents.team import Team
    from airlab.spec import slug

    if sprints is None and hours is None:
        raise AirlabError("auto needs a budget: --sprints N or --hours H",
                          "e.g. `airlab auto --sprints 3`")
    if slug(session, 60) != session:
        raise AirlabError(f"--session: '{session}' may use letters, digits, '_', '.', '-'",
                          f"e.g. --session {slug(session, 60)}")
    s = settings()
    base = _base(spec, workload, preset, dataset, tokens, samples, option)
    known, sources = _lab_ideas(ideas_dirs)
    store = open_store()
    researcher, where = _session_choices(store, session, base, researcher, transfer)
    model = _llm(llm, max_tokens, **_tuning(llm_temperature, llm_format, llm_cap, llm_timeout))
    t0 = time.perf_counter()
    try:
        with executor(workers, None, None) as ex:
            team = Team(store, s, ex, seed=seed, workers=workers,
                        reporter=_PhaseReporter(tensorboard, store),
                        options=base.options, llm=model, task=base.task, ideas=known,
                        sources=sources, researcher=researcher)
            out = run_auto(team, session=session, sprints=sprints, hours=hours,
                           tokens=base.amount, minutes=minutes, topic=topic,
                           seeds=base.seeds or SELECTION_SEEDS, transfer=where)
    finally:
        _close(model)
    console.print(f"auto session {session}: stopped ({out.stopped}) after "
                  f"{(time.perf_counter() - t0) / 60:.1f} min", highlight=False)
    _print_leaderboard(store, session)


def _session_choices(store: Any, session: str, base: Any, researcher: str | None,
                     transfer: str | None) -> tuple[str, str | None]:
    """The Researcher strategy and transfer dataset of a session: a new session takes the
    ones given (or the defaults); a started one keeps its own, and refuses different ones in
    one line (its runs and decisions were made with them)."""
    from airlab.agents.loop import session_setup
    from airlab.agents.task import check_transfer
    from airlab.store.records import Task

    setup = session_setup(store, session)
    if setup is not None:
        stored = Task.from_json(setup.get("task"))
        if base.source != "default" and base.task != stored:
            raise AirlabError(f"--session {session} studies {stored.label()}, not "
                              f"{base.task.label()}", "leave out --spec/--dataset to continue "
                              "it, or start a new --session")
        had = str(setup.get("researcher") or "team")
        if researcher is not None and researcher != had:
            raise AirlabError(f"--researcher: session {session} was started with the {had} "
                              "researcher", "leave --researcher out, or start a new --session")
        return had, setup.get("transfer", "auto")
    researcher = researcher or "team"
    if researcher != "team":
        from airlab.agents.control import RESEARCHERS
        from airlab.errors import did_you_mean

        if researcher not in RESEARCHERS:
            raise AirlabError(f"--researcher: unknown strategy '{researcher}'",
                              did_you_mean(researcher, ["team", *RESEARCHERS]))
    if transfer is None:
        return researcher, "auto"
    if transfer.lower() == "none":
        return researcher, None
    return researcher, check_transfer(transfer, base.task, settings())


def _ratio(d: dict[str, Any] | None) -> str:
    """'8.67x [7.96, 9.45]' and, below it, the seed pairs that reached the target."""
    if not d:
        return "-"
    if d.get("error"):
        return f"failed: {d['error']}"[:120]
    if d.get("incomplete"):
        return f"not measured: {d['incomplete']}"
    g = d.get("ratio")
    if g is None or not math.isfinite(g):
        return "no time-to-target"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    ci = f" [{lo:.2f}, {hi:.2f}]" if lo is not None and hi is not None else ""
    seeds = d.get("seeds") or []
    where = f", seeds {seeds[0]}-{seeds[-1]}" if len(seeds) > 1 else ""
    return f"{g:.2f}x{ci}\n{d.get('reached', 0)}/{d.get('n', 0)} pairs{where}"


def _board_rows(store: Any, session: str | None) -> list[dict[str, Any]]:
    from airlab.agents.loop import best_recipe
    from airlab.agents.loop import leaderboard as board

    rows = board(store, session)
    best = {(b.session, b.name) for s in {r.session for r in rows}
            if (b := best_recipe([r for r in rows if r.session == s])) is not None}
    return [{"session": r.session, "recipe": r.name, "status": r.status,
             "best": (r.session, r.name) in best, "use": list(r.recipe.use),
             "options": dict(r.recipe.options), "selection": r.selection,
             "confirmation": {k: v for k, v in r.confirmation.items()
                              if k not in ("transfer", "versus", "holds")},
             "versus": r.confirmation.get("versus"),
             "transfer": r.confirmation.get("transfer") or {},
             "holds": r.confirmation.get("holds") or ""} for r in rows]


def _print_leaderboard(store: Any, session: str | None, as_json: bool = False) -> None:
    rows = _board_rows(store, session)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    if not rows:
        console.print("no recipes yet: `airlab auto` builds them from ideas that won")
        return
    t = Table(title="leaderboard: time-to-target against the default configuration "
                    "(x faster, 95 % interval; seed pairs that reached the target)")
    for c in ("recipe", "status", "switches", "selection", "confirmation (fresh)",
              "vs current (paired)", "4x budget", "other dataset", "holds"):
        t.add_column(c, overflow="fold")  # long recipe names wrap: rows must stay apart
    for r in rows:
        flags = " ".join(f"--use_{u}" for u in r["use"])
        flags += "".join(f" --{k}={v}" for k, v in r["options"].items())
        tr = r["transfer"]
        status = r["status"] + (", best" if r["best"] else "")
        if r["status"] == "confirmed" and not r["holds"]:
            status += "\n(transfer not measured yet)"
        t.add_row(r["recipe"].replace("+", " + "), status, flags.strip(),
                  _ratio(r["selection"]), _ratio(r["confirmation"]), _ratio(r["versus"]),
                  _with_label(tr.get("budget")), _with_label(tr.get("dataset")),
                  r["holds"] or "-")
    console.print(t)


def _with_label(d: dict[str, Any] | None) -> str:
    return "-" if not d else f"{d.get('label', '')}:\n{_ratio(d)}"


def _session_ref(ref: str) -> tuple[Any, str, str]:
    """SESSION or SESSION@LAB (a lab folder, or a database URL): (store, session, label)."""
    from airlab.cli.common import open_store
    from airlab.settings import get_settings
    from airlab.store import Store
    from airlab.store import team as team_store

    session, at, where = ref.partition("@")
    if not session:
        raise AirlabError(f"--compare: '{ref}' names no session",
                          "give SESSION or SESSION@LAB_FOLDER, e.g. team@runs/pycode-team")
    if not at:
        store = open_store(readonly=True)
    elif "://" in where:
        store = Store(where)
    else:
        home = Path(where).expanduser()
        if not home.is_dir():
            raise AirlabError(f"--compare: no lab folder '{where}'",
                              "give the --home the session ran with")
        store = Store(get_settings(home=str(home)).db_url)
    if team_store.get_session(store, session) is None:
        known = [str(r["name"]) for r in team_store.list_sessions(store)]
        from airlab.errors import did_you_mean

        raise AirlabError(f"--compare: no session '{session}' in {store.url}",
                          did_you_mean(session, known))
    return store, session, ref


def _compare(refs: list[str], out: str | None) -> None:
    from airlab.agents.loop import leaderboard as board
    from airlab.report.sessions import compare_md, compare_png, ratio_text, session_curve

    if len(refs) != 2:
        raise AirlabError(f"--compare takes two sessions, got {len(refs)}",
                          "e.g. --compare team control, or --compare team@runs/a control@runs/b")
    curves = []
    for ref in refs:
        store, session, label = _session_ref(ref)
        curves.append(session_curve(store, session, label=label, rows=board(store, session)))
    t = Table(title="best confirmed ratio (x faster to the default's quality) against sprint "
                    "hours")
    for col in ("session", "researcher", "task", "sprints", "hours", "best confirmed",
                "recipe", "holds"):
        t.add_column(col, overflow="fold")
    for c in curves:
        b = c.best_at(c.hours)
        t.add_row(c.label, c.researcher, c.task, str(c.sprints), f"{c.hours:.2f}",
                  ratio_text(b), b.recipe if b else "-", (b.holds if b else "") or "-")
    console.print(t)
    console.print(compare_md(curves).split("\n\n", 1)[1], highlight=False)
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "compare.png").write_bytes(compare_png(curves))
        (folder / "compare.md").write_text(
            "# Sessions compared\n\n![best confirmed ratio against sprint hours]"
            "(compare.png)\n\n" + compare_md(curves))
        console.print(f"written {folder / 'compare.md'} and {folder / 'compare.png'}")


def leaderboard(
    session: str = typer.Option(None, "--session", help="One session (default: all)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    compare: tuple[str, str] | None = typer.Option(  # noqa: B008 - typer reads the default
        None, "--compare", help="Two sessions, each SESSION or SESSION@LAB_FOLDER "
        "(--compare A B): their best confirmed ratio against sprint hours."),
    out: str = typer.Option(None, "--out", help="With --compare: write compare.md and "
                            "compare.png (the plot) into this folder."),
) -> None:
    """Recipes the autonomous loop built, with their time-to-target against the default
    configuration on the selection seeds, on fresh confirmation seeds (and paired against the
    recipe they replaced), at 4x the budget and on another dataset, and where each holds."""
    if compare:
        _compare(list(compare), out)
        return
    if out:
        raise AirlabError("--out goes with --compare", "e.g. --compare a b --out cmp/")
    _print_leaderboard(open_store(readonly=True), session, as_json)
