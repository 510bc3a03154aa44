import sys
import time
from pathlib import Path

import pytest

from airlab.check import check_file, load_checked, measured_metrics, plan_summary
from airlab.errors import AirlabError
from airlab.plan import plan_runs, resolve
from airlab.spec import ExperimentSpec, library_specs, load_spec, slug

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


def write(tmp_path: Path, text: str | bytes) -> Path:
    p = tmp_path / "spec.yaml"
    if isinstance(text, str):
        text = text.encode("utf-8", "surrogatepass")
    p.write_bytes(text)
    return p


def test_good_spec_plans_arms_times_seeds_with_stable_keys(tmp_path: Path) -> None:
    spec = load_checked(write(tmp_path, GOOD))
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
    assert spec.where("arms", 1, "use") == f"{tmp_path / 'spec.yaml'}:12"


def test_default_seeds_and_library() -> None:
    lib = library_specs()
    assert "demo" in lib
    spec = load_spec("demo")
    assert spec.seeds == [42, 137, 256]
    assert len(plan_runs(spec)) == 3 * (1 + len(spec.arms))


# Each case: (replace this, with that) in GOOD -> the problem names these parts.
BAD = [
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
    ("workload: charlm", "workload: charlmm", ["spec.yaml:3", "did you mean 'charlm'"]),
    ("budget: {tokens: 5000}\n", "", ["missing required field 'budget'"]),
    ("arms:", "arms: [", ["not valid YAML"]),
    # issue 11: tracebacks before
    ("seeds: [1, 2]", "seeds: [99999999999999999999]", ["spec.yaml:14", "seeds[0]", "64 bits"]),
    ("seeds: [1, 2]", "seeds: [-3]", ["spec.yaml:14", "seeds[0]", "greater than or equal"]),
    ("name: rope_check", "name: " + "x" * 101, ["spec.yaml:1", "at most 100"]),
    ("name: rope_check", 'name: "a\\ud800b"', ["spec.yaml:1", "surrogate"]),
    ("  - name: rope\n", '  - name: "ro\\0pe"\n', ["spec.yaml:9", "arms[0].name", "NUL"]),
    ("  - name: rope\n", '  - name: "ro\\npe"\n', ["spec.yaml:9", "control character"]),
    ("  - name: rope\n", "  - name: /\n", ["spec.yaml:9", "may use only"]),
    ("  - name: rope\n", "  - name: ''\n", ["spec.yaml:9", "empty"]),
    ("  - name: rope\n", "  - name: " + "r" * 65 + "\n", ["spec.yaml:9", "at most 64"]),
    ("    options: {lr: 0.002}", "    options: {seed: 1000}", ["spec.yaml:13", "seeds"]),
    ("    options: {lr: 0.002}", "    options: {tokens: 9}", ["spec.yaml:13", "'tokens'"]),
    ("    options: {lr: 0.002}", "    options: {dataset: x}", ["spec.yaml:13", "'dataset'"]),
    ("    options: {lr: 0.002}", "    options: {lr: 0}", ["spec.yaml:13", "lr"]),
    ("budget: {tokens: 5000}", "budget: {tokens: .nan}", ["spec.yaml:6", "finite"]),
    ("budget: {tokens: 5000}", "budget: {tokens: .inf}", ["spec.yaml:6", "finite"]),
    ("budget: {tokens: 5000}", "budget: {tokens: 0}", ["spec.yaml:6", "positive"]),
    ("budget: {tokens: 5000}", "budget: {tokens: 1.0e300}", ["spec.yaml:6", "beyond"]),
    ("budget: {tokens: 5000}", "budget: {samples: 5000}", ["spec.yaml:6", "does not count"]),
    ("seeds: [1, 2]", "seeds: [1, 2]\ntimeout_s: .inf", ["spec.yaml:15", "timeout_s"]),
    ("seeds: [1, 2]", "seeds: [1, 2]\ntimeout_s: 1.0e300", ["spec.yaml:15", "86400"]),
    ("seeds: [1, 2]", "seeds: [1, 2]\nname: again", ["spec.yaml:15", "given twice"]),
    ("seeds: [1, 2]", "seeds: [1, 2]\nsweep: {values: [0.1, 0.1]}", ["spec.yaml:15", "repeat"]),
    ("seeds: [1, 2]", "seeds: [1, 2]\nmetric: val_acc", ["spec.yaml:15", "val_acc",
                                                         "not measured"]),
    ("seeds: [1, 2]", "seeds: [1, 2]\n1: 2", ["spec.yaml", "key 1"]),
    ("seeds: [1, 2]", "seeds: [1, 2]\nx: &a [1]\ny: *a", ["spec.yaml:16", "aliases"]),
    ("seeds: [1, 2]", "seeds: [1, 2]\noptions: " + "[" * 400 + "]" * 400, ["nested deeper"]),
    ("    use: [rope]", "    use: [rope, nope]", ["spec.yaml:10", "rope", "nope"]),
    ("    use: [rope]", "    use: [gqa, mqa]", ["spec.yaml:10", "gqa", "mqa"]),
    ("    use: [rope]", "    use: [rope, rope]", ["spec.yaml:10", "twice"]),
    ("dataset: pycode", "dataset: file:/dev/zero", ["spec.yaml:5", "system folder"]),
    ("dataset: pycode", "dataset: file:/proc/self/environ", ["spec.yaml:5", "system folder"]),
    ("dataset: pycode", "dataset: file:missing.txt", ["spec.yaml:5", "not found",
                                                      "spec file's folder"]),
]


