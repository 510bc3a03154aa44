"""Commands that list what the lab has: datasets and techniques."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from airlab.cli.common import console, settings


def data() -> None:
    """List the datasets and where each comes from."""
    from airlab.data import describe_datasets

    s = settings()
    t = Table(title="datasets")
    rows = describe_datasets(data_dir=s.data_dir, cache_dir=s.cache_dir)
    for c in rows[0].keys() if rows else ("name",):
        t.add_column(str(c), overflow="fold")  # a long path wraps whole, never cut by "…"
    for r in rows:
        t.add_row(*[str(v) for v in r.values()])
    console.print(t)


techniques_app = typer.Typer(add_completion=False, invoke_without_command=True,
                             help="List the registered techniques (--use_<name> switches); "
                             "`airlab techniques check FILE.py` checks a technique file.")


@techniques_app.callback(invoke_without_command=True)
def techniques(ctx: typer.Context) -> None:
    """List the registered techniques (--use_<name> switches)."""
    if ctx.invoked_subcommand is not None:
        return
    from airlab.techniques import TECHNIQUES

    t = Table(title="techniques")
    for c in ("flag", "area", "workloads", "options", "what it does"):
        t.add_column(c)
    for name, tech in sorted(TECHNIQUES.items()):
        t.add_row(f"--use_{name}", tech.area, ", ".join(tech.workloads),
                  ", ".join(f"{k}={v}" for k, v in tech.params.items()), tech.help)
    console.print(t)


def check_technique(
    file: str = typer.Argument(..., help="A technique module (.py) to check."),
    unsafe_no_sandbox: bool = typer.Option(
        False, "--unsafe-no-sandbox",
        help="Run the file even where no sandbox (bubblewrap) is available. UNSAFE: the "
        "code then runs with only resource limits around it."),
) -> None:
    """Run the technique contract on FILE.py in the sandbox: import it, check the techniques
    it registers (typed options and ranges, no reserved fields, callable hooks) and train a
    micro model a few steps with each, then evaluate. Prints pass or the one-line reason and
    the protections in force. Exit 0 pass, 1 contract failure, 2 bad input."""
    from airlab.executors.sandboxed import check_technique_file

    s = settings()
    r = check_technique_file(Path(file), settings=s,
                             allow_unsafe=unsafe_no_sandbox or s.unsafe_no_sandbox)
    console.print("protections in force:", highlight=False)
    for line in r.protections.lines():
        console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
    if r.ok:
        shown = ", ".join(f"{name} ({', '.join(f'{k}={v:.4g}' for k, v in m.items())})"
                          for name, m in r.metrics.items()) or ", ".join(r.techniques)
        console.print(f"pass: {file}: {shown} [{r.seconds:.1f} s]", highlight=False,
                      markup=False, soft_wrap=True)
        raise typer.Exit(0)
    console.print(f"fail: {file}: {r.reason}", highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(1)


techniques_app.command("check", help=" ".join((check_technique.__doc__ or "").split()))(
    check_technique)
