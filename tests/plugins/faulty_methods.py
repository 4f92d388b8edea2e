"""Test plugin for the scale-out tests: maps that are constant or infinite on one image, and a method whose
process SIGKILLs itself once (a worker dying mid-task)."""

import gc
import os
import signal

from benchmark.core.writer import BackgroundWriter
from methods import Method, MethodError, register_method

_CALLS: dict[str, int] = {}


@register_method
class ConstantOnCoffee(Method):
    """The image's mean-channel map, but a constant map for the coffee photo (clean top-1: espresso, 967)."""

    id = "const_on_coffee"
    family = "plugin"
    citation = "test plugin"

    def explain(self, model, x, targets):
        maps = x.mean(1).clone()
        maps[targets == 967] = 0.5
        return maps


@register_method
class InfOnCoffee(Method):
    id = "inf_on_coffee"
    family = "plugin"
    citation = "test plugin"

    def explain(self, model, x, targets):
        maps = x.mean(1).clone()
        maps[targets == 967, 0, 0] = float("inf")
        return maps


@register_method
class KillOnce(Method):
    """The mean-channel map. When $KILL_ONCE_MARKER names a file that does not exist yet, the second call in a
    process waits until the maps of the first call are stored (every live background writer idle), writes the
    process id to that file and SIGKILLs the process (the worker dies mid-task, once, with exactly one image
    stored)."""

    id = "kill_once"
    family = "plugin"
    citation = "test plugin"

    def explain(self, model, x, targets):
        marker = os.environ.get("KILL_ONCE_MARKER")
        if marker:
            _CALLS[marker] = _CALLS.get(marker, 0) + 1
            if _CALLS[marker] >= 2 and not os.path.exists(marker):
                for writer in [o for o in gc.get_objects() if isinstance(o, BackgroundWriter)]:
                    writer.wait()
                with open(marker, "w") as f:
                    f.write(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        return x.mean(1).abs()


@register_method
class FailsWhenAsked(Method):
    """The mean-channel map, or a MethodError on every image while its parameter ``fail`` is true (parameters
    that pass their checks and still fail on every image, as too large a setting running out of memory would)."""

    id = "fails_when_asked"
    family = "plugin"
    citation = "test plugin"
    paper_params = {"fail": True}

    def explain(self, model, x, targets):
        if self.params["fail"]:
            raise MethodError("asked to fail")
        return x.mean(1).abs()
