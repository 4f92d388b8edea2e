"""Each image decoded, preprocessed and moved to the device once per stage; derived inputs computed once.

:class:`ImageCache` keeps the normalised images ``[3,H,W]`` (and named derived tensors, e.g. the blurred
insertion/deletion baseline that both curves share) on the device, up to a byte budget. It is scan-resistant:
once the budget is reached it stops admitting, so a stage that reads the run's images once per (metric, method)
keeps hitting the first ``budget / image size`` images instead of evicting each before its next use.

:meth:`ImageCache.prefetch` decodes the next chunk on a background thread (PIL releases the GIL while decoding)
while the model works on the current one; on CUDA the decoded batch is pinned and copied asynchronously.

Counters (``decoded``, ``derived``) make "once per image" testable.
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

import torch


class ImageCache:
    def __init__(self, load: Callable[[list[int]], torch.Tensor], device: torch.device, budget_bytes: int):
        """``load(indices) -> [B,3,H,W]`` normalised images on the CPU."""
        self._load = load
        self.device = device
        self.budget = int(budget_bytes)
        self.used = 0
        self._images: dict[int, torch.Tensor] = {}
        self._derived: dict[tuple[str, int], torch.Tensor] = {}
        self._pending: dict[tuple[int, ...], Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-prefetch")
        self.counters: Counter = Counter()

    # ------------------------------------------------------------------------------------------ images
    def _admit(self, t: torch.Tensor) -> bool:
        size = t.numel() * t.element_size()
        if self.used + size > self.budget:
            return False
        self.used += size
        return True

    def _decode(self, indices: list[int]) -> torch.Tensor:
        x = self._load(indices)
        if self.device.type == "cuda":
            x = x.pin_memory()
        return x

    def prefetch(self, indices: list[int]) -> None:
        """Start decoding the images of ``indices`` not cached yet on the background thread."""
        todo = tuple(i for i in indices if i not in self._images)
        if todo and todo not in self._pending:
            self._pending[todo] = self._pool.submit(self._decode, list(todo))

    def images(self, indices: list[int]) -> torch.Tensor:
        """[B,3,H,W] normalised images on the device, in the order of ``indices``."""
        todo = [i for i in dict.fromkeys(indices) if i not in self._images]
        fresh: dict[int, torch.Tensor] = {}
        if todo:
            fut = self._pending.pop(tuple(todo), None)
            x = fut.result() if fut is not None else self._decode(todo)
            x = x.to(self.device, non_blocking=True)
            self.counters["decoded"] += len(todo)
            for k, i in enumerate(todo):
                fresh[i] = x[k]
                if self._admit(x[k]):
                    self._images[i] = x[k]
        return torch.stack([self._images[i] if i in self._images else fresh[i] for i in indices])

    # ------------------------------------------------------------------------------------------ derived
    def derived(self, key: str, indices: list[int], x: torch.Tensor,
                make: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``make(x)`` per image, computed once per (key, image): e.g. the blurred baseline of insertion and
        deletion. ``make`` must act on each image independently (it may be called on any subset)."""
        missing = [k for k, i in enumerate(indices) if (key, i) not in self._derived]
        fresh: dict[int, torch.Tensor] = {}
        if missing:
            out = make(x[missing])
            self.counters[f"derived:{key}"] += len(missing)
            for j, k in enumerate(missing):
                fresh[indices[k]] = out[j]
                if self._admit(out[j]):
                    self._derived[(key, indices[k])] = out[j]
        return torch.stack([self._derived.get((key, i), fresh.get(i)) for i in indices])

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._images.clear()
        self._derived.clear()
        self._pending.clear()
        self.used = 0
