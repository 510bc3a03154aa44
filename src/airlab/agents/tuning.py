"""Tuning an idea's options with Optuna: one study per idea in the lab's own database.

Its first trial is the idea as written (declared values inside the ranges); later ones come
from a seeded TPE sampler inside the idea's declared ``search`` ranges. The sprint reports the
arm's time-to-target ratio back with :meth:`Tuner.tell`. A trial left running by a process
that is gone (a crashed sprint) is resumed with the same options, so the restarted sprint plans
the same runs; a running trial of a live process is left to it.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from airlab.agents.knowledge import Idea, SearchDim, idea_spec, search_space
from airlab.errors import AirlabError

if TYPE_CHECKING:
    from airlab.settings import Settings
    from airlab.store import Store

MAX_BASE_SKIPS = 5  # suggestions equal to the base told ratio 1 before one is run anyway
STARTUP_TRIALS = 4  # TPE samples at random until an idea has this many finished trials
FOREIGN_STALE_S = 6 * 3600  # a running trial of another host is abandoned after this long
OWNER_ATTR = "airlab_owner"


class Tuner:
    """The Optuna studies of one Researcher (``seed``: its sampler's seed)."""

    def __init__(self, store: Store, settings: Settings | None, *, seed: int,
                 ideas: Mapping[str, Idea]) -> None:
        self.store = store
        self.settings = settings
        self.seed = seed
        self.ideas = ideas
        self._storage: Any = None

    def study(self, name: str, seed: int | None = None) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if self._storage is None:
            url = getattr(self.store, "url", None) or (self.settings.db_url if self.settings
                                                       else None)
            if not url:
                raise AirlabError("the Researcher needs the lab's database URL to keep its "
                                  "Optuna trials", "pass a Store opened on a URL")
            kwargs: dict[str, Any] = {}
            if url.startswith("sqlite"):
                kwargs = {"connect_args": {"timeout": 30}}  # wait for the store's writers
            try:
                self._storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
            except Exception as e:  # noqa: BLE001 - any database error is one user message
                raise AirlabError(f"cannot keep Optuna trials in '{_safe(url)}': "
                                  f"{str(e).splitlines()[0]}",
                                  "check the database is writable") from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS,
                                                 constant_liar=True)
        return optuna.create_study(study_name=study_name(name), storage=self._storage,
                                   direction="maximize", sampler=sampler, load_if_exists=True)

    def tune(self, name: str, recheck: bool,
              is_base: Callable[[str, Mapping[str, Any]], bool] | None = None
              ) -> tuple[dict[str, Any], int | None, bool, str]:
        """Options for the idea's arm: (options, trial number, resumed, a sentence)."""
        space = search_space(self.ideas[name])
        if not space:
            return {}, None, False, "nothing to tune: the idea declares no search ranges"
        if getattr(self.store, "readonly", False):
            return {}, None, False, "not tuned: the store is read-only"
        from optuna.trial import TrialState

        study = self.study(name)
        trials = study.get_trials(deepcopy=False)
        me = _owner()
        running = [t for t in trials if t.state == TrialState.RUNNING]
        stale = [t for t in running if _abandoned(t, me)]
        resumable = [t for t in stale if set(t.params) == set(space)]
        for t in stale:
            if not resumable or t is not resumable[0]:
                study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        if resumable:
            t = resumable[0]
            _set_owner(study, t, me)
            return (dict(t.params), t.number, True,
                    f"resumed Optuna trial {t.number} of {study_name(name)} (left running, never "
                    f"told a result) with the same options {_show(t.params)}")
        done = [t for t in trials if t.state == TrialState.COMPLETE]
        how = "sampled by TPE (seeded) inside the declared ranges"
        if recheck and done:
            best = max(done, key=lambda t: t.value if t.value is not None else -math.inf)
            study.enqueue_trial(dict(best.params))
            how = f"the best trial so far (#{best.number}, ratio {best.value:.3g}) again"
        elif not trials:
            first = self._declared(name, space)
            if first:
                study.enqueue_trial(first)
                how = "the idea's declared values (the first trial tests it as written)"
        skipped = 0
        while True:
            # Reseeded per trial: the same seed and store give the same suggestion, and each
            # new trial of a study gets a fresh stream rather than the first trial's values.
            study = self.study(name, seed=_mix(self.seed, name, len(trials) + skipped))
            trial = study.ask()
            options = {opt: dim.suggest(trial, opt) for opt, dim in sorted(space.items())}
            if is_base is None or recheck or skipped >= MAX_BASE_SKIPS \
                    or not is_base(name, options):
                break
            trial.set_user_attr("airlab_note", "the configuration tested against: ratio 1")
            study.tell(trial, 1.0)
            skipped += 1
        if skipped:
            how += (f"; {skipped} suggestion(s) equal to the configuration it is tested against "
                    f"were told ratio 1 and not run")
        trial.set_user_attr(OWNER_ATTR, me)
        trial.set_user_attr("airlab_seed", self.seed)
        trial.set_user_attr("airlab_started", time.time())
        return (options, trial.number, False,
                f"Optuna trial {trial.number} of {study_name(name)}: {_show(options)}, {how}")

    def _declared(self, name: str, space: Mapping[str, SearchDim]) -> dict[str, Any]:
        """The arm's values of the searched options as the idea declares them, where inside
        the ranges (an option the idea leaves at its default is read from the resolved run)."""
        from airlab.plan import resolve

        idea = self.ideas[name]
        spec = idea_spec(idea)
        arm = idea.arm
        try:
            cfg = resolve(workload=spec.workload, preset=spec.preset, dataset=spec.dataset,
                          budget=spec.budget, seed=spec.seeds[0], use=arm.use,
                          options={**spec.options, **arm.options}, settings=self.settings)
        except AirlabError:
            return {}
        from airlab.run.workloads import get_workload

        model = {**get_workload(cfg.workload).model_defaults(cfg.preset), **cfg.model}
        out: dict[str, Any] = {}
        for opt, dim in space.items():
            v: Any = arm.options.get(opt)
            if v is None:
                v = cfg.options.get(opt, getattr(cfg, opt, model.get(opt)))
            if v is not None and _inside(dim, v):
                out[opt] = int(v) if dim.is_int else v
        return out if len(out) == len(space) else {}

    def tell(self, idea: str, trial: int | None, value: float | None) -> None:
        """Report the sprint's outcome for the idea's trial: the arm's time-to-target ratio
        (higher is better), or None when the sprint failed (the trial is marked FAIL). Telling
        a trial that is already finished changes nothing."""
        if trial is None:
            return
        from optuna.trial import TrialState

        study = self.study(idea)
        if value is None or not math.isfinite(float(value)):
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        else:
            study.tell(trial, float(value), skip_if_finished=True)


