"""A fair learning-rate sweep: the same values for every arm, chosen on short runs, recorded,
on seeds and a held-out subset that the verdict does not use."""

import pytest
import torch
from conftest import MICRO

from airlab.analysis.compare import analyze
from airlab.config import TrainConfig
from airlab.errors import AirlabError
from airlab.executors.inprocess import InProcessExecutor
from airlab.experiment import SWEEP_SEED, run_experiment, sweep_seeds, sweep_spec
from airlab.plan import plan_runs, resolve
from airlab.run.workloads import text_eval_starts, text_select_windows, vision_select_split
from airlab.spec import Arm, ExperimentSpec, Sweep, spec_from_dict
from airlab.store import Store


def test_sweep_chooses_per_arm_and_is_recorded(db_url: str) -> None:
    spec = ExperimentSpec(
        name="opt", budget={"tokens": 4000}, options=MICRO, seeds=[1, 2],
        baseline=Arm(name="adamw"), arms=[Arm(name="sgd", options={"optimizer": "sgd"})],
        sweep=Sweep(values=[1e-4, 3e-3], budget_fraction=0.5))
    store = Store(db_url)
    out = run_experiment(spec, store, InProcessExecutor())
    assert out.planned == 4 and out.failed == 0
    sweep = store.experiment("opt.sweep")
    assert sweep is not None and sweep["kind"] == "sweep"
    sruns = store.runs(sweep["id"])
    assert len(sruns) == 4 and all(r["config"]["tokens"] == 2000 for r in sruns)
    assert {r["arm"] for r in sruns} == {"adamw.lr_0.0001", "adamw.lr_0.003", "sgd.lr_0.0001",
                                         "sgd.lr_0.003"}
    # The sweep ran on a seed of its own and on the selection subset; the verdict's runs on
    # the spec's seeds and the validation subset.
    assert {r["config"]["seed"] for r in sruns} == {SWEEP_SEED}
    assert all(r["config"]["eval_split"] == "select" for r in sruns)
    exp = store.experiment("opt")
    main = store.runs(exp["id"])
    assert {r["config"]["seed"] for r in main} == {1, 2}
    assert all(r["config"]["eval_split"] == "val" for r in main)
    # The experiment (not its sweep) was analysed once and rated; the outcome carries both.
    assert out.analysis is not None and [r.arm for r in out.analysis.rows] == ["adamw", "sgd"]
    assert out.verdict is not None and out.verdict.experiment == "opt"
    stored = ExperimentSpec(**exp["spec"])
    # On a 4k-token budget the larger lr is better for AdamW: the sweep must have found that.
    assert stored.sweep_chosen["adamw"] == 3e-3
    assert set(stored.sweep_chosen) == {"adamw", "sgd"}
    lrs = {(p.arm, p.config.lr) for p in plan_runs(stored)}
    assert lrs == {("adamw", 3e-3), ("sgd", stored.sweep_chosen["sgd"])}
    # Running again reuses everything, sweep included.
    again = run_experiment(spec, store, InProcessExecutor())
    assert again.ran == 0 and again.reused == 4
    assert len(analyze(store, "opt").rows) == 2


def test_sweep_seeds_never_the_verdicts() -> None:
    base = {"name": "s", "budget": {"tokens": 4000}, "options": MICRO}
    spec = ExperimentSpec(**base, seeds=[SWEEP_SEED, SWEEP_SEED + 1, 42],
                          sweep=Sweep(values=[1e-4, 3e-3]))
    assert sweep_seeds(spec) == [SWEEP_SEED + 2]
    sw = sweep_spec(spec)
    assert sw.seeds == [SWEEP_SEED + 2] and sw.options["eval_split"] == "select"
    clash = {**base, "seeds": [1, 2], "sweep": {"values": [1e-4, 3e-3], "seeds": [2, 5]}}
    with pytest.raises(AirlabError, match=r"sweep seeds \[2\] are also the experiment's"):
        spec_from_dict(clash)  # refused when the spec is read, before anything runs


