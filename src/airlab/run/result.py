"""The outcome of one run as plain data. No torch here: executors, the store and the analysis
import it without paying for PyTorch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunResult:
    state: str  # "finished", "failed" or "incomplete" (cut by a time box; run again later)
    reason: str | None
    metrics: dict[str, float]
    curve: list[dict[str, float]]
    info: dict[str, Any] = field(default_factory=dict)  # provenance and dataset facts
    # True when the run failed for a reason outside the run itself (worker killed, out-of-memory
    # kill, lost heartbeat): such a run may be retried; divergence or a bad config may not.
    infra: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "metrics": self.metrics,
                "curve": self.curve, "info": self.info, "infra": self.infra}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        return cls(d["state"], d.get("reason"), d.get("metrics", {}), d.get("curve", []),
                   d.get("info", {}), bool(d.get("infra", False)))

    @classmethod
    def failed(cls, reason: str, *, infra: bool = False, **info: Any) -> RunResult:
        return cls("failed", reason, {}, [], dict(info), infra)
