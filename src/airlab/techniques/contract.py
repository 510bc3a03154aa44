"""The technique contract, checked on a technique *file* (generated code) without trusting it.

A spec may name technique files (``techniques: [file.py]``); the Coder writes them. Their code
runs only in the sandbox (``airlab.sandbox``): the parent never imports them. Instead:

1. ``python -m airlab.techniques.contract describe FILE`` runs **in the sandbox**: it imports
   the file, checks the static contract (:func:`check_technique`: typed options with valid
   defaults and ranges, no reserved or trainer fields as option names, overrides as plain data
   that touch no reserved field, hooks a :class:`Hooks` subclass with callable hooks, no
   prerequisite run) and writes a JSON description of each technique it registered.
2. The parent (:func:`register_technique_files`) validates that description as data and
   registers a stand-in :class:`Technique` with the same name, options, exclusions and
   overrides, whose source hash is the file's sha256, so planning, option checks and run keys
   work as for any technique; its hooks refuse to run outside the sandbox.
3. Every run of such a spec executes in the sandbox (``airlab.executors.sandboxed``), where
   the worker imports the file for real; the trainer checks the hash matches the plan.

The full check (a few training steps through the one trainer) is
``airlab.executors.sandboxed.check_technique_file`` (`airlab techniques check FILE`): training
lives above this layer.
"""

from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airlab.config import RESERVED_FIELDS, TRAIN_FIELDS
from airlab.errors import AirlabError
from airlab.techniques.base import (
    FILE_MODULE_PREFIX,
    TECHNIQUES,
    Hooks,
    Option,
    Technique,
    file_digest,
    file_module_name,
    load_technique_file,
    set_source_hash,
)

MAX_FILE_BYTES = 256 * 1024  # a technique is one module: a page or two of Python
HOOK_NAMES = ("on_model", "on_optimizer", "wrap_loss", "extra_flops_per_unit", "after_backward",
              "after_step", "deploy", "on_finish")
_TYPES: dict[str, type] = {"float": float, "int": int, "bool": bool, "str": str, "dict": dict}
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class ContractError(AirlabError):
    """A technique (file) that does not follow the contract: one line naming what and why."""


@dataclass(frozen=True)
class FileTechniques:
    """Technique files registered in this process: path -> (digest, technique names)."""

    path: Path
    digest: str
    names: tuple[str, ...]


_REGISTERED: dict[str, FileTechniques] = {}  # by digest
FILES: dict[str, Path] = {}  # technique name -> the file that defines it (latest registered)


# ------------------------------------------------------------------ static checks (any process)


def check_technique(t: Any) -> None:
    """ContractError (one line) if ``t`` breaks the static contract."""
    if not isinstance(t, Technique):
        raise ContractError(f"registered a {type(t).__name__}, not a Technique")
    who = f"technique '{t.name}'"
    if not isinstance(t.name, str) or not _NAME.match(t.name):
        raise ContractError(f"technique name {t.name!r} must be letters, digits and '_' "
                            "(at most 64, starting with a letter)")
    for field in ("area", "help"):
        value = getattr(t, field)
        if not isinstance(value, str) or not value.strip():
            raise ContractError(f"{who}: '{field}' must be a non-empty line of text")
    if not t.workloads or not all(isinstance(w, str) for w in t.workloads):
        raise ContractError(f"{who}: workloads must name at least one workload, e.g. "
                            "('charlm',)")
    if not all(isinstance(x, str) for x in t.excludes):
        raise ContractError(f"{who}: excludes must be technique names")
    if t.prerequisite is not None or t.prerequisite_option is not None:
        raise ContractError(f"{who}: a technique file may not plan a prerequisite run")
    if callable(t.overrides):
        raise ContractError(f"{who}: a technique file declares its overrides as a dict "
                            "(plain data the lab can check), not a function")
    if not isinstance(t.overrides, dict):
        raise ContractError(f"{who}: overrides must be a dict")
    bad = sorted(set(t.overrides) & RESERVED_FIELDS)
    if bad:
        raise ContractError(f"{who}: overrides reserved field '{bad[0]}' (budget, data, preset, "
                            "device, eval settings and seed are the same for every arm)")
    try:
        json.dumps(t.overrides, allow_nan=False)
    except (TypeError, ValueError):
        raise ContractError(f"{who}: overrides must be plain data (numbers, text, lists, "
                            "mappings)") from None
    if not isinstance(t.options, dict):
        raise ContractError(f"{who}: options must be a dict of Option")
    for name, opt in t.options.items():
        _check_option(who, name, opt)
    if t.hooks is not None:
        if not (isinstance(t.hooks, type) and issubclass(t.hooks, Hooks)):
            raise ContractError(f"{who}: hooks must be a subclass of airlab.techniques.Hooks")
        for hook in HOOK_NAMES:
            if not callable(getattr(t.hooks, hook, None)):
                raise ContractError(f"{who}: hook '{hook}' is not callable")
    elif not t.overrides and not t.options:
        raise ContractError(f"{who}: does nothing (no hooks, no overrides)")