@pytest.mark.parametrize("old,new,expect", BAD)
def test_bad_specs_name_file_line_and_field(tmp_path: Path, old: str, new: str,
                                             expect: list[str]) -> None:
    assert old in GOOD
    spec, problems = check_file(write(tmp_path, GOOD.replace(old, new)))
    assert spec is None and problems
    msg = str(problems[0])
    for part in expect:
        assert part in msg, msg
    assert "\n" not in msg and msg.isprintable(), msg
    with pytest.raises(AirlabError):
        load_checked(tmp_path / "spec.yaml")


def test_non_utf8_and_huge_and_non_mapping_files(tmp_path: Path) -> None:
    _, p = check_file(write(tmp_path, GOOD.encode() + b"# \xff\n"))
    assert "spec.yaml:15: not UTF-8" in str(p[0])
    _, p = check_file(write(tmp_path, "[1, 2]"))
    assert "must be a mapping" in str(p[0])
    _, p = check_file(write(tmp_path, "x" * (2 << 20)))
    assert "bytes" in str(p[0])


def test_file_dataset_is_relative_to_the_spec_and_size_limited(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch
                                                               ) -> None:
    (tmp_path / "corpus.txt").write_text("def f(x):\n    return x\n" * 100)
    (tmp_path / "tiny.txt").write_text("short")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the cwd must not matter
    spec = load_spec(write(tmp_path, GOOD.replace("dataset: pycode", "dataset: file:corpus.txt")))
    assert spec.dataset == f"file:{(tmp_path / 'corpus.txt').resolve()}"
    _, p = check_file(write(tmp_path, GOOD.replace("dataset: pycode", "dataset: file:tiny.txt")))
    assert "at least" in str(p[0])
    _, p = check_file(write(tmp_path, GOOD.replace("dataset: pycode", "dataset: file:.")))
    assert "not a regular file" in str(p[0])


def test_many_problems_are_all_reported(tmp_path: Path) -> None:
    text = GOOD.replace("seeds: [1, 2]", "seeds: [1, 1]").replace("hypothesis:", "hypothesys:")
    _, problems = check_file(write(tmp_path, text))
    assert len(problems) == 2
    assert {str(p).split(":")[1] for p in problems} == {"2", "14"}


def test_python_built_specs_get_the_same_value_checks() -> None:
    with pytest.raises(ValueError, match="finite"):
        ExperimentSpec(name="x", budget={"tokens": 10}, options={"lr": float("nan")})
    with pytest.raises(ValueError, match="at most 64"):
        ExperimentSpec(name="x", budget={"tokens": 10}, arms=[{"name": "a" * 70}])


def test_slug_is_safe_and_keeps_valid_names() -> None:
    assert slug("rope_rms-2.0") == "rope_rms-2.0"
    for bad in ("../etc/passwd", "a/b", "", " ", "x" * 300, "a\0b", "\ud800"):
        s = slug(bad)
        assert 0 < len(s) <= 64 and all(c.isalnum() or c in "_.-" for c in s), s
        assert not s.startswith(".")
    assert slug("a/b") != slug("a_b")


