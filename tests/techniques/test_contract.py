"""The technique contract, run over every registered technique: declared option types and
ranges, symmetric exclusions, the source hash in the run key, reserved fields, a micro run with
a finite loss, the --use_<name> flag round trip; and a technique written in a folder named in
settings, loaded the same way by the parent and by a real worker process."""

import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import MICRO

from airlab.cli.run import parse_train_args
from airlab.config import RESERVED_FIELDS, TrainConfig
from airlab.errors import AirlabError
from airlab.plan import RunPlan, plan_runs, prerequisites, resolve
from airlab.run.trainer import train
from airlab.settings import get_settings
from airlab.spec import load_spec
from airlab.techniques import (
    TECHNIQUES,
    Option,
    Technique,
    check_compatible,
    excluded,
    get_technique,
    load_techniques,
)

CASES = [(name, wl) for name, t in sorted(TECHNIQUES.items()) for wl in t.workloads]
GPU_ONLY = {"fp16"}  # refused on CPU with a clear message (tested below)


def _config(name: str, workload: str) -> TrainConfig:
    if workload == "charlm":
        return resolve(budget={"tokens": 2048}, use=[name], options=MICRO)
    preset = "cnn" if name == "separable_conv" else "mlp"
    return resolve(workload="vision", preset=preset, budget={"samples": 256}, use=[name],
                   options={"eval_points": 1})


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_options_declare_types_and_ranges(name: str) -> None:
    t = TECHNIQUES[name]
    assert t.name == name and t.area and t.help and t.module
    for opt_name, opt in t.options.items():
        assert isinstance(opt, Option), opt_name
        assert opt_name not in RESERVED_FIELDS
        assert opt.type in (int, float, bool, str, dict), opt_name
        assert opt.check(name, opt_name, opt.default) == opt.default  # the default is valid
        if opt.type in (int, float) and opt.high is not None:
            with pytest.raises(AirlabError, match=f"technique '{name}': option {opt_name}="):
                opt.check(name, opt_name, opt.high * 2 + 1)
        with pytest.raises(AirlabError, match=opt_name):
            opt.check(name, opt_name, [1, 2])  # a list is no declared type


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_excludes_are_registered_and_symmetric(name: str) -> None:
    t = TECHNIQUES[name]
    for other in t.excludes:
        assert other in TECHNIQUES, f"{name} excludes unknown {other}"
        assert name in TECHNIQUES[other].excludes, f"{other} does not exclude {name}"
        wl = next(w for w in t.workloads if w in TECHNIQUES[other].workloads)
        budget = {"tokens": 2048} if wl == "charlm" else {"samples": 256}
        with pytest.raises(AirlabError, match="exclude each other"):
            resolve(workload=wl, budget=budget, use=[name, other])


def test_declared_conflicts() -> None:
    for group in (("muon", "lion", "adafactor", "sgd_nesterov"), ("rope", "nope"),
                  ("gqa", "mqa"), ("wq_int8", "wq_int4", "ptq_int8", "qat"), ("bf16", "fp16"),
                  ("relu2", "swiglu"), ("prune_oneshot", "prune_gradual", "prune_structured")):
        for a in group:
            for b in group:
                assert excluded(a, b) == (a != b), (a, b)
    check_compatible(["rope", "muon", "qk_norm"])  # compatible switches pass
    with pytest.raises(AirlabError, match="twice"):
        check_compatible(["rope", "rope"])


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_source_hash_is_in_the_run_key(name: str) -> None:
    cfg = _config(name, TECHNIQUES[name].workloads[0])
    assert cfg.code == {name: get_technique(name).source_hash}
    assert len(cfg.code[name]) == 16
    changed = TrainConfig(**{**cfg.to_dict(), "code": {name: "0" * 16}})
    assert changed.run_key != cfg.run_key  # changed code is a new run
    # ...and a worker refuses to run a config planned against other code.
    with pytest.raises(AirlabError, match="changed since this run was planned"):
        train(changed)


def test_baseline_key_has_no_code_field() -> None:
    cfg = resolve(budget={"tokens": 2048}, options=MICRO)
    assert cfg.code == {} and "code" not in _keyed_fields(cfg)


def _keyed_fields(cfg: TrainConfig) -> set[str]:
    from airlab.config import _ALWAYS_KEYED, _defaults

    d, df = cfg.to_dict(), _defaults()
    return {k for k, v in d.items() if k in _ALWAYS_KEYED or v != df.get(k)}


