"""Generated code cannot fake its result: every attack in tests/sandbox/attacks, written as a
technique file the way a hostile author would, runs through the real pipeline (`run_experiment`
on the local pool, the sandbox, the measuring harness) and ends honestly measured, flagged, or
failed with the rule it broke; the baseline of a spec that names a sabotaging file is the clean
baseline, value for value.
"""

from __future__ import annotations

import math
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest

from airlab.sandbox import protections, why_unsandboxed

pytestmark = pytest.mark.skipif(not protections().bubblewrap,
                                reason=f"no usable bubblewrap here: {why_unsandboxed()}")

ATTACKS = Path(__file__).parent / "attacks"
MICRO = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32, "batch_size": 8,
         "warmup_steps": 5, "eval_points": 4, "eval_tokens": 1024}
ARMS = {  # arm -> (technique, file)
    "noop": ("file_noop", "poison.py"),
    "patched_eval": ("file_patched_eval", "patched_eval.py"),
    "fake_clock": ("file_fake_clock", "fake_clock.py"),
    "reads_val": ("file_reads_val", "reads_val.py"),
    "fabricated": ("file_fabricated", "fabricated.py"),
    "fills_disk": ("file_fills_disk", "disk_filler.py"),
    "non_causal": ("file_non_causal", "non_causal.py"),
    "skips_eval": ("file_skips_eval", "skips_eval.py"),
    "hoards": ("file_hoards", "hoards.py"),
    "smuggled_prior": ("file_smuggled_prior", "smuggled_prior.py"),
}


def _spec(folder: Path, name: str, arms: dict[str, tuple[str, str]], *, tokens: int,
          seeds: list[int], extra: str = "") -> Path:
    (folder / "techniques").mkdir(parents=True, exist_ok=True)
    files = sorted({f for _, f in arms.values()})
    for f in files:
        if not (folder / "techniques" / f).exists():
            shutil.copy(ATTACKS / f, folder / "techniques" / f)
    arm_lines = "\n".join(f"  - {{name: {a}, use: [{t}]}}" for a, (t, _) in arms.items())
    options = ", ".join(f"{k}: {v}" for k, v in MICRO.items())
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        workload: charlm
        dataset: pycode
        budget: {{tokens: {tokens}}}
        seeds: {seeds}
        {extra}
        """) + (f"techniques: [{', '.join('techniques/' + f for f in files)}]\n" if files else "")
        + f"options: {{{options}}}\n" + ("arms:\n" + arm_lines + "\n" if arms else "arms: []\n"))
    return path


def _prior_file(folder: Path) -> None:
    """The smuggled prior: log frequencies of pycode's characters, written into the file."""
    from airlab.data import load_text
    from airlab.settings import get_settings

    s = get_settings()
    corpus = load_text("pycode", data_dir=s.data_dir, cache_dir=s.cache_dir)
    counts = [1.0] * corpus.vocab_size
    for i in corpus.train.tolist():
        counts[i] += 1
    total = sum(counts)
    table = [round(math.log(c / total), 4) for c in counts]
    (folder / "techniques").mkdir(parents=True, exist_ok=True)
    text = (ATTACKS / "smuggled_prior.py").read_text().replace(
        "LOG_PRIOR = []", f"LOG_PRIOR = {table!r}")
    (folder / "techniques" / "smuggled_prior.py").write_text(text)


def _run(path: Path, workers: int = 2) -> tuple[Any, dict[str, list[dict[str, Any]]]]:
    from airlab.executors.local import LocalExecutor
    from airlab.experiment import run_experiment
    from airlab.settings import get_settings
    from airlab.spec import load_spec
    from airlab.store import Store

    settings = get_settings()
    spec = load_spec(path)
    store = Store(settings.db_url)
    out = run_experiment(spec, store, LocalExecutor(workers, threads=1, settings=settings),
                         settings=settings, rate=True)
    exp = store.experiment(spec.name)
    assert exp is not None
    by_arm: dict[str, list[dict[str, Any]]] = {}
    from airlab.store import load_live_points

    rows = store.runs(exp["id"])
    metrics = store.metrics([r["id"] for r in rows])
    live = load_live_points(store, [r["id"] for r in rows])
    for r in rows:
        r = {**r, "metrics": metrics[r["id"]], "curve": store.curve(r["id"]),
             "live": live[r["id"]]}
        by_arm.setdefault(r["arm"], []).append(r)
    store.close()
    return out, by_arm


