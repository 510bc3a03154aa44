"""The technique contract and the one registry (re-exported by ``airlab.techniques``).

A technique is one module that registers a :class:`Technique`: a name, an area, a help line,
the options it takes (:class:`Option`: default, type, range), the techniques it excludes, the
config changes it makes and, optionally, :class:`Hooks` the one training loop calls. A technique
never evaluates the model or reports eval metrics itself: the trainer does, on the model the
``deploy`` hooks return. Options may not override reserved fields (budget, dataset, preset,
device, eval settings, seed: ``airlab.config.RESERVED_FIELDS``). The run key holds a sha256 of
each used technique's module source, so changed code is a new run.

Hook order in one run: ``configure`` (while the config is resolved, before the run key is
computed) -> ``on_model`` (after the model is built) -> ``on_optimizer`` -> ``wrap_loss`` ->
each step: ``after_backward`` (before clipping), ``after_step`` -> after training: ``deploy``
(return the model to ship; the trainer evaluates it) -> ``on_finish`` (extra measurements).

``TECHNIQUES`` is the one registry (a plain dict). The built-in modules register on import;
``load_techniques(folder)`` imports technique modules from a folder (``Settings.techniques_dir``)
into the same registry, and the worker process calls it the same way as the parent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airlab.config import RESERVED_FIELDS
from airlab.errors import AirlabError, did_you_mean, lookup

if TYPE_CHECKING:
    from airlab.config import TrainConfig


@dataclass(frozen=True)
class Option:
    """One option a technique reads from ``config["options"]``: default, type and range.

    ``type`` is float, int, bool, str or dict. ``low``/``high`` bound numbers (inclusive unless
    ``low_open``/``high_open``); ``choices`` lists allowed values; a default of None means the
    option may be left unset (None). ``scales_with_lr``: a learning rate, multiplied by the
    config's batch-size rule (``lr_scaling``) like ``lr`` itself.
    """

    default: Any
    type: type = float
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    help: str = ""
    low_open: bool = False
    high_open: bool = False
    scales_with_lr: bool = False

    def range_text(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(repr, self.choices))
        if self.low is None and self.high is None:
            return f"a {self.type.__name__}"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return (f"a {self.type.__name__} in {'(' if self.low_open else '['}{lo}, {hi}"
                f"{')' if self.high_open or self.high is None else ']'}")

    def check(self, technique: str, name: str, value: Any) -> Any:
        """The value as the run will use it, or AirlabError naming technique, option, range."""
        if value is None and self.default is None:
            return None

        def bad() -> AirlabError:
            return AirlabError(f"technique '{technique}': option {name}={value!r} must be "
                               f"{self.range_text()}", f"the default is {self.default!r}")

        if self.type is bool:
            if not isinstance(value, bool):
                raise bad()
        elif self.type in (int, float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad()
            if self.type is int:
                if isinstance(value, float) and not value.is_integer():
                    raise bad()
                value = int(value)
            else:
                value = float(value)
            if not math.isfinite(value):
                raise bad()
            if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
                raise bad()
            if self.high is not None and (value > self.high
                                          or (self.high_open and value == self.high)):
                raise bad()
        elif not isinstance(value, self.type):
            raise bad()
        if self.choices is not None and value not in self.choices:
            raise bad()
        return value


@dataclass(frozen=True)
class HookContext:
    """What a technique's hooks may know about where the run happens (never get_settings())."""

    artifacts_dir: Path | None = None  # per-run files by run key (e.g. a teacher's weights)
    device: str = "cpu"


