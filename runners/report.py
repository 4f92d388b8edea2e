"""What a stage computed, skipped and failed: the one report every stage and executor returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageReport:
    """Per key (a method id, or ``<metric>/<map id>``): images computed, already stored, failed (with reasons),
    seconds; keys not applicable (with reasons); ``produced``: every map id the stage covered (variants too);
    ``corrupt_maps``: stored maps found failing their checksum while scoring (marked to be computed again);
    ``notices``: what the stage did that the user should know (a group started again with new parameters, values
    scored again because their map changed), one line each."""

    computed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    produced: list[str] = field(default_factory=list)
    already: dict[str, int] = field(default_factory=dict)
    corrupt_maps: dict[str, list[str]] = field(default_factory=dict)  # map id -> images whose map failed its CRC
    notices: list[str] = field(default_factory=list)  # what the stage did that the user should know, one line each

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


def code_change_notice(group: str, stored: dict | None, code: dict, n_done: int) -> str | None:
    """A line when ``n_done`` results of ``group``, stored by code ``stored`` (:meth:`Parametrised.code`), are reused
    although the file of that code has changed since (same version: the harness cannot tell whether the change
    alters them); None otherwise."""
    if not n_done or not stored or not stored.get("sha256") or not code.get("sha256"):
        return None
    if stored["sha256"] == code["sha256"]:
        return None
    return (f"{group}: {n_done} stored result(s) reused, computed when {stored.get('file')} had sha256 "
            f"{stored['sha256'][:12]}; it has changed since ({code['sha256'][:12]}), its version ({code['version']}) "
            "has not. If the change alters the results, raise the class's `version` (or use another --out).")
