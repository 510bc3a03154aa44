"""`airlab calibrate`: measure a workload's noise floor (A/A on disjoint seeds), run controls."""

from __future__ import annotations

import typer

from airlab.cli.common import RichReporter, console, executor, open_store, settings
from airlab.errors import AirlabError


def calibrate(
    spec: str = typer.Argument("demo", help="A spec file, built-in experiment or stored "
                                            "experiment whose baseline is calibrated."),
    # 5 = airlab.calibrate.DEFAULT_SEEDS, not imported: the CLI loads the pipeline lazily.
    seeds: int = typer.Option(5, "--seeds", min=2,
                              help="Seeds per set (runs: 2 x this)."),
    controls: bool = typer.Option(False, "--controls", help="Also run the library's positive "
                                  "and null controls and say PASS or FAIL for each."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Runs at a time."),
    threads: int = typer.Option(None, "--threads", min=1, help="Torch threads per worker."),
    timeout: float = typer.Option(None, "--timeout", min=1, help="Per-run time limit, s."),
) -> None:
    """Measure the noise floor: the spec's baseline on two disjoint seed sets (A/A).

    The floor (one run's sd of every metric) is stored for the baseline's workload, preset,
    dataset and budget; experiments on the same setup then take their equivalence margin
    (1 sd at its lower 80% bound), MDE and time-to-target slack from it, and the report shows
    it. --controls runs controls_positive (a learning rate 30x too high must come out worse)
    and controls_null (dynamic int8 of a tiny model must come out equivalent) and prints
    expected vs observed.
    """
    from airlab.calibrate import calibrate as run_calibration
    from airlab.calibrate import describe_floor, run_controls
    from airlab.cli.results import _load

    s = _load(spec)
    store = open_store()
    with executor(workers, timeout, threads) as ex:
        c = run_calibration(s, store, ex, seeds=seeds, settings=settings(),
                            reporter=RichReporter(f"{s.name}.calibrate"))
        for line in describe_floor(c):
            console.print(line, highlight=False)
        if not c.floors:
            raise AirlabError(f"calibration of '{s.name}' measured no noise floor",
                              "at least 2 finished runs per seed set are needed")
        if not controls:
            return
        results = run_controls(store, ex, settings=settings(),
                               reporter=RichReporter("controls"))
    failed = 0
    for r in results:
        mark = "[green]PASS[/]" if r.passed else "[bold red]FAIL[/]"
        failed += not r.passed
        console.print(f"{mark} {r.control} / {r.arm}: expected {r.expected}, observed "
                      f"{r.observed} ({r.detail})", highlight=False)
    if failed:
        console.print(f"{failed} control(s) failed: the lab does not detect what it should; "
                      "check the noise floor, the margin and the controls' budgets",
                      highlight=False)
        raise typer.Exit(1)
