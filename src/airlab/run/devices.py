"""Which device a run uses: ``auto`` is resolved before the run key is computed, so a run's
config (and key) holds the device it really runs on."""

from __future__ import annotations

from airlab.errors import AirlabError

DEVICES = ("cpu", "cuda", "mps", "auto")


def concrete_device(name: str) -> str:
    """``auto`` -> the best device here (cuda, else mps, else cpu); others are checked to exist.

    Called before planning, so a run's config (and so its run key) holds the device it really
    runs on: `--device auto` on a CPU machine gives the same runs as no flag at all.
    """
    name = (name or "").strip().lower()
    family = name.split(":", 1)[0]
    if family not in DEVICES or (":" in name and (family != "cuda"
                                                  or not name.split(":", 1)[1].isdigit())):
        raise AirlabError(f"--device '{name}' is not a device", "use cpu, cuda, cuda:N, mps "
                          "or auto")
    if family == "cpu":
        return "cpu"
    import torch

    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if family == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if family == "cuda":
        if not cuda:
            raise AirlabError(f"--device {name}: no CUDA GPU is available here (torch "
                              f"{torch.__version__})", "use --device cpu or auto, or install a "
                              "CUDA build of torch (see README)")
        if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
            raise AirlabError(f"--device {name}: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s)",
                              "count from cuda:0")
        return name
    if not mps:
        raise AirlabError("--device mps: no Apple GPU (MPS) is available here",
                          "use --device cpu or auto")
    return "mps"
