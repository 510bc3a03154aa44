"""The Ray executor on a real local Ray (2 CPUs, no dashboard, usage stats off), torn down after.

Same spec, same run keys, and seed for seed the same validation losses as in-process training,
with the same live points streamed to the store while the tasks run;
a task that kills its own worker process is a failed run with Ray's reason, retried only a
bounded number of times; timeouts and cancellation stop the tasks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MICRO

from airlab.executors.base import Job
from airlab.executors.inprocess import InProcessExecutor
from airlab.plan import resolve
from airlab.settings import get_settings
from airlab.spec import Arm, ExperimentSpec
from airlab.store import Store, load_live_points, load_live_progress

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'airlab[ray]')")

# A technique whose hook kills the process it runs in: a worker crash, as the OOM killer does.
KILLER = '''
import os, signal
from airlab.techniques import Hooks, Technique, register


class Kill(Hooks):
    def on_model(self, model):
        os.kill(os.getpid(), signal.SIGKILL)
        return model


register(Technique("selfkill", "test", "kills its own worker process", hooks=Kill,
                   workloads=("charlm",)))
'''


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    folder = tmp_path_factory.mktemp("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=str(folder), object_store_memory=80 * 1024 * 1024,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        yield
    finally:
        ray.shutdown()


def _spec() -> ExperimentSpec:
    return ExperimentSpec(name="raycheck", hypothesis="rope changes nothing here",
                          workload="charlm", dataset="shakespeare", budget={"tokens": 3000},
                          options=MICRO, baseline=Arm(name="base"),
                          arms=[Arm(name="rope", use=["rope"])], seeds=[1, 2])


def test_ray_gives_the_same_runs_and_losses_as_in_process(local_ray: None, shared_data: Path,
                                                          tmp_path: Path) -> None:
    from airlab.executors.ray import RayExecutor
    from airlab.experiment import execute_runs

    settings = get_settings()
    spec = _spec()
    got = {}
    for name, ex in (("ray", RayExecutor(settings=settings)),
                     ("local", InProcessExecutor(settings=settings))):
        store = Store(f"sqlite:///{tmp_path / name}.db")
        counts = execute_runs(spec, store, ex, settings=settings)
        ex.shutdown()
        assert counts.ran == 4 and counts.failed == 0, [r["reason"] for r in counts.rows]
        mets = store.metrics([r["id"] for r in counts.rows])
        got[name] = {(r["arm"], r["seed"], r["run_key"]): mets[r["id"]]["val_loss"]
                     for r in counts.rows}
        if name == "ray":
            assert all(r["info"].get("executor") == "ray" for r in store.runs(counts.experiment_id))
        # Live data: every executor's events reach the store while it runs; the live points
        # are the stored curve, point for point, and each run's last heartbeat says done.
        ids = [r["id"] for r in counts.rows]
        live, beats = load_live_points(store, ids), load_live_progress(store, ids)
        for i in ids:
            curve = [(p["step"], p["val_loss"]) for p in store.curve(i)]
            assert [(p["step"], p["val_loss"]) for p in live[i]] == curve and len(curve) == 3
            assert beats[i]["phase"] == "done" and beats[i]["units"] > 0, (name, beats[i])
    assert got["ray"].keys() == got["local"].keys()
    for k, v in got["ray"].items():
        assert v == got["local"][k], k  # bitwise: the trainer is deterministic on CPU
    assert ray.is_initialized()  # the executor did not stop a Ray it did not start


def test_a_task_that_kills_its_worker_is_a_failed_infra_run(local_ray: None, shared_data: Path,
                                                            tmp_path: Path) -> None:
    from airlab.executors.ray import RayExecutor
    from airlab.techniques import TECHNIQUES

    folder = tmp_path / "techniques"
    folder.mkdir()
    (folder / "selfkill.py").write_text(KILLER)
    settings = get_settings()
    settings = type(settings).from_dict({**settings.to_dict(), "techniques_dir": str(folder)})
    try:
        killer = resolve(budget={"tokens": 2048}, use=["selfkill"], options=MICRO,
                         settings=settings)
        fine = resolve(budget={"tokens": 2048}, options=MICRO, settings=settings)
        ex = RayExecutor(settings=settings, max_retries=1)
        results = {j.id: r for j, r in ex.run([Job("kill", killer.to_dict()),
                                               Job("fine", fine.to_dict())])}
    finally:
        TECHNIQUES.pop("selfkill", None)
    dead, ok = results["kill"], results["fine"]
    assert ok.state == "finished", ok.reason  # the crash stayed in its own task
    assert dead.state == "failed" and dead.infra
    assert dead.reason.startswith("Ray worker died (2 attempts): WorkerCrashedError"), dead.reason


def test_a_timeout_cancels_the_task(local_ray: None, shared_data: Path) -> None:
    from airlab.executors.ray import RayExecutor

    long = resolve(budget={"seconds": 120}, options=MICRO)
    ex = RayExecutor(settings=get_settings(), timeout_s=3)
    t0 = time.monotonic()
    [(_, r)] = list(ex.run([Job("long", long.to_dict())]))
    assert r.state == "failed" and r.reason == "timeout after 3 s" and not r.infra
    assert time.monotonic() - t0 < 60


def test_missing_ray_address_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Importing the module is light; bad arguments are one AirlabError line."""
    from airlab.errors import AirlabError
    from airlab.executors.ray import RayExecutor

    with pytest.raises(AirlabError, match="num_cpus_per_run=0"):
        RayExecutor(settings=get_settings(), num_cpus_per_run=0)


@pytest.mark.slow  # ~6 s; CI keeps the timeout that cancels a task
def test_shutdown_cancels_the_outstanding_tasks(local_ray: None, shared_data: Path) -> None:
    """Ctrl-C (the CLI's finally calls shutdown): running tasks are force-cancelled and come
    back as failed, retryable results; nothing keeps training."""
    import threading

    from airlab.executors.ray import RayExecutor

    long = resolve(budget={"seconds": 300}, options=MICRO)
    ex = RayExecutor(settings=get_settings())
    results: list = []
    t = threading.Thread(target=lambda: results.extend(ex.run([Job("long", long.to_dict())])))
    t.start()
    time.sleep(5)  # submitted and started
    t0 = time.monotonic()
    ex.shutdown()
    t.join(timeout=60)
    assert not t.is_alive() and time.monotonic() - t0 < 60
    [(_, r)] = results
    assert r.state == "failed" and r.infra and r.reason.startswith("cancelled"), r.reason
