"""The cost of a piece of work in model passes (the unit of the cost model, the dry run and ``perf``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Cost:
    """Model passes per image: ``forward`` forward-only passes and ``backward`` forward+backward passes."""

    forward: float = 0.0
    backward: float = 0.0

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.forward + other.forward, self.backward + other.backward)

    def __mul__(self, k: float) -> "Cost":
        return Cost(self.forward * k, self.backward * k)

    __rmul__ = __mul__

    @property
    def passes(self) -> float:
        return self.forward + self.backward