class Hooks:
    """Per-run behaviour of a technique. A fresh instance is made for every run, so state kept
    on ``self`` (masks, a teacher model, statistics) never leaks between runs.

    ``config`` is the run's resolved config as a dict; the technique's own options are in
    ``self.options`` (validated, defaults filled in). ``self.context`` is a HookContext.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.options: dict[str, Any] = config.get("options", {})
        self.context = HookContext()

    def on_model(self, model: Any) -> Any:
        """After the model is built (and moved to its device); return the model to train."""
        return model

    def on_optimizer(self, optimizer: Any, model: Any) -> Any:
        return optimizer

    def wrap_loss(self, loss_fn: Callable[..., Any]) -> Callable[..., Any]:
        """Return a loss function ``(model, x, y) -> loss`` (e.g. add a distillation term)."""
        return loss_fn

    def extra_flops_per_unit(self, model: Any, optimizer: Any, task: Any) -> float:
        """Training FLOPs per token/sample this technique adds beyond the model's own forward
        and backward (a teacher's forward pass, an optimizer's matrix iterations). Counted in
        ``flops`` and so in every FLOPs-based efficiency ratio: no cost is hidden."""
        return 0.0

    def after_backward(self, model: Any, step: int) -> None:
        """Gradients are ready (before clipping and the optimizer step)."""

    def after_step(self, model: Any, step: int, progress: float) -> None:
        """After the optimizer step; ``progress`` is the budget fraction used (0..1)."""

    def deploy(self, model: Any, task: Any) -> Any:
        """After training: return the model that would be shipped (quantized, pruned, shrunk).

        The trainer evaluates what the deploy steps return, stores it as ``val_loss`` (etc.),
        keeps the trained model's figures as ``val_loss_before`` and their difference as
        ``quality_drop``. Do not evaluate here."""
        return model

    def on_finish(self, model: Any, task: Any) -> dict[str, float]:
        """Extra measurements after deploy (sparsity, bytes, teacher cost). ``model`` is the
        trained model, ``task.model`` the deployed one. Eval metrics (``val_*``) returned here
        are ignored: the trainer alone measures quality."""
        return {}


def _overrides_deploy(hooks: type[Hooks] | None) -> bool:
    return hooks is not None and hooks.deploy is not Hooks.deploy


@dataclass(frozen=True)
class Technique:
    """A registered switch (`--use_<name>`): config changes and/or per-run hooks."""

    name: str
    area: str
    help: str
    # Config overrides applied when the switch is on; a callable gets the config resolved so far.
    overrides: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]] = field(
        default_factory=dict
    )
    workloads: tuple[str, ...] = ("charlm", "vision")
    options: dict[str, Option] = field(default_factory=dict)
    hooks: type[Hooks] | None = None  # None: a pure config switch
    excludes: tuple[str, ...] = ()  # techniques that cannot be used together with this one
    # A run this one needs first (e.g. a distillation teacher): config -> the prerequisite's
    # config. resolve() writes the prerequisite's run key into option ``prerequisite_option``.
    prerequisite: Callable[[TrainConfig], TrainConfig] | None = None
    prerequisite_option: str | None = None
    module: str = ""  # the module that registered it (its source is hashed into run keys)

    @property
    def params(self) -> dict[str, Any]:
        """Option defaults, e.g. {"prune_sparsity": 0.5}."""
        return {k: o.default for k, o in self.options.items()}

    @property
    def deploys(self) -> bool:
        """Whether this technique changes the model after training (the trainer re-evaluates)."""
        return _overrides_deploy(self.hooks)

    @property
    def source_hash(self) -> str:
        """sha256 (16 hex) of the source text of the module that registered this technique."""
        return _source_hash(self.module)

    def check_options(self, values: dict[str, Any]) -> dict[str, Any]:
        """This technique's options from ``values`` validated, with defaults filled in."""
        return {k: o.check(self.name, k, values.get(k, o.default))
                for k, o in self.options.items()}

    def configure(self, config: dict[str, Any]) -> dict[str, Any]:
        """Return the config overrides this technique makes (model fields go under 'model')."""
        ov = self.overrides(config) if callable(self.overrides) else self.overrides
        reserved = sorted(set(ov) & RESERVED_FIELDS)
        if reserved:
            raise AirlabError(f"technique '{self.name}' overrides reserved field "
                              f"'{reserved[0]}'", "a technique may not change the budget, data, "
                              "preset, device, eval settings or seed")
        return dict(ov)

    def create(self, config: dict[str, Any], context: HookContext | None = None
               ) -> Hooks | None:
        if self.hooks is None:
            return None
        h = self.hooks(config)
        h.context = context or HookContext()
        return h


TECHNIQUES: dict[str, Technique] = {}
_HASHES: dict[str, str] = {}
_LOADED: dict[Path, str] = {}  # technique files already imported -> module name


