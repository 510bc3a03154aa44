"""The `airlab` command: thin Typer commands over the library."""

from __future__ import annotations

import math
import re
import sys
import time
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from airlab.errors import AirlabError, did_you_mean

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="airlab: an automated AI research lab for cheaper training.")
# Outside a terminal (CI logs, pipes) Rich would wrap tables at 80 columns; give it room.
console = Console() if sys.stdout.isatty() else Console(width=160)
err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=200)
_state: dict[str, Any] = {"db": None, "home": None}


@app.callback()
def _global(
    db: str = typer.Option(None, "--db", help="SQLAlchemy URL of the store (env AIRLAB_DB)."),
    home: str = typer.Option(None, "--home", help="Lab folder (env AIRLAB_HOME; default .airlab)."),
) -> None:
    _state["db"], _state["home"] = db, home


def _store():  # type: ignore[no-untyped-def]
    from airlab.settings import get_settings
    from airlab.store import Store

    s = get_settings(db=_state["db"], home=_state["home"])
    return Store(s.db_url)


class RichReporter:
    """Progress bars: one for the experiment's runs, one per active run's budget."""

    def __init__(self, title: str) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.completed:.0f}/{task.total:.0f}"),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.title = title
        self.runs_task: TaskID | None = None
        self.active: dict[int, TaskID] = {}

    def start(self, total: int, done: int) -> None:
        self.progress.start()
        self.runs_task = self.progress.add_task(f"[bold]{self.title}[/] runs", total=total,
                                                completed=done,
                                                info=f"{done} reused" if done else "")

    def _label(self, run: dict[str, Any]) -> str:
        return f"  {run['arm']} seed {run['seed']}"

    def event(self, run: dict[str, Any], ev: dict[str, Any]) -> None:
        tid = self.active.get(run["id"])
        if tid is None:
            tid = self.progress.add_task(self._label(run), total=100, info="")
            self.active[run["id"]] = tid
        if ev.get("type") == "step":
            self.progress.update(tid, completed=100 * ev["progress"],
                                 info=f"step {ev['step']} loss {ev['loss']:.3f}")
        elif ev.get("type") == "eval":
            self.progress.update(tid, info=f"val_loss {ev['val_loss']:.4f}")

    def finished(self, run: dict[str, Any], result: Any) -> None:
        tid = self.active.pop(run["id"], None)
        if tid is not None:
            self.progress.remove_task(tid)
        msg = (f"val_loss {result.metrics.get('val_loss', math.nan):.4f}"
               if result.state == "finished" else f"[red]failed: {result.reason}[/]")
        self.progress.console.print(f"{self._label(run).strip()}: {msg}")
        if self.runs_task is not None:
            self.progress.advance(self.runs_task)

    def stop(self) -> None:
        self.progress.stop()


def _executor(workers: int, timeout: float | None, threads: int | None):  # type: ignore[no-untyped-def]
    from airlab.executors.local import LocalExecutor

    return LocalExecutor(workers, threads=threads, timeout_s=timeout)