def test_every_attack_is_measured_honestly_or_refused(tmp_path: Path) -> None:
    _prior_file(tmp_path)
    _, clean = _run(_spec(tmp_path, "clean", {}, tokens=8192, seeds=[42]), workers=1)
    out, runs = _run(_spec(tmp_path, "attacks", ARMS, tokens=8192, seeds=[42]))
    one = {arm: rows[0] for arm, rows in runs.items()}
    base = one["baseline"]

    # The baseline imported no generated file. Measured by the harness like the arms (so that
    # they are compared measured the same way, and keyed so: never mistaken for the clean run),
    # it is the clean baseline, value for value: the same counts, the same losses up to the
    # float rounding of a traced graph against the eager model.
    clean_base = clean["baseline"][0]
    assert base["state"] == "finished" and base["info"]["generated_code"] == {}
    assert base["config"]["measured_by"] == "harness"
    assert clean_base["config"]["measured_by"] == "trainer"
    assert {**base["config"], "measured_by": "trainer"} == {**clean_base["config"],
                                                            "measured_by": "trainer"}
    assert base["run_key"] != clean_base["run_key"]
    for k in ("flops", "tokens", "steps", "params", "model_bytes"):
        assert base["metrics"][k] == clean_base["metrics"][k], k
    for k in ("val_loss", "best_val_loss", "train_eval_loss"):
        assert base["metrics"][k] == pytest.approx(clean_base["metrics"][k], abs=1e-5), k
    assert [p["val_loss"] for p in base["curve"]] == pytest.approx(
        [p["val_loss"] for p in clean_base["curve"]], abs=1e-5)
    assert [(p["step"], p["flops"]) for p in base["curve"]] == [(p["step"], p["flops"])
                                                                for p in clean_base["curve"]]

    # Runs of generated code are measured by the harness; their own figures are only kept.
    for arm in ("noop", "patched_eval", "fake_clock", "smuggled_prior"):
        r = one[arm]
        assert r["state"] == "finished", (arm, r["reason"])
        assert r["info"]["sandbox"] and "trusted harness" in r["info"]["measured_by"]
        assert set(r["info"]["generated_code"]) == {ARMS[arm][0]}  # its own file, no other

    # The sandboxed runs streamed their points live as they were measured (the dashboard's).
    pe_run = one["patched_eval"]
    assert [p["val_loss"] for p in pe_run["live"]] == [p["val_loss"] for p in pe_run["curve"]]

    # Poison: its own arm trained at 0.3x the learning rate, so it is worse, not better.
    assert one["noop"]["metrics"]["val_loss"] > base["metrics"]["val_loss"] + 0.05

    # Patched evaluation: the evaluation happened elsewhere; training was untouched, so the
    # arm is the baseline's twin (the same seed, data and init) to float rounding.
    pe = one["patched_eval"]["metrics"]
    assert pe["val_loss"] == pytest.approx(base["metrics"]["val_loss"], abs=1e-6)
    assert pe["val_loss"] > 2.0 and pe["implausible"] == 0

    # Fake clock and negative FLOPs: the FLOPs are the config's, the clock the parent's: no
    # faster than its own CPU time allows (one thread), and the same curve as the baseline.
    fc = one["fake_clock"]
    assert fc["metrics"]["flops"] == base["metrics"]["flops"]
    assert fc["info"]["extra_flops_per_unit"] == 0.0
    assert [p["flops"] for p in fc["curve"]] == [p["flops"] for p in base["curve"]]
    assert fc["metrics"]["train_seconds"] >= 0.8 * fc["metrics"]["train_cpu_seconds"]
    assert fc["metrics"]["val_loss"] == pytest.approx(base["metrics"]["val_loss"], abs=1e-4)

    # Knowledge written into the code: flagged at step 0, never credited.
    sp = one["smuggled_prior"]
    assert sp["metrics"]["implausible"] >= 1
    assert any(x.startswith("starts_trained") for x in sp["info"]["implausible"])

    # The rest broke the contract or a limit: failed, with the rule in one line.
    expect = {
        "reads_val": "more than 8 batches after training",
        "fabricated": "ended without handing over",
        "fills_disk": "disk quota",
        "non_causal": "reads the tokens it predicts",
        "skips_eval": "without handing over the model",
        "hoards": "without handing over the model",
    }
    for arm, needle in expect.items():
        r = one[arm]
        assert r["state"] == "failed", (arm, r["metrics"])
        assert needle in (r["reason"] or ""), (arm, r["reason"])
        assert "\n" not in r["reason"]

    # The verdict: nothing faked is better or credited.
    assert out.analysis is not None and out.verdict is not None
    for row in out.analysis.rows:
        if row.arm in ("patched_eval", "fake_clock", "smuggled_prior", "noop"):
            assert row.verdict != "better", (row.arm, row.verdict)


@pytest.mark.slow  # 3 seeds of four arms, then a longer run beside a spinning thread
def test_the_attacks_that_once_rated_publishable_are_not_credited(tmp_path: Path) -> None:
    """Once: a poisoned baseline rated 8/10 (10/10 crediting FLOPs), a patched evaluation and a
    fake clock "better". Now, over three seeds with FLOPs credited, no such arm is better and
    the verdict credits none."""
    arms = {k: ARMS[k] for k in ("noop", "patched_eval", "fake_clock")}
    out, runs = _run(_spec(tmp_path, "publishable", arms, tokens=16384, seeds=[42, 137, 256],
                           extra="credit: flops"))
    assert all(r["state"] == "finished" for rows in runs.values() for r in rows)
    assert out.analysis is not None and out.verdict is not None
    for row in out.analysis.rows:
        assert row.verdict != "better", (row.arm, row.verdict)
    assert out.verdict.rating <= 4, (out.verdict.rating, out.verdict.critique)


@pytest.mark.slow
def test_a_second_core_is_refused(tmp_path: Path) -> None:
    """A thread doing matrix products beside training: the tree's CPU time exceeds what one
    thread can use in the worker's wall time, and the run fails saying so. (On a loaded
    machine the second thread may get no core of its own, and then it used none.)"""
    import os

    if (os.cpu_count() or 1) < 2 or os.getloadavg()[0] > 1.0:
        pytest.skip("needs two idle cores: the second thread must get one of its own")
    arms = {"extra_cores": ("file_extra_cores", "extra_cores.py")}
    _, runs = _run(_spec(tmp_path, "cores", arms, tokens=262144, seeds=[42]), workers=1)
    r = runs["extra_cores"][0]
    assert r["state"] == "failed" and "more than its 1 thread" in r["reason"], r["reason"]
