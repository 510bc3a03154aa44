"""`--device`: auto is resolved before the run key is computed, and the device is in the key."""

from __future__ import annotations

import pytest
import torch
from conftest import MICRO

from airlab.cli.worker import concrete_device, with_device
from airlab.errors import AirlabError
from airlab.plan import plan_runs, resolve
from airlab.spec import Arm, ExperimentSpec


def _spec() -> ExperimentSpec:
    return ExperimentSpec(name="dev", budget={"tokens": 2048}, options=MICRO,
                          baseline=Arm(name="base"), seeds=[1, 2])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_auto_is_cpu_here_and_changes_no_run_key() -> None:
    assert concrete_device("auto") == "cpu" and concrete_device("CPU") == "cpu"
    plain = [p.run_key for p in plan_runs(_spec())]
    auto = with_device(_spec(), "auto")
    assert auto.options["device"] == "cpu"  # concrete in the spec, so in every config
    assert [p.run_key for p in plan_runs(auto)] == plain
    assert all(p.config.device == "cpu" for p in plan_runs(auto))


def test_the_device_is_part_of_the_run_key() -> None:
    cpu = resolve(budget={"tokens": 2048}, options={**MICRO, "device": "cpu"})
    cuda = resolve(budget={"tokens": 2048}, options={**MICRO, "device": "cuda"})
    assert cpu.run_key != cuda.run_key and cuda.device == "cuda"


@pytest.mark.parametrize("name,msg", [("tpu", "is not a device"), ("cuda:x", "is not a device"),
                                      ("mps:0", "is not a device")])
def test_bad_devices_are_one_line(name: str, msg: str) -> None:
    with pytest.raises(AirlabError, match=msg) as e:
        concrete_device(name)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so() -> None:
    with pytest.raises(AirlabError, match="no CUDA GPU is available here"):
        concrete_device("cuda")


def test_auto_in_a_spec_is_resolved_before_the_key() -> None:
    """`device: auto` written in a spec's options is resolved at planning, like --device auto."""
    from airlab.plan import resolve

    auto = resolve(budget={"tokens": 1000}, options={"device": "auto"})
    plain = resolve(budget={"tokens": 1000})
    assert auto.device == "cpu" and auto.run_key == plain.run_key
