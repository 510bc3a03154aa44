"""CLI commands of the reporting side: status, verdict, export and decide.

Imported at the end of airlab.cli; the functions register on its Typer app at the bottom of
this module. Run the command line as ``airlab`` or ``python -m airlab``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table
from rich.text import Text

from airlab.errors import AirlabError

BAND_STYLE = {"publishable": "bold green", "good progress": "yellow", "needs work": "red"}


def _cli() -> Any:
    """The airlab.cli module (imported late: it imports this module at its end)."""
    import airlab.cli

    return airlab.cli


def _store() -> Any:
    return _cli()._store()


class _Console:
    """Forwards to the CLI's console (resolved at call time, after airlab.cli finished)."""

    def print(self, *args: Any, **kwargs: Any) -> None:
        _cli().console.print(*args, **kwargs)


console = _Console()


def lab_home() -> Path:
    from airlab.settings import get_settings

    state = _cli()._state
    return get_settings(db=state["db"], home=state["home"]).home


def _print_verdict(v: Any) -> None:
    console.print(Text.assemble((f"{v.experiment}: ", "bold"),
                                (f"{v.rating}/10 {v.band}", BAND_STYLE.get(v.band, "")),
                                f"  (best arm: {v.best_arm or '—'}, rubric {v.rubric_version})"))
    t = Table(title_justify="left")
    for c in ("component", "points", "checks"):
        t.add_column(c)
    for comp, b in v.breakdown.items():
        checks = ", ".join(f"{k}: {'yes' if x is True else 'no' if x is False else x}"
                           for k, x in (b.get("checks") or {}).items())
        t.add_row(comp, f"{b['points']}/{b['max']}", checks)
    console.print(t)
    for line in v.critique:
        console.print(f"  - {line}", highlight=False)


def status() -> None:
    """The research tracker: experiments, ratings, velocity, best gains, roadmap checklist.

    Experiments by area and state, runs and failures, the rating distribution by band (from
    stored verdicts), experiments per day, the best speed-up, compression and energy saving
    with the experiment each comes from, and the roadmap's phase-1 checklist.
    """
    from airlab.report.tracker import print_status

    print_status(_store(), _cli().console)


def verdict(
    name: str = typer.Argument(None, help="Experiment name (omit with --all)."),
    all_: bool = typer.Option(False, "--all", help="Rate every experiment."),
    save: bool = typer.Option(True, "--save/--no-save", help="Store the verdict."),
    post: bool = typer.Option(True, "--post/--no-post",
                              help="Write the experiment folder (analysis.md ... post.md)."),
) -> None:
    """Rate an experiment 1-10 with the rubric (docs/rubric.md) and print the critique."""
    from airlab.report.post import write_artifacts
    from airlab.validate import rate_experiment

    store = _store()
    if all_:
        names = [e["name"] for e in store.experiments(kind="experiment")]
    elif name:
        names = [name]
    else:
        raise AirlabError("give an experiment name or --all", "see `airlab status`")
    for n in names:
        v = rate_experiment(store, n, save=save)
        _print_verdict(v)
        if post:
            paths = write_artifacts(store, n, lab_home())
            console.print(f"  experiment folder: {paths[0].parent}", highlight=False)


def export(
    out: str = typer.Option(None, "--out", help="Output folder (default <home>/export)."),
    tensorboard: bool = typer.Option(False, "--tensorboard",
                                     help="Also write TensorBoard event files (needs the "
                                          "tensorboard package)."),
) -> None:
    """Write the publication report over every experiment.

    report.md, a self-contained report.html (plots embedded as PNG), LaTeX booktabs tables,
    runs.csv and runs.json with every run and metric; --tensorboard adds event files.
    """
    from airlab.report.export import export as do_export

    folder = Path(out) if out else lab_home() / "export"
    res = do_export(_store(), folder, tensorboard=tensorboard)
    console.print(f"report: {folder / 'report.html'} ({len(res.files)} files in {folder})",
                  highlight=False)
    for note in res.notes:
        console.print(note, highlight=False)