def _check_option(who: str, name: Any, opt: Any) -> None:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ContractError(f"{who}: option name {name!r} must be letters, digits and '_'")
    if name in RESERVED_FIELDS or name in TRAIN_FIELDS:
        raise ContractError(f"{who}: option '{name}' is a reserved or trainer field",
                            f"name it after the technique, e.g. {who.split(chr(39))[1]}_{name}")
    if not isinstance(opt, Option):
        raise ContractError(f"{who}: option '{name}' must be declared with Option(default, "
                            "type, low, high)")
    if opt.type not in _TYPES.values():
        raise ContractError(f"{who}: option '{name}' has type {opt.type!r}; use float, int, "
                            "bool, str or dict")
    for bound in (opt.low, opt.high):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)
                                  or not math.isfinite(bound)):
            raise ContractError(f"{who}: option '{name}' has a bound that is not a finite "
                                "number")
    if opt.low is not None and opt.high is not None and opt.low > opt.high:
        raise ContractError(f"{who}: option '{name}' has low {opt.low} above high {opt.high}")
    if opt.type in (int, float) and opt.low is None and opt.high is None and not opt.choices:
        raise ContractError(f"{who}: numeric option '{name}' declares no range",
                            "give low and/or high (a range the lab can check)")
    try:
        opt.check(who, name, opt.default)
    except AirlabError as e:
        raise ContractError(f"{who}: the default of option '{name}' is not valid: "
                            f"{e.message}") from None
    try:
        json.dumps([opt.default, list(opt.choices or ())], allow_nan=False)
    except (TypeError, ValueError):
        raise ContractError(f"{who}: option '{name}' must have plain-data default and "
                            "choices") from None


def describe(t: Technique) -> dict[str, Any]:
    """A technique as plain data (what the sandbox tells the parent)."""
    hooks = [] if t.hooks is None else [h for h in HOOK_NAMES
                                        if getattr(t.hooks, h) is not getattr(Hooks, h)]
    return {
        "name": t.name, "area": t.area, "help": t.help, "workloads": list(t.workloads),
        "excludes": list(t.excludes), "overrides": dict(t.overrides),  # type: ignore[arg-type]
        "options": {k: {"default": o.default, "type": o.type.__name__, "low": o.low,
                        "high": o.high, "choices": None if o.choices is None else
                        list(o.choices), "help": o.help, "low_open": o.low_open,
                        "high_open": o.high_open, "scales_with_lr": o.scales_with_lr}
                    for k, o in t.options.items()},
        "hooks": hooks,
    }


def load_and_check(path: Path | str) -> list[Technique]:
    """Import a technique file (its code runs: call this only inside the sandbox) and check
    every technique it registers. ContractError on the first problem."""
    try:
        names = load_technique_file(path)
    except AirlabError as e:
        raise ContractError(e.message, e.hint) from None
    if not names:
        raise ContractError("the file registers no technique",
                            "call register(Technique(...)) at module level")
    techs = [TECHNIQUES[n] for n in names]
    for t in techs:
        check_technique(t)
    return techs


# ------------------------------------------------------------------ parent side


class _SandboxOnly(Hooks):
    """Stand-in hooks of a technique file in the parent: its code runs only in the sandbox."""

    source = ""

    def __init__(self, config: dict[str, Any]) -> None:
        raise AirlabError(f"technique file {self.source} runs only in the sandbox",
                          "run it through a spec (techniques: [file.py]) or "
                          "`airlab techniques check`")


def _stub_deploy(self: Hooks, model: Any, task: Any) -> Any:  # pragma: no cover - never runs
    return model


def technique_from_description(d: Any, *, path: Path, digest: str) -> Technique:
    """The parent's stand-in for a described technique; ContractError if ``d`` is not a valid
    description (it comes from untrusted code, so it is checked as data)."""
    where = f"technique file {path}"
    if not isinstance(d, dict):
        raise ContractError(f"{where}: the sandbox returned no description")
    try:
        options = {}
        for k, o in dict(d.get("options") or {}).items():
            typ = _TYPES[o["type"]]
            options[str(k)] = Option(
                o["default"], typ, o.get("low"), o.get("high"),
                None if o.get("choices") is None else tuple(o["choices"]), str(o.get("help", "")),
                bool(o.get("low_open")), bool(o.get("high_open")), bool(o.get("scales_with_lr")))
        hooks_list = [str(h) for h in d.get("hooks") or []]
        module = file_module_name(digest)
        attrs: dict[str, Any] = {"source": str(path)}
        if "deploy" in hooks_list:  # the trainer re-evaluates a technique that deploys
            attrs["deploy"] = _stub_deploy
        hooks = type(f"SandboxOnly_{digest}", (_SandboxOnly,), attrs) if hooks_list else None
        t = Technique(str(d["name"]), str(d["area"]), str(d["help"]),
                      overrides=dict(d.get("overrides") or {}),
                      workloads=tuple(str(w) for w in d["workloads"]), options=options,
                      hooks=hooks, excludes=tuple(str(x) for x in d.get("excludes") or ()),
                      module=module)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ContractError(f"{where}: malformed description from the sandbox: "
                            f"{type(e).__name__}: {e}") from None
    if hooks is None and not t.overrides and not t.options:
        raise ContractError(f"{where}: technique '{t.name}' does nothing")
    check_technique(t)
    return t


