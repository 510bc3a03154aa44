"""`airlab dashboard`: the lab's live, read-only web page (see airlab.dashboard)."""

from __future__ import annotations

import dataclasses

import typer

from airlab.cli.common import console, err_console, set_settings, settings


def dashboard(
    port: int = typer.Option(8765, "--port", "-p", min=0, max=65535, help="Port to listen on "
                             "(0: any free port; the URL is printed)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. The default "
                             "serves this machine only; any other address shows the lab to "
                             "whoever can reach it (a warning is printed)."),
    poll: float = typer.Option(2.0, "--poll", min=0.2, max=600, help="Seconds between the "
                               "page's updates."),
    db: str = typer.Option(None, "--db", help="SQLAlchemy URL of the store (as the global "
                           "--db; env AIRLAB_DB)."),
) -> None:
    """A local web page over the store that updates itself while the lab works: experiments,
    live curves per arm and seed with the time-to-target line, each run's progress, results
    and verdicts, and the team (sprint, leaderboard, ideas, predictions, Optuna studies).
    Read-only; Ctrl-C stops it."""
    from airlab.dashboard import check_parts, is_loopback, open_socket, serve
    from airlab.store.store import _safe

    check_parts()
    if db:
        set_settings(dataclasses.replace(settings(), db_url=db))
    url = settings().db_url
    wide = not is_loopback(host)
    sock = open_socket(host, port)  # a bad --host or a busy --port: one line, before anything
    if wide:
        err_console.print(f"[bold yellow]warning:[/] --host {host} shows the lab (every "
                          "experiment, run and idea; no login) to every machine that can "
                          "reach this one; the default 127.0.0.1 serves this machine only",
                          highlight=False, soft_wrap=True)

    def ready(page: str) -> None:
        console.print(f"airlab dashboard: {page} (read-only view of {_safe(url)}); Ctrl-C "
                      "stops it", highlight=False, soft_wrap=True)

    try:
        serve(url, sock, poll_s=poll, wide=wide, on_ready=ready)
    except KeyboardInterrupt:  # uvicorn shuts down on Ctrl-C, then passes the signal on
        pass
    console.print("airlab dashboard stopped", highlight=False)


__all__ = ["dashboard"]
