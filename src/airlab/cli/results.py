"""Commands that read and judge stored results: show, status, verdict, export and decide."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from airlab.cli.common import (
    console,
    executor,
    open_store,
    print_finished,
    run_reporter,
    settings,
)
from airlab.errors import AirlabError


def show(name: str = typer.Argument(..., help="Experiment name."),
         runs: bool = typer.Option(False, "--runs", help="List every run too.")) -> None:
    """Reprint an experiment's result table from the store."""
    from airlab.analysis.compare import analyze
    from airlab.report.table import analysis_table

    store = open_store(readonly=True)
    exp = store.experiment(name)
    if exp is not None and exp["kind"] in ("train", "prerequisite"):
        runs = True  # a single run or a teacher: no arms to compare, list the runs
    else:
        a = analyze(store, name)
        console.print(analysis_table(a))
        cut = [f"{row.arm} {what}" for row in a.rows for what in row.incomplete_runs]
        if cut:  # runs a time box stopped: not in the statistics until run again
            console.print(f"{len(cut)} run(s) incomplete (left out of the statistics; "
                          f"`airlab run` finishes them): " + "; ".join(cut))
    if runs and exp is not None:
        rows = store.runs(exp["id"])
        mets = store.metrics([r["id"] for r in rows])
        t = Table(title=f"runs of {name}")
        for c in ("arm", "seed", "state", "attempts", "val_loss", "train s", "run key", "reason"):
            t.add_column(c)
        for r in rows:
            m = mets[r["id"]]
            t.add_row(r["arm"], str(r["seed"]), r["state"], str(r["attempts"]),
                      f"{m['val_loss']:.4f}" if m.get("val_loss") is not None else "—",
                      f"{m['train_seconds']:.1f}" if m.get("train_seconds") is not None else "—",
                      r["run_key"], r["reason"] or "")
        console.print(t)


def status() -> None:
    """The research tracker: experiments, ratings, velocity, best gains, roadmap checklist.

    Experiments by area and state, runs and failures, the rating distribution by band (from
    stored verdicts), experiments per day, the best speed-up, compression and energy saving
    with the experiment each comes from, and the roadmap's phase-1 checklist.
    """
    from airlab.report.tracker import print_status

    print_status(open_store(readonly=True), console)


def verdict(
    name: str = typer.Argument(None, help="Experiment name (omit with --all)."),
    all_: bool = typer.Option(False, "--all", help="Rate every experiment."),
    save: bool = typer.Option(True, "--save/--no-save", help="Store the verdict."),
    post: bool = typer.Option(True, "--post/--no-post",
                              help="Write the experiment folder (analysis.md ... post.md)."),
) -> None:
    """Rate an experiment 1-10 with the rubric (docs/rubric.md) and print the critique."""
    from airlab.experiment import finish_experiment

    store = open_store()
    if all_:
        names = [e["name"] for e in store.experiments(kind="experiment")]
    elif name:
        names = [name]
    else:
        raise AirlabError("give an experiment name or --all", "see `airlab status`")
    for n in names:
        done = finish_experiment(store, n, settings=settings(), save=save, write=post)
        print_finished(done.verdict, done.paths[0].parent if done.paths else None)


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

    folder = Path(out) if out else settings().home / "export"
    res = do_export(open_store(readonly=True), folder, tensorboard=tensorboard)
    console.print(f"report: {folder / 'report.html'} ({len(res.files)} files in {folder})",
                  highlight=False)
    for note in res.notes:
        console.print(note, highlight=False)


def _load(ref: str) -> Any:
    """A spec file, a built-in experiment, or the spec of a stored experiment."""
    from airlab.check import load_checked
    from airlab.spec import spec_from_dict

    try:
        return load_checked(ref, settings())
    except AirlabError:
        exp = open_store(readonly=True).experiment(ref)
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
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed runs again."),
) -> None:
    """Run until decisive: add seeds (42, 137, 256, 512, 1024, ...) while any arm is undecided.

    Looks happen at the spec's seed count, then every --step seeds, up to --max-seeds. The
    overall --alpha is spent over the looks (alpha x (n / n_max)^2 by the look at n seeds, Holm
    across the arms still undecided), so the chance of any false 'better', 'worse' or
    'equivalent' over all arms and looks is at most alpha. The state (looks done, alpha spent,
    decisions) is kept in the store: running decide again continues it and spends nothing
    twice. Equivalence is decided by two one-sided tests against the margin. Finished runs are
    reused.
    """
    decide_spec(_load(spec), max_seeds=max_seeds, step=step, alpha=alpha, workers=workers,
                threads=threads, timeout=timeout, retry_failed=retry_failed)


def decide_spec(s: Any, *, max_seeds: int, step: int, alpha: float, workers: int,
                threads: int | None, timeout: float | None, retry_failed: bool = False,
                tensorboard: str | None = None) -> None:
    """`airlab decide` on a loaded spec (also `airlab run --until-decisive`)."""
    from airlab.decide import planned_spending, run_until_decisive
    from airlab.experiment import finish_experiment
    from airlab.report.post import write_tracking
    from airlab.report.table import analysis_table

    store = open_store()
    home = settings().home
    schedule, alphas, total = planned_spending(store, s.name, len(s.seeds), max_seeds, step,
                                               alpha)
    console.print(f"{s.name}: looks at {', '.join(map(str, schedule))} seeds per arm; alpha "
                  f"{total:g} spent over them as {', '.join(f'{x:.2g}' for x in alphas)} "
                  f"(alpha x (n / {schedule[-1]})^2, less what earlier looks spent)",
                  highlight=False)

    def after_run(_run: dict[str, Any], _result: Any) -> None:
        write_tracking(store, s.name, home)

    def on_look(look: Any) -> None:
        shown = ", ".join(f"{a}: {d}" for a, d in look.decisions.items())
        console.print(f"look at n = {look.n} (alpha {look.alpha:.4g}): {shown}",
                      highlight=False)

    with executor(workers, timeout, threads) as ex:
        d = run_until_decisive(s, store, ex, settings=settings(), max_seeds=max_seeds,
                               step=step, alpha=alpha,
                               reporter=run_reporter(s.name, tensorboard, store),
                               retry_failed=retry_failed,
                               on_result=after_run, on_look=on_look)
    assert d.analysis is not None  # at least one look
    console.print(analysis_table(d.analysis))
    state = "decided" if d.decided else "still undecided at the seed cap"
    console.print(f"{s.name}: {state} after {len(d.looks)} look(s), {len(d.seeds)} seeds per "
                  f"arm ({', '.join(map(str, d.seeds))})", highlight=False)
    done = finish_experiment(store, s.name, settings=settings(), analysis=d.analysis)
    print_finished(done.verdict, done.paths[0].parent if done.paths else None)
