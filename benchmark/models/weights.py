"""Weights files: loaded as plain tensor state dicts (no pickled code runs), and identified by their content."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path

import torch

from benchmark.core.atomic import sha256_file

from .bundle import ModelError


def load_state_dict(path: str) -> dict:
    """Tensors only (``weights_only=True``): a file with pickled code is refused, never executed."""
    if not Path(path).is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ModelError(f"cannot load weights from {path} as a plain state dict ({type(err).__name__}: {err}). "
                         "Only tensor state dicts are accepted: no pickled code is executed.") from err
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ModelError(f"{path} does not hold a state dict")
    return OrderedDict((k.removeprefix("module."), v) for k, v in sd.items())



def weights_file_sha256(path: str) -> str:
    """sha256 of a weights file's bytes."""
    return sha256_file(path)


def state_dict_sha256(net: torch.nn.Module) -> str:
    """sha256 of a network's parameters and buffers: every tensor of its state dict, in key order, as its name,
    dtype, shape and CPU bytes. The identity of weights that come from no file (``--weights random``)."""
    h = hashlib.sha256()
    for key, t in sorted(net.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"{key}:{t.dtype}:{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def weights_identity(net: torch.nn.Module, path: str | None) -> str:
    """The sha256 that identifies the weights of ``net``: of its file when it was loaded from one, else of its
    tensors. Stores record it in their protocol, so results of other weights at the same path are never mixed."""
    return weights_file_sha256(path) if path else state_dict_sha256(net)
