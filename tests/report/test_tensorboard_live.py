"""`--tensorboard DIR`: TensorBoard events written while the runs train, read back with
TensorBoard's own reader."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import MICRO

from airlab.experiment import SilentReporter, execute_runs
from airlab.spec import Arm, ExperimentSpec
from airlab.store import Store

pytest.importorskip("tensorboard", reason="tensorboard is not installed (the dev extra has it)")


def _scalars(folder: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not folder.exists():
        return []
    ea = EventAccumulator(str(folder))
    ea.Reload()
    if tag not in ea.Tags().get("scalars", []):
        return []
    return [(e.step, e.value) for e in ea.Scalars(tag)]


def test_eval_points_reach_tensorboard_while_the_run_trains(shared_data: Path,
                                                            tmp_path: Path) -> None:
    from airlab.executors.inprocess import InProcessExecutor
    from airlab.report.tensorboard import TensorBoardReporter
    from airlab.settings import get_settings

    settings = get_settings()
    store = Store(f"sqlite:///{tmp_path / 'lab.db'}")
    spec = ExperimentSpec(name="tb", workload="charlm", dataset="shakespeare",
                          budget={"tokens": 6000}, options={**MICRO, "eval_points": 4},
                          baseline=Arm(name="base"), arms=[], seeds=[1])
    root = tmp_path / "tb"
    on_disk: list[int] = []

    class Probe(SilentReporter):
        """At each evaluation: how many earlier points TensorBoard can already read."""

        def event(self, run: dict[str, Any], event: dict[str, Any]) -> None:
            if event.get("type") == "eval":
                on_disk.append(len(_scalars(root / "tb" / "base-seed1", "eval/val_loss")))

    reporter = TensorBoardReporter(Probe(), root, store)
    counts = execute_runs(spec, store, InProcessExecutor(settings=settings), settings=settings,
                          reporter=reporter)
    [row] = counts.rows
    assert row["state"] == "finished"
    assert on_disk == [0, 1, 2, 3, 4]  # each point was on disk before the next was taken
    got = _scalars(root / "tb" / "base-seed1", "eval/val_loss")
    curve = store.curve(row["id"])
    assert [(int(p["units"]), pytest.approx(p["val_loss"], rel=1e-6)) for p in curve] == got
    assert _scalars(root / "tb" / "base-seed1", "eval/val_bpc")


def _airlab() -> list[str]:
    found = shutil.which("airlab", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("the airlab console script is not installed in this environment")
    return [found]


def test_run_with_tensorboard_writes_every_run_and_refuses_enqueue(shared_data: Path,
                                                                   tmp_path: Path) -> None:
    spec = tmp_path / "tbrun.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "tbrun", "workload": "charlm", "dataset": "shakespeare",
        "budget": {"tokens": 4000}, "options": {**MICRO, "eval_points": 2},
        "baseline": {"name": "base"}, "arms": [{"name": "rope", "use": ["rope"]}],
        "seeds": [1, 2]}))
    out = tmp_path / "tb"
    r = subprocess.run([*_airlab(), "run", str(spec), "-w", "2", "--tensorboard", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    folders = sorted(p.name for p in (out / "tbrun").iterdir())
    assert folders == ["base-seed1", "base-seed2", "rope-seed1", "rope-seed2"]
    for f in folders:
        assert len(_scalars(out / "tbrun" / f, "eval/val_loss")) == 3  # step 0 and 2 marks
    r = subprocess.run([*_airlab(), "run", str(spec), "--enqueue", "--tensorboard", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("error: --tensorboard writes the runs this command")