def _source_hash(module: str) -> str:
    if module not in _HASHES:
        mod = sys.modules.get(module)
        path = getattr(mod, "__file__", None)
        if not path:
            raise AirlabError(f"technique module '{module}' has no source file")
        _HASHES[module] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return _HASHES[module]


def register(t: Technique) -> Technique:
    """Add a technique to the registry (called by the module that defines it, on import)."""
    if t.name in TECHNIQUES:
        raise AirlabError(f"technique '{t.name}' registered twice",
                          "give the new technique a name of its own")
    for name in t.options:
        if name in RESERVED_FIELDS:
            raise AirlabError(f"technique '{t.name}': option '{name}' is a reserved field",
                              "name the option after the technique, e.g. "
                              f"{t.name}_{name}")
    module = t.module or sys._getframe(1).f_globals.get("__name__", "")
    t = replace(t, module=module)
    TECHNIQUES[t.name] = t
    return t


def get_technique(name: str) -> Technique:
    return lookup(TECHNIQUES, name, "technique (--use_<name> switch)")


def excluded(a: str, b: str) -> bool:
    """Whether techniques a and b exclude each other (declared by either side)."""
    return b in get_technique(a).excludes or a in get_technique(b).excludes


def check_compatible(names: Iterable[str]) -> None:
    """AirlabError on the first pair of switches that exclude each other."""
    names = list(names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if a == b:
                raise AirlabError(f"technique '{a}' is switched on twice", "list it once")
            if excluded(a, b):
                raise AirlabError(f"techniques '{a}' and '{b}' exclude each other",
                                  "use one of them per arm")


def load_techniques(folder: Path | str | None) -> list[str]:
    """Import every ``*.py`` technique module in ``folder`` (sorted by name) into the registry.

    Idempotent per file, so the parent and the worker can both call it with the same settings.
    Returns the names of the techniques the folder registered.
    """
    if folder is None:
        return []
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise AirlabError(f"techniques folder '{folder}' does not exist",
                          "set AIRLAB_TECHNIQUES_DIR to a folder of technique modules")
    before = set(TECHNIQUES)
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_") or path in _LOADED:
            continue
        _import_file(path, f"airlab_user_techniques.{path.stem}")
    return sorted(set(TECHNIQUES) - before)


def _import_file(path: Path, name: str) -> None:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise AirlabError(f"cannot import technique file '{path}'")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    _LOADED[path] = name
    try:
        spec.loader.exec_module(mod)
    except AirlabError:
        raise
    except Exception as e:
        raise AirlabError(f"technique file '{path}' failed to import: "
                          f"{type(e).__name__}: {e}", "fix the module and run again"
                          ) from None


# Technique files named by a spec (`techniques: [file.py]`, generated code) are imported only
# inside the sandbox; the parent registers what the sandbox describes (techniques/contract.py).
FILE_MODULE_PREFIX = "airlab_file_techniques"


def file_digest(path: Path | str) -> str:
    """sha256 (16 hex) of a technique file's bytes: the same hash ``source_hash`` gives."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def file_module_name(digest: str) -> str:
    """The module name of a technique file, by content: the same in parent and sandbox."""
    return f"{FILE_MODULE_PREFIX}.t_{digest}"


def load_technique_file(path: Path | str) -> list[str]:
    """Import one technique file into the registry (in the sandbox: this runs its code).

    Idempotent per path; returns the names of the techniques the file registered."""
    path = Path(path).resolve()
    if path in _LOADED:
        return sorted(n for n, t in TECHNIQUES.items() if t.module == _LOADED[path])
    before = set(TECHNIQUES)
    _import_file(path, file_module_name(file_digest(path)))
    return sorted(set(TECHNIQUES) - before)


def set_source_hash(module: str, digest: str) -> None:
    """Record the source hash of a module the parent never imports (a technique file
    registered from its sandboxed description)."""
    _HASHES[module] = digest


def technique_hashes(names: Iterable[str]) -> dict[str, str]:
    """{name: source hash} for the run key."""
    return {n: get_technique(n).source_hash for n in names}


def known_options() -> set[str]:
    return {p for t in TECHNIQUES.values() for p in t.options}


def suggest_option(key: str) -> str:
    return did_you_mean(key, known_options())
