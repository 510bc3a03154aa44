"""Report side over a real micro store: export (checked in headless Chromium), the experiment
folder, the tracker, the CLI commands and the energy fallback."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import MICRO

from airlab.executors.inprocess import InProcessExecutor
from airlab.experiment import run_experiment
from airlab.settings import get_settings
from airlab.spec import Arm, ExperimentSpec
from airlab.store import Store

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def _airlab() -> list[str]:
    """The installed console script, as a user runs it."""
    found = shutil.which("airlab", path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("the airlab console script is not installed (pip install -e .)")
    return [found]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Path]]:
    """A store with one real micro experiment: baseline and rope, 2 seeds each (not rated)."""
    root = tmp_path_factory.mktemp("lab")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    store = Store(f"sqlite:///{root / 'lab.db'}")
    settings = get_settings(db=store.url, home=root / "home")
    spec = ExperimentSpec(name="micro", hypothesis="RoPE beats learned positions at 3k tokens.",
                          area="efficient_arch", dataset="pycode", budget={"tokens": 3000},
                          options=dict(MICRO), baseline=Arm(name="learned"),
                          arms=[Arm(name="rope", use=["rope"])], seeds=[42, 137])
    run_experiment(spec, store, InProcessExecutor(settings=settings), settings=settings,
                   rate=False)
    torch.set_num_threads(old)
    yield store, root


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("headless Chromium not found: install it with "
                "`apt-get update && apt-get install -y chromium`")


def test_export_renders_in_headless_chromium(lab: tuple[Store, Path], tmp_path: Path) -> None:
    from airlab.report.export import export

    store, _ = lab
    res = export(store, tmp_path / "out", tensorboard=True)
    out = res.out
    for name in ("report.md", "report.html", "tables.tex", "runs.csv", "runs.json",
                 "latex/micro.tex", "plots/micro-curves.png", "plots/micro-pareto.png",
                 "plots/micro-efficiency.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # Every run, with every metric, in both machine-readable forms.
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 4 and all(r["state"] == "finished" for r in runs)
    assert all("val_loss" in r["metrics"] and r["curve"] for r in runs)
    header = (out / "runs.csv").read_text().splitlines()[0].split(",")
    assert {"experiment", "arm", "seed", "val_loss", "train_seconds", "flops"} <= set(header)
    tex = (out / "latex/micro.tex").read_text()
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    md = (out / "report.md").read_text()
    assert "## micro" in md and "Rating:" in md and "airlab run" in md
    assert any("TensorBoard" in n for n in res.notes)
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "src='plots/" not in page

    chromium = _chromium()
    url = (out / "report.html").resolve().as_uri()
    common = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
              "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000"]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    console_errors = [ln for ln in dom.stderr.splitlines()
                      if "Uncaught" in ln or ":CONSOLE" in ln]
    assert not console_errors, console_errors
    assert 'data-plots="ok"' in dom.stdout, dom.stdout[:500]
    assert 'data-plot-count="3/3"' in dom.stdout
    assert not re.search(r"<html[^>]*data-errors", dom.stdout)
    assert re.search(r"<pre id=\"js-errors\"></pre>", dom.stdout)

    shot = tmp_path / "shot.png"
    subprocess.run([*common, f"--screenshot={shot}", "--window-size=1100,1600", url],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file(), "Chromium wrote no screenshot"
    import matplotlib.image as mpimg

    pixels = mpimg.imread(str(shot))
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert float(pixels[..., :3].std()) > 0.02, "the screenshot is blank"


def test_experiment_folder_has_every_phase(lab: tuple[Store, Path], tmp_path: Path) -> None:
    from airlab.report.post import write_artifacts, write_tracking

    store, _ = lab
    home = tmp_path / "home"
    paths = write_artifacts(store, "micro", home)
    folder = home / "experiments" / "micro"
    names = {p.name for p in paths}
    assert {"analysis.md", "design.md", "implementation.md", "tracking.md", "post.md",
            "spec.yaml", "curves.png", "efficiency.png", "pareto.png"} <= names
    assert all((folder / n).stat().st_size > 0 for n in names)
    assert "RoPE beats learned positions" in (folder / "analysis.md").read_text()
    design = (folder / "design.md").read_text()
    assert "42, 137" in design and "tokens = 3000" in design and "Success criterion" in design
    impl = (folder / "implementation.md").read_text()
    assert "--use_rope" in impl and "airlab 0." in impl
    post = (folder / "post.md").read_text()
    assert "![" in post and "curves.png" in post and "Rating:" in post
    assert f"airlab run {folder / 'spec.yaml'}" in post
    tracking = write_tracking(store, "micro", home).read_text()
    assert tracking.count("| finished |") == 4 and "4 finished" in tracking


def test_tracker_counts_areas_ratings_and_bests(lab: tuple[Store, Path]) -> None:
    from airlab.experiment import rate_experiment
    from airlab.report.tracker import ROADMAP_AREAS, lab_status, render_status

    store, _ = lab
    rate_experiment(store, "micro", save=True)
    st = lab_status(store)
    assert st.by_area == {"efficient_arch": {"done": 1}}
    assert len(st.ratings) == 1 and sum(st.bands.values()) == 1
    assert st.velocity == pytest.approx(1.0)  # one experiment inside its first day
    assert st.best_compression is not None and st.best_compression.experiment == "micro"
    done = {label: ok for label, ok, _ in st.checklist}
    assert done["efficient_arch experiment run"] and not done["pruning experiment run"]
    assert len([k for k in done if k.endswith("experiment run")]) == len(ROADMAP_AREAS)
    from rich.console import Console

    con = Console(width=160, record=True)
    con.print(render_status(st))
    text = con.export_text()
    assert "roadmap checklist" in text and "best speed-up" in text and "micro" in text


def test_cli_status_verdict_and_export(lab: tuple[Store, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from airlab.cli import app
    from airlab.errors import AirlabError

    store, _ = lab
    home = tmp_path / "home"
    env = {**os.environ, "COLUMNS": "200", "AIRLAB_HOME": str(home)}
    # One real subprocess through the installed console script.
    s = subprocess.run([*_airlab(), "--db", store.url, "status"], capture_output=True, text=True,
                       timeout=120, env=env)
    assert s.returncode == 0, s.stderr
    assert "roadmap checklist" in s.stdout and "research velocity" in s.stdout
    # The rest in-process (same Typer app, no interpreter start-up).
    runner = CliRunner()
    v = runner.invoke(app, ["--db", store.url, "--home", str(home), "verdict", "micro"])
    assert v.exit_code == 0, v.output
    assert "/10" in v.output and "evidence" in v.output and "rigor" in v.output
    assert (home / "experiments" / "micro" / "post.md").is_file()
    e = runner.invoke(app, ["--db", store.url, "export", "--out", str(tmp_path / "rep")])
    assert e.exit_code == 0, e.output
    assert (tmp_path / "rep" / "report.html").is_file()
    bad = runner.invoke(app, ["--db", store.url, "verdict", "nope"])
    assert isinstance(bad.exception, AirlabError) and "no experiment named 'nope'" in str(
        bad.exception)


def test_energy_falls_back_to_the_labelled_estimate(monkeypatch: pytest.MonkeyPatch) -> None:
    from airlab import energy

    monkeypatch.setitem(sys.modules, "codecarbon", None)  # import now raises ImportError
    assert not energy.codecarbon_available()
    reading = energy.measure_energy(lambda: sum(range(10000)), threads=1)
    assert reading.result == sum(range(10000)) and reading.estimate
    assert reading.kwh >= 0 and reading.source.startswith("estimate:")


def test_energy_with_codecarbon_when_installed() -> None:
    pytest.importorskip("codecarbon", reason="codecarbon not installed (optional extra)")
    from airlab import energy

    reading = energy.measure_energy(lambda: sum(range(10**6)))
    assert reading.estimate and reading.source.startswith("estimate: codecarbon")
    assert reading.kwh >= 0