def register_technique_files(paths: list[Path], *, limits: Any = None,
                             allow_unsafe: bool = False) -> dict[Path, FileTechniques]:
    """Describe each technique file in the sandbox and register its stand-ins here.

    Idempotent per file content; a changed file replaces the techniques of its older version.
    Raises AirlabError (one line) for a missing, oversized or failing file, or a name taken by
    a built-in technique.
    """
    out: dict[Path, FileTechniques] = {}
    for raw in paths:
        path = check_technique_path(raw)
        digest = file_digest(path)
        if digest not in _REGISTERED:
            techs = [technique_from_description(d, path=path, digest=digest)
                     for d in describe_in_sandbox(path, limits=limits, allow_unsafe=allow_unsafe)]
            for t in techs:
                old = TECHNIQUES.get(t.name)
                if old is not None and not old.module.startswith(FILE_MODULE_PREFIX + "."):
                    raise AirlabError(f"technique file {path} registers '{t.name}', which is a "
                                      "built-in technique", "give it a name of its own")
            set_source_hash(file_module_name(digest), digest)
            for t in techs:
                TECHNIQUES[t.name] = t  # a newer version of a file technique replaces the old
            _REGISTERED[digest] = FileTechniques(path, digest, tuple(t.name for t in techs))
        entry = _REGISTERED[digest]
        for n in entry.names:
            FILES[n] = path
        out[path] = FileTechniques(path, digest, entry.names)
    return out


def check_technique_path(raw: Path | str) -> Path:
    """The absolute path of a technique file, or AirlabError naming the problem."""
    p = Path(raw).expanduser()
    try:
        p = p.resolve(strict=True)
    except (FileNotFoundError, RuntimeError):
        raise AirlabError(f"technique file not found: {raw}",
                          "a path in a spec is relative to the spec's folder") from None
    if p.suffix != ".py" or not p.is_file():
        raise AirlabError(f"technique file {p} is not a .py file", "give one Python module")
    size = p.stat().st_size
    if size > MAX_FILE_BYTES:
        raise AirlabError(f"technique file {p} has {size:,} bytes; at most {MAX_FILE_BYTES:,}",
                          "a technique is one module")
    return p


def describe_in_sandbox(path: Path, *, limits: Any = None, allow_unsafe: bool = False
                        ) -> list[dict[str, Any]]:
    """Run ``describe`` on the file in the sandbox; its descriptions, or a one-line
    ContractError with the sandbox's reason."""
    from airlab.sandbox import Limits, run_sandboxed

    limits = limits or Limits(wall_s=120, cpu_s=120)
    r = run_sandboxed([sys.executable, "-m", "airlab.techniques.contract", "describe",
                       str(path)], read_only=[path], limits=limits, allow_unsafe=allow_unsafe)
    result = read_result(r.output)
    if result is None:
        raise ContractError(f"technique file {path}: "
                            f"{r.reason or 'the sandbox wrote no result'}")
    if not result.get("ok"):
        raise ContractError(f"technique file {path}: {result.get('reason') or 'failed'}")
    techniques = result.get("techniques")
    if not isinstance(techniques, list) or not techniques:
        raise ContractError(f"technique file {path}: the sandbox described no technique")
    return techniques


def read_result(output: bytes) -> dict[str, Any] | None:
    """What the child handed back through its result pipe (None unless a JSON object)."""
    try:
        data = json.loads(output.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_result(data: dict[str, Any]) -> None:
    """Child side: hand ``data`` back through the sandbox's result pipe."""
    from airlab.sandbox import write_result as hand_back

    hand_back(json.dumps(data, allow_nan=False, default=str).encode("utf-8"))


def one_line(e: BaseException) -> str:
    text = e.message if isinstance(e, AirlabError) else f"{type(e).__name__}: {e}"
    return " ".join(str(text).split())[:500]


def main(argv: list[str] | None = None) -> int:
    """Sandbox child: ``describe FILE`` -> contract.json with the descriptions or the reason."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "describe":
        print("usage: python -m airlab.techniques.contract describe FILE", file=sys.stderr)
        return 2
    try:
        techs = load_and_check(args[1])
        write_result({"ok": True, "techniques": [describe(t) for t in techs]})
        return 0
    except BaseException as e:  # noqa: BLE001 - even sys.exit in the file is its result
        write_result({"ok": False, "reason": one_line(e)})
        return 1


if __name__ == "__main__":
    sys.exit(main())
