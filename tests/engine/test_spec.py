from pathlib import Path

import pytest

from airlab.errors import AirlabError
from airlab.plan import plan_runs, resolve
from airlab.spec import library_specs, load_spec

GOOD = """\
name: rope_check
hypothesis: rope helps
workload: charlm
preset: tiny
dataset: pycode
budget: {tokens: 5000}
baseline: {name: base}
arms:
  - name: rope
    use: [rope]
  - name: rope_rms
    use: [use_rope, --use_rmsnorm]
    options: {lr: 0.002}
seeds: [1, 2]
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    return p


def test_good_spec_plans_arms_times_seeds_with_stable_keys(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, GOOD))
    plans = plan_runs(spec)
    assert [(p.arm, p.seed) for p in plans] == [
        ("base", 1), ("base", 2), ("rope", 1), ("rope", 2), ("rope_rms", 1), ("rope_rms", 2)]
    assert spec.arms[1].use == ["rope", "rmsnorm"]
    keys = [p.run_key for p in plans]
    assert len(set(keys)) == 6
    assert keys == [p.run_key for p in plan_runs(load_spec(write(tmp_path, GOOD)))]
    rr = plans[4].config
    assert rr.model == {"positions": "rope", "norm": "rmsnorm"} and rr.lr == 0.002
    assert plans[0].config.seed == plans[2].config.seed == 1  # arms share seeds


def test_default_seeds_and_library() -> None:
    lib = library_specs()
    assert "demo" in lib
    spec = load_spec("demo")
    assert spec.seeds == [42, 137, 256]
    assert len(plan_runs(spec)) == 3 * (1 + len(spec.arms))


@pytest.mark.parametrize("old,new,expect", [
    ("hypothesis: rope helps", "hypothesys: rope helps", ["spec.yaml:2", "hypothesys",
                                                          "did you mean 'hypothesis'"]),
    ("    use: [rope]", "    use: [ropee]", ["spec.yaml:10", "ropee", "did you mean 'rope'"]),
    ("    options: {lr: 0.002}", "    options: {lrr: 0.002}", ["spec.yaml:13", "lrr",
                                                                 "did you mean 'lr'"]),
    ("budget: {tokens: 5000}", "budget: {tokenz: 5000}", ["spec.yaml:6", "tokenz",
                                                           "did you mean 'tokens'"]),
    ("seeds: [1, 2]", "seeds: [1, 1]", ["spec.yaml:14", "seeds repeat"]),
    ("  - name: rope_rms", "  - nme: rope_rms", ["spec.yaml:11", "arms[1]"]),
    ("    use: [rope]", "    use: [rope]\n    optoins: {}", ["spec.yaml:11", "arms[0].optoins",
                                                               "did you mean 'options'"]),
    ("workload: charlm", "workload: charlmm", ["workload", "did you mean 'charlm'"]),
    ("budget: {tokens: 5000}\n", "", ["missing required field 'budget'"]),
    ("arms:", "arms: [", ["not valid YAML"]),
])
def test_bad_specs_name_file_line_and_field(tmp_path: Path, old: str, new: str,
                                             expect: list[str]) -> None:
    assert old in GOOD
    with pytest.raises(AirlabError) as e:
        load_spec(write(tmp_path, GOOD.replace(old, new)))
    msg = str(e.value)
    for part in expect:
        assert part in msg, msg
    assert "\n" not in msg


def test_missing_spec_file_and_unknown_builtin() -> None:
    with pytest.raises(AirlabError, match="spec file not found: nope.yaml"):
        load_spec("nope.yaml")
    with pytest.raises(AirlabError, match="did you mean 'demo'"):
        load_spec("dem")


def test_resolve_precedence_and_errors() -> None:
    cfg = resolve(budget={"tokens": 1000}, use=["gqa"], options={"n_kv_head": 1})
    assert cfg.model["n_kv_head"] == 1  # an explicit option beats what a switch set
    assert resolve(budget={"tokens": 1000}, use=["gqa"]).model["n_kv_head"] == 2
    with pytest.raises(AirlabError, match="unknown option 'n_layr'.*n_layer"):
        resolve(budget={"tokens": 1000}, options={"n_layr": 2})
    with pytest.raises(AirlabError, match="n_embd"):
        resolve(budget={"tokens": 1000}, options={"n_embd": 130})
    with pytest.raises(AirlabError, match="does not apply to workload 'vision'"):
        resolve(workload="vision", budget={"epochs": 1}, use=["rope"])
    v = resolve(workload="vision", preset="cnn", budget={"epochs": 1}, options={"separable": True})
    assert v.model == {"separable": True} and v.dataset == "digits"


def test_every_library_experiment_loads_and_has_a_quick_form() -> None:
    from airlab.cli import quick_spec

    lib = library_specs()
    for alias in ("quantization_breakthrough", "pruning_innovation", "knowledge_distillation",
                  "batch_size_optimization", "efficient_optimizer", "mixed_precision_training",
                  "gradient_checkpointing", "micro_architecture"):
        assert alias in lib, alias
    for name in ("quantization", "pruning", "optimizers", "batch_size", "mixed_precision",
                 "distillation", "checkpointing", "efficient_arch", "gradient_clipping"):
        spec = load_spec(name)
        assert spec.seeds == [42, 137, 256] and len(spec.arms) >= 2
        assert len(spec.all_arms) >= 2 and spec.dataset == "shakespeare"
        q = quick_spec(spec)
        assert q.name == f"{name}-quick" and q.sweep is None
        assert q.budget == spec.quick_budget and q.options["eval_points"] == 2
