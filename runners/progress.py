"""Progress where the time goes: in model passes, counted as they happen.

A forward pre-hook on the network counts the inputs of every pass (``benchmark.core.hooks``): a bar per method or
metric advances by them towards the passes its cost model declares (``Method.cost``, ``Metric.cost``), so a single
Poly-CAM image shows its thousands of masked passes going by, with tqdm's rate and ETA; a bar for the whole run
(``run``) advances by the same passes towards the run's total. A pass with a backward pass counts once (its
forward), as the cost model counts it. Declared costs can be upper bounds (Poly-CAM skips constant channels): a bar
is completed when its item ends. Work without model passes (a plugin declaring none, imported maps) shows images.
"""

from __future__ import annotations

import contextlib

from tqdm.auto import tqdm

from benchmark.core.hooks import Hooks


class PassProgress:
    """The pass-counting hook of one network and the bars it advances (none when ``enabled`` is False)."""

    def __init__(self, net, enabled: bool = True):
        self.net, self.enabled = net, enabled
        self.run_bar = None
        self.item_bar = None

    def _count(self, _module, inputs) -> None:
        n = int(inputs[0].shape[0]) if inputs and hasattr(inputs[0], "shape") else 0
        for bar in (self.item_bar, self.run_bar):
            if bar is not None:
                bar.update(n)

    @contextlib.contextmanager
    def run(self, total_passes: float, desc: str = "run"):
        """The bar of a whole command (maps, metrics, sanity): ``total_passes`` from the cost model."""
        if not self.enabled or total_passes <= 0:
            yield None
            return
        self.run_bar = tqdm(total=int(total_passes), desc=desc, unit="pass", unit_scale=True, dynamic_ncols=True,
                            position=0, leave=True)
        try:
            yield self.run_bar
        finally:
            self.run_bar.close()
            self.run_bar = None

    def advance_run(self, passes: float) -> None:
        """Passes done on another network (the sanity check's randomised copies), as their cost model counts them."""
        if self.run_bar is not None:
            self.run_bar.update(int(passes))

    @contextlib.contextmanager
    def item(self, desc: str, passes: float, images: int, net=None):
        """The bar of one method or metric: ``passes`` declared for its ``images`` (images when it runs none),
        counted on ``net`` (default: the run's network; the sanity check's randomised copy counts the same way)."""
        if not self.enabled:
            yield _NoBar()
            return
        counted = passes > 0
        bar = tqdm(total=int(passes) if counted else images, desc=desc, unit="pass" if counted else "img",
                   unit_scale=counted, dynamic_ncols=True, position=1 if self.run_bar is not None else 0,
                   leave=self.run_bar is None)
        self.item_bar = bar if counted else None
        done = _Images(bar, images, counted)
        try:
            with Hooks() as hooks:
                if counted:
                    hooks.pre_forward(net if net is not None else self.net, self._count)
                yield done
        finally:
            self.item_bar = None
            if counted and bar.n < bar.total:
                bar.update(bar.total - bar.n)  # a declared upper bound: the item is over
            bar.close()


class _Images:
    """``images(n)``: n more images done (the postfix of a pass bar, the count of an image bar)."""

    def __init__(self, bar, total: int, counted: bool):
        self.bar, self.total, self.counted, self.n = bar, total, counted, 0

    def images(self, n: int) -> None:
        self.n += n
        if self.counted:
            self.bar.set_postfix_str(f"{self.n}/{self.total} img", refresh=False)
        else:
            self.bar.update(n)


class _NoBar:
    def images(self, n: int) -> None:
        pass
