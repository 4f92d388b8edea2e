"""Progress where the time goes: in model passes, counted as they happen.

A forward pre-hook on the network counts the inputs of every pass (``benchmark.core.hooks``): a bar per method or
metric advances by them towards the passes its cost model declares (``Method.cost``, ``Metric.cost``), so a single
Poly-CAM image shows its thousands of masked passes going by, with tqdm's rate and ETA; a bar for the whole run
(``run``) advances by the same passes towards the run's total. A pass with a backward pass counts once (its
forward), as the cost model counts it. Declared costs can be upper bounds (Poly-CAM skips constant channels): a bar
is completed when its item ends. Work without model passes (a plugin declaring none, imported maps) shows images.

The run's total is the plan of the work left (:func:`runners.costs.plan` with ``left``), item by item: when an item
is over (:meth:`PassProgress.settle`), the passes it was planned and did not run (an upper bound, images that
failed) leave the total, so the bar ends at 100 % and its ETA is the rate over the passes truly left.
"""

from __future__ import annotations

import contextlib

from tqdm.auto import tqdm

from benchmark.core.hooks import Hooks


class PassProgress:
    """The pass-counting hook of one network and the bars it advances (none when ``enabled`` is False).
    ``get_net``: a function giving the network, called when an item first needs it (settling an item loads no
    model)."""

    def __init__(self, get_net, enabled: bool = True):
        self._get_net, self.enabled = get_net, enabled
        self.run_bar = None
        self.item_bar = None
        self.item_key: str | None = None
        self.planned: dict[str, float] = {}  # passes still planned per item key of the run
        self.used: dict[str, float] = {}  # passes counted per item key

    @property
    def net(self):
        return self._get_net()

    def _count(self, _module, inputs) -> None:
        n = int(inputs[0].shape[0]) if inputs and hasattr(inputs[0], "shape") else 0
        if self.item_key is not None:
            self.used[self.item_key] = self.used.get(self.item_key, 0) + n
        for bar in (self.item_bar, self.run_bar):
            if bar is not None:
                bar.update(n)

    @contextlib.contextmanager
    def run(self, planned: dict[str, float], desc: str = "run"):
        """The bar of a whole command (maps, metrics, sanity): ``planned`` passes per item key (``clean``,
        ``maps/<method>``, ``<metric>/<map id>``, ``sanity``) from the cost model."""
        total = sum(planned.values())
        if not self.enabled or total <= 0:
            yield None
            return
        self.planned, self.used = dict(planned), {}
        self.run_bar = tqdm(total=int(total), desc=desc, unit="pass", unit_scale=True, dynamic_ncols=True,
                            position=0, leave=True)
        try:
            yield self.run_bar
        finally:
            self.run_bar.close()
            self.run_bar = None
            self.planned, self.used = {}, {}

    def settle(self, key: str) -> None:
        """Item ``key`` is over: the run's total becomes what it has run instead of what it was planned (once per
        key; a key not planned, or a second call, changes nothing)."""
        if self.run_bar is None or key not in self.planned:
            return
        rest = self.planned.pop(key) - self.used.pop(key, 0)
        bar = self.run_bar
        bar.total = max(bar.n, bar.total - int(round(rest)))
        bar.refresh()

    def advance_run(self, passes: float, key: str | None = None) -> None:
        """Passes done on another network (the sanity check's randomised copies), as their cost model counts them,
        for item ``key``."""
        if key is not None:
            self.used[key] = self.used.get(key, 0) + passes
        if self.run_bar is not None:
            self.run_bar.update(int(passes))

    @contextlib.contextmanager
    def item(self, desc: str, passes: float, images: int, net=None, key: str | None = None):
        """The bar of one method or metric (item ``key`` of the run's plan): ``passes`` declared for its ``images``
        (images when it runs none), counted on ``net`` (default: the run's network)."""
        if not self.enabled:
            yield _NoBar()
            return
        self.item_key = key
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
            self.item_bar, self.item_key = None, None
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