@app.command()
def run(
    spec: str = typer.Argument(None, help="A spec YAML file or a built-in experiment name."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Runs at a time."),
    threads: int = typer.Option(None, "--threads", min=1,
                                help="Torch threads per worker (default: cores / workers)."),
    timeout: float = typer.Option(None, "--timeout", min=1, help="Per-run time limit, seconds."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Run failed runs again."),
    list_: bool = typer.Option(False, "--list", help="List the built-in experiments."),
    quick: bool = typer.Option(False, "--quick", help="Smoke test: the spec's quick_budget (else "
                               "a tenth of the budget), stored as NAME-quick."),
    until_decisive: bool = typer.Option(False, "--until-decisive", help="Add seeds while the "
                                        "answer is inconclusive (see `airlab decide`)."),
    max_seeds: int = typer.Option(10, "--max-seeds", min=2, help="Cap for --until-decisive."),
    fresh: bool = typer.Option(False, "--fresh", help="Archive the stored experiment (kept as "
                               "NAME.archived-TIME) and run every run again, e.g. after the "
                               "code changed."),
) -> None:
    """Run an experiment: arms x seeds, reusing finished runs; then print the result table."""
    from airlab.spec import library_specs, load_spec

    if list_:
        _list_library(library_specs())
        return
    if not spec:
        raise AirlabError("give a spec file or a built-in experiment name",
                          "see `airlab run --list`")
    s = load_spec(spec)  # before the heavy imports: a typo is reported at once
    if quick:
        s = quick_spec(s)
    if until_decisive:
        from airlab.report.commands import decide_spec

        decide_spec(s, max_seeds=max_seeds, step=2, alpha=0.05, workers=workers,
                    threads=threads, timeout=timeout)
        return

    from airlab.analysis.compare import analyze
    from airlab.experiment import run_experiment
    from airlab.report.commands import finish_experiment, lab_home
    from airlab.report.post import write_tracking
    from airlab.report.table import analysis_table

    store = _store()
    home = lab_home()
    if fresh:
        archived = store.archive_experiment(s.name)
        if archived:
            console.print(f"archived the stored {s.name} as {archived}")
    t0 = time.perf_counter()
    out = run_experiment(s, store, _executor(workers, timeout, threads),
                         reporter=RichReporter(s.name),
                         on_result=lambda run, res: write_tracking(store, s.name, home))
    console.print(f"{s.name}: {out.planned} runs planned, {out.reused} reused, {out.ran} run "
                  f"({out.failed} failed) in {time.perf_counter() - t0:.1f} s; store {store.url}")
    console.print(analysis_table(analyze(store, s.name)))
    finish_experiment(store, s.name, home)


def quick_spec(s: Any) -> Any:
    """The same experiment on a smoke-test budget, under its own name. A smoke test skips the
    learning-rate sweep (each arm keeps its own default value) and evaluates twice: it checks
    that everything runs, it does not compare tuned arms."""
    (unit, amount), = s.budget.items()
    budget = s.quick_budget or {unit: amount / 10}
    options = {**s.options, "eval_points": min(2, int(s.options.get("eval_points", 2)))}
    return s.model_copy(update={"name": f"{s.name}-quick", "budget": budget, "sweep": None,
                                "options": options})


def _list_library(lib: dict[str, Any]) -> None:
    import yaml

    t = Table(title="built-in experiments")
    for c in ("name", "area", "workload", "arms", "budget", "hypothesis"):
        t.add_column(c)
    seen = set()
    for name, path in lib.items():
        if path in seen:
            continue
        seen.add(path)
        d = yaml.safe_load(path.read_text())
        arms = ", ".join([d.get("baseline", {}).get("name", "baseline")]
                         + [a["name"] for a in d.get("arms", [])])
        budget = ", ".join(f"{k}={v:g}" for k, v in d.get("budget", {}).items())
        t.add_row(name, d.get("area", ""), d.get("workload", "charlm"), arms, budget,
                  d.get("hypothesis", "")[:70])
    console.print(t)


# -- train: one run with one flag per switch ---------------------------------------------------

_FLAG = re.compile(r"^--([A-Za-z][A-Za-z0-9_-]*)(?:=(.*))?$")


def _parse_value(s: str) -> Any:
    low = s.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


def parse_train_args(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Split `--use_X` switches and `--key value` options; errors name the flag."""
    from airlab.techniques import TECHNIQUES

    use: list[str] = []
    options: dict[str, Any] = {}
    i = 0
    while i < len(args):
        m = _FLAG.match(args[i])
        if not m:
            raise AirlabError(f"unexpected argument '{args[i]}'",
                              "switches are --use_<name>, options are --key value")
        key, inline = m.group(1).replace("-", "_"), m.group(2)
        if key.startswith("use_"):
            name = key[4:]
            if name not in TECHNIQUES:
                raise AirlabError(f"unknown flag --{key}",
                                  did_you_mean(f"--{key}", [f"--use_{t}" for t in TECHNIQUES]))
            use.append(name)
            i += 1
            continue
        if inline is None:
            if i + 1 >= len(args) or _FLAG.match(args[i + 1]):
                raise AirlabError(f"option --{key} needs a value", f"e.g. --{key} 0.001")
            inline = args[i + 1]
            i += 1
        options[key] = _parse_value(inline)
        i += 1
    return use, options


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(
    ctx: typer.Context,
    workload: str = typer.Argument("charlm", help="charlm or vision."),
    preset: str = typer.Option(None, "--preset", help="Model preset (charlm: tiny, small, "
                               "seed88m; vision: mlp, cnn)."),
    dataset: str = typer.Option(None, "--dataset", help="pycode, shakespeare, file:PATH; "
                                "digits, mnist, fashion-mnist."),
    tokens: float = typer.Option(None, "--tokens", help="Budget in tokens (text)."),
    samples: float = typer.Option(None, "--samples", help="Budget in samples (vision)."),
    epochs: float = typer.Option(None, "--epochs", help="Budget in epochs."),
    seconds: float = typer.Option(None, "--seconds", help="Budget in training seconds."),
    seed: int = typer.Option(42, "--seed"),
    timeout: float = typer.Option(None, "--timeout", min=1, help="Time limit, seconds."),
    threads: int = typer.Option(None, "--threads", min=1, help="Torch threads."),
) -> None:
    """Train one run. Switches: --use_<technique>; any config field: --<field> VALUE."""
    from airlab.experiment import run_experiment
    from airlab.plan import resolve
    from airlab.spec import Arm, ExperimentSpec

    use, options = parse_train_args(list(ctx.args))
    budget = {k: v for k, v in dict(tokens=tokens, samples=samples, epochs=epochs,
                                    seconds=seconds).items() if v is not None}
    if not budget:
        budget = {"tokens": 2e5} if workload == "charlm" else {"epochs": 5}
    if len(budget) > 1:
        raise AirlabError(f"give one budget, got {', '.join('--' + k for k in budget)}")
    cfg = resolve(workload=workload, preset=preset, dataset=dataset, budget=budget, seed=seed,
                  use=use, options=options)
    name = f"train-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.run_key[:6]}"
    spec = ExperimentSpec(name=name, hypothesis="single run (airlab train)", workload=workload,
                          preset=cfg.preset, dataset=cfg.dataset, budget=budget,
                          baseline=Arm(name="run", use=use, options=options), arms=[],
                          seeds=[seed], timeout_s=timeout, tolerance=0.0)
    store = _store()
    results: list[Any] = []
    run_experiment(spec, store, _executor(1, timeout, threads), reporter=RichReporter(name),
                   kind="train", on_result=lambda r, res: results.append(res))
    res = results[0]
    console.print(f"run: {name}")
    console.print(f"state: {res.state}")
    if res.reason:
        console.print(f"reason: {res.reason}")
    for k, v in res.metrics.items():
        console.print(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}")
    if res.state != "finished":
        raise typer.Exit(1)


@app.command()
def show(name: str = typer.Argument(..., help="Experiment name."),
         runs: bool = typer.Option(False, "--runs", help="List every run too.")) -> None:
    """Reprint an experiment's result table from the store."""
    from airlab.analysis.compare import analyze
    from airlab.report.table import analysis_table

    store = _store()
    exp = store.experiment(name)
    if exp is not None and exp["kind"] == "train":
        runs = True
    else:
        console.print(analysis_table(analyze(store, name)))
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


@app.command()
def data() -> None:
    """List the datasets and where each comes from."""
    from airlab.data import describe_datasets

    t = Table(title="datasets")
    rows = describe_datasets()
    for c in rows[0].keys() if rows else ("name",):
        t.add_column(str(c))
    for r in rows:
        t.add_row(*[str(v) for v in r.values()])
    console.print(t)


@app.command()
def techniques() -> None:
    """List the registered techniques (--use_<name> switches)."""
    from airlab.techniques import TECHNIQUES

    t = Table(title="techniques")
    for c in ("flag", "area", "workloads", "options", "what it does"):
        t.add_column(c)
    for name, tech in sorted(TECHNIQUES.items()):
        t.add_row(f"--use_{name}", tech.area, ", ".join(tech.workloads),
                  ", ".join(f"{k}={v}" for k, v in tech.params.items()), tech.help)
    console.print(t)


from airlab.report import commands as _report_commands  # noqa: E402,F401


def main() -> None:
    """Entry point: user errors print one line, never a traceback."""
    try:
        rc = app(standalone_mode=False)  # returns the code of a typer.Exit
    except AirlabError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished runs are stored, `airlab run` resumes")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as e:  # click usage errors carry their own message
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # prefer `python -m airlab`
    main()