@pytest.mark.parametrize("name,workload", CASES)
def test_technique_trains_with_a_finite_loss(name: str, workload: str) -> None:
    cfg = _config(name, workload)
    assert name in cfg.techniques
    if name in GPU_ONLY and not torch.cuda.is_available():
        with pytest.raises(AirlabError, match="GPU"):
            train(cfg)
        return
    for pre in prerequisites([RunPlan("contract", "a", cfg.seed, cfg)]):
        assert train(pre.config).state == "finished"  # e.g. a distillation teacher
    r = train(cfg)
    assert r.state == "finished", r.reason
    assert r.metrics["steps"] >= 1
    assert math.isfinite(r.metrics["val_loss"])
    assert math.isfinite(r.metrics["train_loss"])
    if get_technique(name).deploys:  # the trainer measured the deployed model
        assert r.metrics["quality_drop"] == pytest.approx(
            r.metrics["val_loss"] - r.metrics["val_loss_before"])


@pytest.mark.parametrize("name", sorted(TECHNIQUES))
def test_flag_round_trips_through_cli_and_spec(name: str, tmp_path: Path) -> None:
    use, options = parse_train_args([f"--use_{name}"])
    assert use == [name] and options == {}
    wl = TECHNIQUES[name].workloads[0]
    spec = {"name": "rt", "workload": wl, "budget": {"tokens" if wl == "charlm" else "epochs": 1},
            "arms": [{"name": "a", "use": [f"--use_{name}"]}], "seeds": [1],
            **({"preset": "cnn"} if name == "separable_conv" else {})}
    p = tmp_path / "rt.yaml"
    p.write_text(yaml.safe_dump(spec))
    loaded = load_spec(p)
    assert loaded.arms[0].use == [name]
    [_, arm_plan] = plan_runs(loaded)
    assert arm_plan.config.techniques == (name,)
    # Same spec written again gives the same run key: the switch is part of the identity.
    assert plan_runs(load_spec(p))[1].run_key == arm_plan.run_key


def test_reserved_fields_cannot_be_overridden() -> None:
    for field in ("tokens", "dataset", "preset", "device", "eval_tokens", "seed"):
        t = Technique(f"bad_{field}", "test", "overrides a reserved field", {field: 1})
        with pytest.raises(AirlabError, match=f"reserved field '{field}'"):
            t.configure({})
    with pytest.raises(AirlabError, match="reserved"):
        resolve(budget={"tokens": 2048}, options={"tokens": 10})
    with pytest.raises(AirlabError, match="reserved"):
        resolve(budget={"tokens": 2048}, options={"dataset": "shakespeare"})


USER_TECHNIQUE = '''
"""A user technique: scales every weight by `shrink_factor` after training (a deploy step)."""
import torch

from airlab.techniques import Hooks, Option, Technique, register


class Shrink(Hooks):
    def on_model(self, model):
        self.calls = 0
        return model

    def after_step(self, model, step, progress):
        self.calls += 1

    def deploy(self, model, task):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(self.options["shrink_factor"])
        return model

    def on_finish(self, model, task):
        return {"shrink_steps_seen": float(self.calls), "val_loss": -1.0}


register(Technique("shrink", "test", "scale all weights after training",
                   options={"shrink_factor": Option(0.0, float, 0, 1)}, hooks=Shrink,
                   workloads=("charlm",)))
'''


def test_technique_from_settings_folder_runs_in_a_worker(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from airlab.executors.base import Job
    from airlab.executors.local import LocalExecutor

    folder = tmp_path / "techniques"
    folder.mkdir()
    (folder / "shrink.py").write_text(USER_TECHNIQUE)
    monkeypatch.setenv("AIRLAB_TECHNIQUES_DIR", str(folder))
    settings = get_settings()
    assert settings.techniques_dir == folder
    assert load_techniques(settings.techniques_dir) in (["shrink"], [])  # idempotent
    try:
        cfg = resolve(budget={"tokens": 2048}, use=["shrink"], options=MICRO, settings=settings)
        assert cfg.code["shrink"] == get_technique("shrink").source_hash
        with pytest.raises(AirlabError, match="shrink_factor=2.0 must be a float in"):
            resolve(budget={"tokens": 2048}, use=["shrink"],
                    options={**MICRO, "shrink_factor": 2.0}, settings=settings)
        ex = LocalExecutor(workers=1, threads=1, settings=settings)
        [(_, r)] = list(ex.run([Job("u", cfg.to_dict())]))
        assert r.state == "finished", r.reason
        m = r.metrics
        # The hook ran in the worker: all weights zero => uniform logits => loss = ln(vocab).
        assert m["shrink_steps_seen"] == m["steps"] > 0
        assert m["val_loss"] == pytest.approx(math.log(r.info["vocab_size"]), rel=1e-4)
        assert m["val_loss_before"] < m["val_loss"]  # the trained model, kept beside it
        assert m["quality_drop"] > 0  # and the technique's own "val_loss" was ignored
    finally:
        TECHNIQUES.pop("shrink", None)
