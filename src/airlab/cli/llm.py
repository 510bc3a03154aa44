"""`airlab llm check`: is the configured language model usable by the team?"""

from __future__ import annotations

import json

import typer
from rich.table import Table

from airlab.cli.common import console
from airlab.cli.team import CAP, FORMAT, TEMPERATURE, TIMEOUT, _tuning
from airlab.errors import AirlabError

app = typer.Typer(help="The language model the team asks (AIRLAB_LLM_*; see docs/llm.md).",
                  no_args_is_help=True)

ROLES = ("researcher", "architect", "coder", "validator")


@app.command("check", help="Send one tiny request per role (its real prompt and answer "
             "schema, no repair round); report the latency and whether the answer passed.")
def check(
    role: list[str] = typer.Option(  # noqa: B008 - typer reads the default, once
        None, "--role", help="Check only this role (repeat for more)."),
    temperature: float = TEMPERATURE,
    fmt: str = FORMAT,
    cap: int = CAP,
    timeout: float = TIMEOUT,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    from airlab.agents.llm import LLMSettings
    from airlab.agents.model.check import check_roles

    unknown = [r for r in role or [] if r not in ROLES]
    if unknown:
        raise AirlabError(f"--role: unknown role '{unknown[0]}'", f"one of {', '.join(ROLES)}")
    s = LLMSettings.from_env(**_tuning(temperature, fmt, cap, timeout))
    if s is None:
        raise AirlabError("llm check: no language model is configured",
                          "set AIRLAB_LLM_BASE_URL and AIRLAB_LLM_MODEL (see docs/llm.md)")
    got = check_roles(s, tuple(role) if role else None)
    if as_json:
        print(json.dumps([r.__dict__ for r in got], indent=2))
        return
    t = Table(title=f"{s.model} at {s.base_url}: temperature {s.temperature:g}, "
                    f"{s.response_format}, timeout {s.timeout_s:g} s")
    for c in ("role", "schema", "latency", "completion tokens", "cap", "why not"):
        t.add_column(c, overflow="fold")
    for r in got:
        t.add_row(r.role, "passed" if r.passed else "failed", f"{r.latency_s:.1f} s",
                  str(r.completion_tokens), str(r.cap), r.error)
    console.print(t)