def _load(ref: str) -> Any:
    """A spec file, a built-in experiment, or the spec of a stored experiment."""
    from airlab.spec import load_spec, spec_from_dict

    try:
        return load_spec(ref)
    except AirlabError:
        exp = _store().experiment(ref)
        if exp is None or exp["kind"] != "experiment":
            raise
        return spec_from_dict(exp["spec"], f"stored experiment '{ref}'")


def decide(
    spec: str = typer.Argument(..., help="A spec file, built-in experiment or stored "
                                         "experiment name."),
    max_seeds: int = typer.Option(10, "--max-seeds", min=2, help="Most seeds per arm."),
    step: int = typer.Option(2, "--step", min=1, help="Seeds added per arm between looks."),
    alpha: float = typer.Option(0.05, "--alpha", min=1e-6, max=0.5,
                                help="Overall type-I error over all looks and arms."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Runs at a time."),
    threads: int = typer.Option(None, "--threads", min=1, help="Torch threads per worker."),
    timeout: float = typer.Option(None, "--timeout", min=1, help="Per-run time limit, s."),
) -> None:
    """Run until decisive: add seeds (42, 137, 256, 512, 1024, ...) while any arm is undecided.

    Looks happen at the spec's seed count, then every --step seeds, up to --max-seeds. The
    overall --alpha is split evenly over the planned looks (Bonferroni: alpha/K per look, Holm
    across arms within a look), so the chance of any false 'better', 'worse' or 'equivalent'
    over all arms and looks is at most alpha. Equivalence (two one-sided tests) is only
    decided when the spec sets a tolerance. Finished runs are reused.
    """
    decide_spec(_load(spec), max_seeds=max_seeds, step=step, alpha=alpha, workers=workers,
                threads=threads, timeout=timeout)


def decide_spec(s: Any, *, max_seeds: int, step: int, alpha: float, workers: int,
                threads: int | None, timeout: float | None) -> None:
    """`airlab decide` on a loaded spec (also `airlab run --until-decisive`)."""
    from airlab.analysis.compare import analyze
    from airlab.report.post import write_tracking
    from airlab.report.table import analysis_table
    from airlab.validate import look_schedule, run_until_decisive

    store = _store()
    home = lab_home()
    schedule = look_schedule(len(s.seeds), max_seeds, step)
    console.print(f"{s.name}: looks at {', '.join(map(str, schedule))} seeds per arm; "
                  f"alpha {alpha:g} split over {len(schedule)} looks = "
                  f"{alpha / len(schedule):.4g} each", highlight=False)

    def after_run(run: dict[str, Any], _result: Any) -> None:
        write_tracking(store, s.name, home)

    def on_look(look: Any) -> None:
        shown = ", ".join(f"{a}: {d}" for a, d in look.decisions.items())
        console.print(f"look at n = {look.n} (alpha {look.alpha:.4g}): {shown}",
                      highlight=False)

    cli = _cli()
    d = run_until_decisive(s, store, cli._executor(workers, timeout, threads),
                           max_seeds=max_seeds, step=step, alpha=alpha,
                           reporter=cli.RichReporter(s.name),
                           on_result=after_run, on_look=on_look)
    console.print(analysis_table(analyze(store, s.name)))
    state = "decided" if d.decided else "still undecided at the seed cap"
    console.print(f"{s.name}: {state} after {len(d.looks)} look(s), {len(d.seeds)} seeds per "
                  f"arm ({', '.join(map(str, d.seeds))})", highlight=False)
    finish_experiment(store, s.name, home)


def finish_experiment(store: Any, name: str, home: Path) -> None:
    """After runs: rate with the rubric (stored with its breakdown), write the folder's posts."""
    from airlab.report.post import write_artifacts
    from airlab.validate import rate_experiment

    _print_verdict(rate_experiment(store, name, save=True))
    paths = write_artifacts(store, name, home)
    console.print(f"experiment folder: {paths[0].parent}", highlight=False)


def _flow(doc: str | None) -> str:
    """Join a docstring's wrapped lines into paragraphs: Rich help keeps hard line breaks."""
    import inspect

    paras = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paras)


def _register(app: typer.Typer) -> None:
    for fn in (status, verdict, export, decide):
        app.command(help=_flow(fn.__doc__))(fn)


_register(sys.modules["airlab.cli"].app)  # airlab.cli is mid-import: take it from sys.modules