def test_loading_a_spec_does_not_import_torch_or_plan() -> None:
    import subprocess

    code = ("import sys, time; t = time.process_time(); from airlab.spec import load_spec; "
            "load_spec('demo'); dt = time.process_time() - t; "
            "print(dt, 'torch' in sys.modules, 'airlab.plan' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[1:] == ["False", "False"]
    assert float(out[0]) < 1.0  # CPU time: other processes on the machine do not count


def test_missing_spec_file_and_unknown_builtin() -> None:
    with pytest.raises(AirlabError, match="spec file not found: nope.yaml"):
        load_spec("nope.yaml")
    with pytest.raises(AirlabError, match="did you mean 'demo'"):
        load_spec("dem")


def test_metrics_come_from_the_workload() -> None:
    assert {"val_loss", "val_bpc", "tokens_per_s", "peak_mem_mb"} <= measured_metrics("charlm")
    assert "val_acc" in measured_metrics("vision") and "val_acc" not in measured_metrics("charlm")


def test_plan_summary_lists_arms_diffs_budget_and_time(tmp_path: Path) -> None:
    spec = load_checked(write(tmp_path, GOOD))
    t = time.perf_counter()
    s = plan_summary(spec)
    assert time.perf_counter() - t < 5
    assert s.runs == 6 and s.budget_unit == "tokens" and s.units_per_run == 5000
    rope = s.arms[1]
    assert rope.diff["model.positions"][1] == "rope"
    assert s.est_seconds == pytest.approx(6 * 5000 / s.throughput)
    assert "assumed" in s.throughput_source
    text = "\n".join(s.lines())
    assert "3 arms x 2 seeds = 6 runs" in text and "rope_rms" in text


def test_plan_summary_uses_throughput_measured_in_the_store(tmp_path: Path) -> None:
    """The rate is the median over finished runs of the baseline's resolved configuration:
    runs of another configuration (an arm's switches, other model fields) do not count."""
    from airlab.store import Store

    spec = load_checked(write(tmp_path, GOOD))
    store = Store(f"sqlite:///{tmp_path / 'lab.db'}")
    eid = store.upsert_experiment("earlier", spec.to_dict())
    wide = spec.model_copy(update={"seeds": [1, 2, 3]})
    plans = [p for p in plan_runs(wide) if p.arm == "base"]
    rows = store.ensure_runs(eid, [(p.arm, p.seed, p.run_key, p.config.to_dict())
                                   for p in plans])
    for row, rate in zip(rows, (1000.0, 3000.0, 2000.0), strict=True):
        store.finish(row["id"], "finished", None, {"tokens_per_s": rate}, [], {})
    rope = next(p for p in plan_runs(spec) if p.arm == "rope")
    small = spec.model_copy(update={"options": {"n_layer": 1}, "seeds": [9]})
    other = store.ensure_runs(eid, [(rope.arm, rope.seed, rope.run_key, rope.config.to_dict()),
                                    *((p.arm, p.seed, p.run_key, p.config.to_dict())
                                      for p in plan_runs(small) if p.arm == "base")])
    for row in other:  # another configuration: the rope arm, the preset with one layer
        store.finish(row["id"], "finished", None, {"tokens_per_s": 9e9}, [], {})
    failed = store.ensure_runs(eid, [(p.arm, 7, p.run_key + "x", p.config.to_dict())
                                     for p in plans[:1]])
    store.finish(failed[0]["id"], "failed", "diverged", {"tokens_per_s": 9e9}, [], {})
    s = plan_summary(spec, store)
    assert s.throughput == 2000.0  # the median of the finished runs; the failed one is ignored
    assert "3 finished runs of this configuration" in s.throughput_source
    assert s.est_seconds == pytest.approx(6 * 5000 / 2000.0)
    store.close()


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
        spec = load_checked(name)
        assert spec.seeds == [42, 137, 256] and len(spec.arms) >= 2
        assert len(spec.all_arms) >= 2 and spec.dataset == "shakespeare"
        q = quick_spec(spec)
        assert q.name == f"{name}-quick" and q.sweep is None
        assert q.budget == spec.quick_budget and q.options["eval_points"] == 2
