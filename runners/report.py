"""What a stage computed, skipped and failed: the one report every stage and executor returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageReport:
    """Per key (a method id, or ``<metric>/<map id>``): images computed, already stored, failed (with reasons),
    seconds; keys not applicable (with reasons); ``produced``: every map id the stage covered (variants too);
    ``corrupt_maps``: stored maps found failing their checksum while scoring (marked to be computed again);
    ``restarted``: groups whose parameters changed while they held no finished map, started again."""

    computed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    produced: list[str] = field(default_factory=list)
    already: dict[str, int] = field(default_factory=dict)
    corrupt_maps: dict[str, list[str]] = field(default_factory=dict)  # map id -> images whose map failed its CRC
    restarted: list[str] = field(default_factory=list)  # groups that held no finished row, started again

    def start(self, key: str, already: int = 0) -> None:
        self.computed.setdefault(key, 0)
        self.failed.setdefault(key, {})
        self.already[key] = self.already.get(key, 0) + already

    def lines(self) -> list[str]:
        return [f"  {key}: {n} computed, {self.already.get(key, 0)} already stored, {len(self.failed.get(key, {}))} "
                f"failed" + (f" ({self.seconds[key]:.1f} s)" if key in self.seconds else "")
                for key, n in self.computed.items()]

    @property
    def ok(self) -> bool:
        return not any(self.failed.values())
