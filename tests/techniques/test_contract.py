"""Contract: every registered technique applies to the tiny models, trains a step with a finite
loss, and its --use_<name> flag round-trips through the command line and a YAML spec."""

import math
from pathlib import Path

import pytest
import torch
import yaml
from conftest import MICRO

from airlab.cli import parse_train_args
from airlab.errors import AirlabError
from airlab.plan import plan_runs, resolve
from airlab.run.trainer import train
from airlab.spec import load_spec
from airlab.techniques import TECHNIQUES

CASES = [(name, wl) for name, t in sorted(TECHNIQUES.items()) for wl in t.workloads]
GPU_ONLY = {"fp16"}  # refused on CPU with a clear message (tested below)




def _config(name: str, workload: str):
    if workload == "charlm":
        return resolve(budget={"tokens": 2048}, use=[name], options=MICRO)
    preset = "cnn" if name == "separable_conv" else "mlp"
    return resolve(workload="vision", preset=preset, budget={"samples": 256}, use=[name],
                   options={"eval_points": 1})


@pytest.mark.parametrize("name,workload", CASES)
def test_technique_trains_with_a_finite_loss(name: str, workload: str) -> None:
    cfg = _config(name, workload)
    assert name in cfg.techniques
    if name in GPU_ONLY and not torch.cuda.is_available():
        with pytest.raises(AirlabError, match="GPU"):
            train(cfg)
        return
    r = train(cfg)
    assert r.state == "finished", r.reason
    assert r.metrics["steps"] >= 1
    assert math.isfinite(r.metrics["val_loss"])
    assert math.isfinite(r.metrics["train_loss"])


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
