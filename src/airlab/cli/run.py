"""Commands that train: `run` (an experiment), `train` (one run) and `check` (plan, no training).

Thin wrappers: the pipeline is airlab.experiment; heavy imports happen inside the commands.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from airlab.cli.common import (
    TENSORBOARD_HELP,
    RichReporter,
    console,
    executor,
    open_store,
    print_error,
    print_finished,
    run_reporter,
    settings,
)
from airlab.errors import AirlabError, did_you_mean


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
    executor_kind: str = typer.Option("local", "--executor", help="local (process pool) or "
                                      "ray (install airlab[ray])."),
    ray_address: str = typer.Option(None, "--ray-address", help="With --executor ray: auto "
                                    "(this machine's cluster) or ADDRESS; default a local Ray."),
    enqueue: bool = typer.Option(False, "--enqueue", help="Plan and store the runs without "
                                 "executing them; `airlab worker` processes run them."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:N, mps or auto (this "
                               "machine's best); part of each run's key."),
    tensorboard: str = typer.Option(None, "--tensorboard", metavar="DIR",
                                    help=TENSORBOARD_HELP),
) -> None:
    """Run an experiment: arms x seeds, reusing finished runs; then print the result table."""
    from airlab.spec import library_specs

    if list_:
        _list_library(library_specs())
        return
    if not spec:
        raise AirlabError("give a spec file or a built-in experiment name",
                          "see `airlab run --list`")
    from airlab.check import load_checked

    s = load_checked(spec, settings())  # every problem with file:line, before any run
    if quick:
        s = quick_spec(s)
    from airlab.cli.worker import make_executor, with_device

    s = with_device(s, device)  # auto resolved here, before any run key is computed
    if enqueue:
        if tensorboard:
            raise AirlabError("--tensorboard writes the runs this command trains; with "
                              "--enqueue it trains none", "drop one of the two")
        _enqueue(s, retry_failed=retry_failed, fresh=fresh)
        return
    if tensorboard:
        from airlab.report.tensorboard import summary_writer_class

        summary_writer_class()  # not installed: one line now, before any run
    if executor_kind == "local":  # the spec is good: start the workers' imports now
        from airlab.executors.local import warm_up

        warm_up()
    if until_decisive:
        from airlab.cli.results import decide_spec

        decide_spec(s, max_seeds=max_seeds, step=2, alpha=0.05, workers=workers,
                    threads=threads, timeout=timeout, retry_failed=retry_failed,
                    tensorboard=tensorboard)
        return

    from airlab.experiment import run_experiment
    from airlab.report.table import analysis_table

    store = open_store()
    if fresh:
        archived = store.archive_experiment(s.name)
        if archived:
            console.print(f"archived the stored {s.name} as {archived}")
    t0 = time.perf_counter()
    with make_executor(executor_kind, workers, timeout, threads, ray_address=ray_address) as ex:
        out = run_experiment(s, store, ex, settings=settings(),
                             reporter=run_reporter(s.name, tensorboard, store),
                             retry_failed=retry_failed)
    pre = out.prerequisites
    if pre is not None:
        mets = store.metrics([r["id"] for r in pre.rows])
        secs = sum(m.get("train_seconds") or 0.0 for m in mets.values())
        console.print(f"{s.name}: prerequisites (teacher runs) stored as {s.name}.teacher: "
                      f"{pre.planned} runs, {pre.failed} failed, {secs:.1f} s of training "
                      "that the arms using them also cost", highlight=False)
    console.print(f"{s.name}: {out.planned} runs planned, {out.reused} reused, {out.ran} run "
                  f"({out.failed} failed) in {time.perf_counter() - t0:.1f} s; store {store.url}")
    assert out.analysis is not None and out.verdict is not None  # rated: kind "experiment"
    console.print(analysis_table(out.analysis))
    print_finished(out.verdict, out.folder)


def _enqueue(s: Any, *, retry_failed: bool, fresh: bool) -> None:
    """`run --enqueue`: store the plan for `airlab worker` processes; execute nothing."""
    from airlab.experiment import enqueue

    store = open_store()
    if fresh and store.archive_experiment(s.name):
        console.print(f"archived the stored {s.name}")
    _, counts = enqueue(s, store, settings=settings(), retry_failed=retry_failed)
    states = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    console.print(f"{s.name}: {sum(counts.values())} runs stored ({states}) in {store.url}; "
                  f"start workers with: airlab --db URL worker", highlight=False)


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


def check(spec: str = typer.Argument(..., help="A spec YAML file or a built-in experiment name."),
          ) -> None:
    """Check a spec without training: validate it, then print its plan (arms x seeds, each arm's
    resolved config, the budget in the workload's units, the estimated time).

    Exit 0 when valid, 2 with one line per problem otherwise.
    """
    from airlab.check import check_file, plan_summary

    s, problems = check_file(spec, settings())
    if problems or s is None:
        for p in problems:
            print_error(p)
        raise typer.Exit(2)
    # Throughput is measured from the store when there is one; a check never creates it.
    summary = plan_summary(s, store=open_store(readonly=True) if _store_exists() else None,
                           settings=settings())
    for line in summary.lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _store_exists() -> bool:
    url = settings().db_url
    if not url.startswith("sqlite"):
        return True  # a server: reading it creates nothing
    path = url.split(":///", 1)[-1]
    return bool(path) and path != ":memory:" and Path(path).is_file()


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


def train(
    ctx: typer.Context,
    workload: str = typer.Argument("charlm", help="charlm or vision."),
    preset: str = typer.Option(None, "--preset", help="Model preset (charlm: tiny, small, "
                               "seed88m; vision: mlp, cnn)."),
    dataset: str = typer.Option(None, "--dataset", help="pycode, shakespeare, file:PATH; "
                                "digits, mnist, fashion-mnist, cifar10."),
    tokens: float = typer.Option(None, "--tokens", help="Budget in tokens (text)."),
    samples: float = typer.Option(None, "--samples", help="Budget in samples (vision)."),
    epochs: float = typer.Option(None, "--epochs", help="Budget in epochs."),
    seconds: float = typer.Option(None, "--seconds", help="Budget in training seconds."),
    seed: int = typer.Option(42, "--seed"),
    timeout: float = typer.Option(None, "--timeout", min=1, help="Time limit, seconds."),
    threads: int = typer.Option(None, "--threads", min=1, help="Torch threads."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:N, mps or auto (this "
                               "machine's best); part of the run's key."),
) -> None:
    """Train one run. Switches: --use_<technique>; any config field: --<field> VALUE."""
    from airlab.experiment import run_experiment
    from airlab.plan import resolve
    from airlab.spec import Arm, ExperimentSpec

    use, options = parse_train_args(list(ctx.args))
    if device is not None:
        from airlab.cli.worker import concrete_device

        options["device"] = concrete_device(device)  # before the run key is computed
    budget = {k: v for k, v in dict(tokens=tokens, samples=samples, epochs=epochs,
                                    seconds=seconds).items() if v is not None}
    if not budget:
        budget = {"tokens": 2e5} if workload == "charlm" else {"epochs": 5}
    if len(budget) > 1:
        raise AirlabError(f"give one budget, got {', '.join('--' + k for k in budget)}")
    cfg = resolve(workload=workload, preset=preset, dataset=dataset, budget=budget, seed=seed,
                  use=use, options=options, settings=settings())
    from airlab.executors.local import warm_up

    warm_up()  # the run is valid: its worker's imports overlap with opening the store
    name = f"train-{time.strftime('%Y%m%d-%H%M%S')}-{cfg.run_key[:6]}"
    spec = ExperimentSpec(name=name, hypothesis="single run (airlab train)", workload=workload,
                          preset=cfg.preset, dataset=cfg.dataset, budget=budget,
                          options=options, baseline=Arm(name="run", use=use), arms=[],
                          seeds=[seed], timeout_s=timeout, tolerance=0.0)
    results: list[Any] = []
    with executor(1, timeout, threads) as ex:
        run_experiment(spec, open_store(), ex, settings=settings(), reporter=RichReporter(name),
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
