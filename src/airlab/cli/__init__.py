"""The `airlab` command: thin Typer commands over the library, one module per command group.

``run.py`` (run, train, check), ``results.py`` (show, status, verdict, export, decide) and
``catalog.py`` (data, techniques) hold plain functions; they are registered here, on one app,
so nothing imports this package back. The global options are resolved into Settings once.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from airlab.cli import calibrate as calibrate_group
from airlab.cli import catalog, results
from airlab.cli import dashboard as dashboard_group
from airlab.cli import ideas as ideas_group
from airlab.cli import llm as llm_group
from airlab.cli import run as run_group
from airlab.cli import team as team_group
from airlab.cli import worker as worker_group
from airlab.cli.common import console, err_console, print_error, set_settings
from airlab.cli.run import parse_train_args, quick_spec
from airlab.errors import AirlabError

__all__ = ["app", "console", "main", "parse_train_args", "quick_spec"]

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="airlab: an automated AI research lab for cheaper training.")


@app.callback()
def _global(
    db: str = typer.Option(None, "--db", help="SQLAlchemy URL of the store (env AIRLAB_DB)."),
    home: str = typer.Option(None, "--home", help="Lab folder (env AIRLAB_HOME; default .airlab)."),
    data_dir: str = typer.Option(None, "--data-dir", help="Folder with local copies of the "
                                 "datasets (env AIRLAB_DATA_DIR)."),
    unsafe: bool = typer.Option(False, "--unsafe-no-sandbox", help="Run generated technique "
                                "code even where no sandbox isolation exists (resource limits "
                                "only); env AIRLAB_UNSAFE_NO_SANDBOX=1."),
) -> None:
    from airlab.settings import get_settings

    s = get_settings(db=db, home=home)  # the one place settings are read
    if data_dir:
        s = dataclasses.replace(s, data_dir=Path(data_dir).expanduser())
    if unsafe:
        s = dataclasses.replace(s, unsafe_no_sandbox=True)
    set_settings(s)


def _flow(doc: str | None) -> str:
    """Join a docstring's wrapped lines into paragraphs: Rich help keeps hard line breaks."""
    paras = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paras)


_EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
_COMMANDS: list[tuple[Callable[..., Any], dict[str, Any]]] = [
    (run_group.run, {}), (run_group.train, {"context_settings": _EXTRA_ARGS}),
    (run_group.check, {}), (results.show, {}), (results.status, {}), (results.verdict, {}),
    (results.export, {}), (results.decide, {}), (catalog.data, {}),
]
_COMMANDS.append((worker_group.worker, {}))
_COMMANDS.append((calibrate_group.calibrate, {}))
_COMMANDS += [(team_group.sprint, {}), (team_group.auto, {}), (team_group.leaderboard, {})]
_COMMANDS.append((dashboard_group.dashboard, {}))
for _fn, _kw in _COMMANDS:
    app.command(help=_flow(_fn.__doc__), **_kw)(_fn)
app.add_typer(ideas_group.app, name="ideas")  # a group: `ideas` lists, `ideas show NAME`
app.add_typer(llm_group.app, name="llm")  # `llm check`: one tiny request per role
app.add_typer(catalog.techniques_app, name="techniques")  # lists; `techniques check FILE`


def main() -> None:
    """Entry point: user errors print one line, never a traceback."""
    from typer.exceptions import TyperException

    try:
        rc = app(standalone_mode=False)  # returns the code of a typer.Exit
    except AirlabError as e:
        print_error(e)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print("interrupted; finished runs are stored, `airlab run` resumes")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.exit(1)
    except TyperException as e:  # usage errors (typer vendors click): their own message
        if hasattr(e, "ctx") and type(e).__name__ == "NoArgsIsHelpError":
            e.show()  # type: ignore[attr-defined]
        else:
            print_error(e.format_message())
        sys.exit(e.exit_code)
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - a bug of ours: one line and where the traceback is
        where = _log_traceback(e)
        print_error(f"internal error: {type(e).__name__}: {_first_line(e)} (traceback in "
                    f"{where}; please report it)")
        sys.exit(1)
    sys.exit(rc if isinstance(rc, int) else 0)


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:300] if lines else ""


def _log_traceback(e: BaseException) -> str:
    """Write the traceback to <home>/logs/error-TIME.log (the temp folder if home is not
    writable) and return the path."""
    import tempfile
    import time
    import traceback

    from airlab.cli.common import current_settings

    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    name = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    s = current_settings()
    folders = ([s.home / "logs"] if s is not None else []) + [Path(tempfile.gettempdir())]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(" ".join(sys.argv) + "\n\n" + text)
            return str(path)
        except OSError:
            continue
    return "stderr (no writable folder)"  # pragma: no cover - both folders refused