def test_eval_split_keys_and_defaults() -> None:
    cfg = resolve(budget={"tokens": 4000}, options=MICRO)
    sel = resolve(budget={"tokens": 4000}, options={**MICRO, "eval_split": "select"})
    # The default stays out of the run key: runs stored before the field existed keep theirs.
    assert cfg.run_key == TrainConfig(**{**cfg.to_dict(), "eval_split": "val"}).run_key
    assert "eval_split" not in cfg.to_dict() or cfg.eval_split == "val"
    assert sel.run_key != cfg.run_key
    with pytest.raises(AirlabError, match="eval_split"):
        resolve(budget={"tokens": 4000}, options={**MICRO, "eval_split": "test"})


@pytest.mark.parametrize("n_train,n_val,T,eval_tokens", [
    (1_003_854, 111_540, 64, 16384),  # tinyshakespeare, tiny preset
    (270_000, 30_000, 32, 1024),  # micro
    (45_000, 5_000, 64, 16384),  # a small file: the val windows tile the validation text
    (2_700, 300, 32, 16384),
])
def test_text_subsets_are_disjoint(n_train: int, n_val: int, T: int, eval_tokens: int) -> None:
    val = text_eval_starts(n_val, T, eval_tokens)
    # "val" is the subset every verdict was measured on: evenly spaced, unchanged.
    n_seq = max(1, min(eval_tokens // T, (n_val - 1) // T))
    assert torch.equal(val, torch.linspace(0, n_val - T - 1, n_seq).long())
    source, sel, n_keep = text_select_windows(n_train, n_val, T, eval_tokens)
    # Each window reads T + 1 tokens (inputs and the shifted targets).
    used_sel = {int(s) + j for s in sel for j in range(T + 1)}
    assert 0 < len(sel) <= len(val) and min(used_sel) >= 0
    if source == "val":
        assert len(used_sel) == len(sel) * (T + 1)  # gap windows do not overlap each other
        used_val = {int(s) + j for s in val for j in range(T + 1)}
        assert used_val.isdisjoint(used_sel) and max(used_sel) < n_val
        assert n_keep == n_train
    else:  # a held-out tail of the training text that select runs do not train on
        assert n_keep < n_train and max(used_sel) < n_train - n_keep
    if n_val > 3 * n_seq * (T + 1):  # room to spare: as many selection windows as val ones
        assert source == "val" and len(sel) == len(val)
    if n_val < n_seq * (T + 1):
        assert source == "train"


def test_text_select_needs_room() -> None:
    with pytest.raises(AirlabError, match="selection subset"):
        text_select_windows(100, 66, 64, 256)


def test_select_run_reads_the_held_out_tail(shared_data: object) -> None:
    """A select run on a text too small for gaps: trains on less, evaluates on the tail."""
    from airlab.run.workloads import get_workload
    from airlab.settings import get_settings

    cfg = resolve(budget={"tokens": 2000}, dataset="shakespeare",
                  options={**MICRO, "eval_tokens": 100_000, "eval_split": "select"})
    task = get_workload("charlm").setup(cfg, torch.device("cpu"), get_settings())
    assert task.info["eval_split"] == "select"
    val_task = get_workload("charlm").setup(cfg.model_copy(update={"eval_split": "val"}),
                                            torch.device("cpu"), get_settings())
    assert task.info["eval_source"] == "train" and val_task.info["eval_source"] == "val"
    assert task.train_size < val_task.train_size
    assert task.evaluate(task.model)["val_loss"] != val_task.evaluate(val_task.model)["val_loss"]


def test_vision_select_split_is_disjoint_and_fixed() -> None:
    keep, held = vision_select_split(1437)
    assert set(keep.tolist()).isdisjoint(held.tolist())
    assert sorted([*keep.tolist(), *held.tolist()]) == list(range(1437))
    assert len(held) == int(1437 * 0.2)
    again_keep, again_held = vision_select_split(1437)
    assert torch.equal(keep, again_keep) and torch.equal(held, again_held)


def test_vision_select_run_evaluates_on_the_held_out_part() -> None:
    from airlab.run.workloads import get_workload
    from airlab.settings import get_settings

    cfg = resolve(workload="vision", dataset="digits", budget={"epochs": 1},
                  options={"eval_split": "select"})
    task = get_workload("vision").setup(cfg, torch.device("cpu"), get_settings())
    val = get_workload("vision").setup(cfg.model_copy(update={"eval_split": "val"}),
                                       torch.device("cpu"), get_settings())
    assert (task.info["train_samples"], task.info["val_samples"]) == (1437 - 287, 287)
    assert (val.info["train_samples"], val.info["val_samples"]) == (1437, 360)
