"""Energy of a piece of work, always an ESTIMATE: CodeCarbon when installed, else airlab's own.

CodeCarbon (``pip install 'airlab[energy]'``) reads Intel RAPL counters or NVML when the
machine exposes them and falls back to a CPU TDP table otherwise; without it we use
:func:`airlab.measure.energy_kwh_est` (an assumed power draw times the elapsed time). Either
way the number is labelled an estimate and carries the source it came from.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class EnergyReading(Generic[T]):
    kwh: float
    source: str  # "estimate: codecarbon (RAPL)", "estimate: assumed 15 W per CPU thread x 2"
    seconds: float
    result: T
    estimate: bool = True  # never a metered measurement


def codecarbon_available() -> bool:
    try:
        import codecarbon  # noqa: F401
    except ImportError:
        return False
    return True


def _codecarbon_source(tracker: Any) -> str:
    """Name what CodeCarbon measured with (RAPL / TDP table / NVML / constant), best effort."""
    parts: list[str] = []
    for hw in getattr(tracker, "_hardware", []) or []:
        name = type(hw).__name__
        mode = str(getattr(hw, "_mode", "") or "")
        if name == "GPU":
            parts.append("NVML")
        elif name == "CPU":
            low = mode.lower()
            parts.append("RAPL" if "rapl" in low else "TDP table" if low in ("constant", "tdp")
                         or "tdp" in low else f"CPU {mode}" if mode else "CPU")
        elif name == "RAM":
            parts.append("RAM model")
    return "estimate: codecarbon (" + (", ".join(parts) or "unknown source") + ")"


class EnergyMeter:
    """Energy of the training loop, as the trainer measures it: ``start()``, then ``stop()``.

    With the ``energy`` extra installed, CodeCarbon's offline tracker runs over the loop's wall
    time (training steps and the evaluations between them); without it, the labelled estimate
    of :func:`airlab.measure.energy_kwh_est` over the busy training seconds. ``stop`` returns
    (kWh, source); the source says which one it was.
    """

    def __init__(self, device: Any, threads: int, *, use_codecarbon: bool = True) -> None:
        self.device = device
        self.threads = threads
        self._tracker: Any = None
        self._use_codecarbon = use_codecarbon

    def start(self) -> None:
        if self._use_codecarbon and codecarbon_available():
            try:
                self._tracker = _offline_tracker()
                self._tracker.start()
            except Exception:  # noqa: BLE001 - a broken tracker must not fail the run
                self._tracker = None

    def stop(self, busy_seconds: float) -> tuple[float, str]:
        if self._tracker is not None:
            try:
                self._tracker.stop()
                data = getattr(self._tracker, "final_emissions_data", None)
                kwh = float(getattr(data, "energy_consumed", 0.0) or 0.0)
                return kwh, _codecarbon_source(self._tracker)
            except Exception:  # noqa: BLE001 - fall back to the estimate below
                pass
        from airlab.measure import energy_kwh_est

        return energy_kwh_est(busy_seconds, self.device, self.threads)


def _offline_tracker() -> Any:
    from codecarbon import OfflineEmissionsTracker

    # Offline mode needs a country for the carbon intensity; energy does not depend on it.
    return OfflineEmissionsTracker(
        country_iso_code=os.environ.get("AIRLAB_COUNTRY", "USA"), save_to_file=False,
        log_level="error", measure_power_secs=1)


def measure_energy(fn: Callable[[], T], *, threads: int | None = None,
                   use_codecarbon: bool = True) -> EnergyReading[T]:
    """Run ``fn`` and estimate the energy it used; CodeCarbon is used only if importable."""
    if use_codecarbon and codecarbon_available():
        tracker = _offline_tracker()
        tracker.start()
        t0 = time.perf_counter()
        try:
            result = fn()
        finally:
            seconds = time.perf_counter() - t0
            tracker.stop()
        data = getattr(tracker, "final_emissions_data", None)
        kwh = float(getattr(data, "energy_consumed", 0.0) or 0.0)
        return EnergyReading(kwh, _codecarbon_source(tracker), seconds, result)

    import torch

    from airlab.measure import energy_kwh_est

    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    kwh, source = energy_kwh_est(seconds, torch.device("cpu"), threads or torch.get_num_threads())
    return EnergyReading(kwh, source, seconds, result)