def _inside(dim: SearchDim, v: Any) -> bool:
    if dim.choices is not None:
        return any(v == c for c in dim.choices)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    if dim.is_int and float(v) != int(v):
        return False
    return float(dim.low) <= float(v) <= float(dim.high)  # type: ignore[arg-type]


def _owner() -> str:
    from airlab.store import owner_id

    return owner_id()


def _abandoned(trial: Any, me: str) -> bool:
    """A running trial is abandoned when its process is gone (or is this one: a sprint of this
    process that never told its result); another host's trial only after a long time."""
    from airlab.store.team import owner_gone

    owner = trial.user_attrs.get(OWNER_ATTR)
    if not owner:
        return True  # the process stopped between asking and recording itself
    if owner == me:
        return True
    gone = owner_gone(owner)
    if gone is not None:
        return gone
    started = trial.datetime_start.timestamp() if trial.datetime_start else 0.0
    return time.time() - started > FOREIGN_STALE_S


def _set_owner(study: Any, trial: Any, owner: str) -> None:
    import optuna

    optuna.trial.Trial(study, trial._trial_id).set_user_attr(OWNER_ATTR, owner)


def _show(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(options.items()))


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for a message
        return "<database>"


def _mix(*parts: Any) -> int:
    """A stable 32-bit seed from parts (Python's hash() changes between processes; Optuna's
    samplers take seeds below 2**32)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def study_name(idea: str) -> str:
    return f"airlab.idea.{idea}"
