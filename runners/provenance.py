"""What produced a result: package versions, git commit, device, protocol, parameters and seeds."""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

from benchmark.models import tv_compat

PACKAGES = ("torch", "torchvision", "captum", "torchcam", "numpy", "pandas", "h5py", "matplotlib", "pillow",
            "scikit-image", "efficientnet-lite-pytorch")
REPO = Path(__file__).resolve().parent.parent


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + ("+dirty" if dirty else "")) if sha else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict:
    return {"versions": package_versions(), "git_commit": git_commit(), "device": device_name(device),
            "torchvision_schema_patch": tv_compat.patched, "command": " ".join(sys.argv),
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
