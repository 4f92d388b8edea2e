"""What a stage computed, skipped and failed: the one report every stage and executor returns."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StageReport:
    """Per key (a method id, or ``<metric>/<map id>``): images computed, already stored, failed (with reasons),
    seconds; keys not applicable (with reasons); ``produced``: every map id the stage covered (variants too);
    ``corrupt_maps``: stored maps found failing their checksum while scoring (marked to be computed again);
    ``notices``: what the stage did that the user should know (a group started again with new parameters, values
    scored again because their map changed), one line each; ``code_changes``: groups whose results are reused
    although the files of their code changed since (said by :meth:`all_notices`, grouped by files)."""

    computed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, dict[str, str]] = field(default_factory=dict)
    not_applicable: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    produced: list[str] = field(default_factory=list)
    already: dict[str, int] = field(default_factory=dict)
    corrupt_maps: dict[str, list[str]] = field(default_factory=dict)  # map id -> images whose map failed its CRC
    notices: list[str] = field(default_factory=list)  # what the stage did that the user should know, one line each
    # group -> (stored results reused, files of its code changed since they were computed): said by all_notices()
    code_changes: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)

    def start(self, key: str, already: int = 0) -> None:
        self.computed.setdefault(key, 0)
        self.failed.setdefault(key, {})
        self.already[key] = self.already.get(key, 0) + already

    def lines(self) -> list[str]:
        return [f"  {key}: {n} computed, {self.already.get(key, 0)} already stored, {len(self.failed.get(key, {}))} "
                f"failed" + (f" ({self.seconds[key]:.1f} s)" if key in self.seconds else "")
                for key, n in self.computed.items()]

    def reused_after_change(self, group: str, n_done: int, files: tuple[str, ...]) -> None:
        """Record that ``n_done`` stored results of ``group`` are reused although ``files`` changed since."""
        add_code_change(self.code_changes, group, n_done, files)

    def all_notices(self) -> list[str]:
        """``notices``, then one line per set of changed code files (:func:`code_change_notices`)."""
        return self.notices + code_change_notices(self.code_changes)

    @property
    def ok(self) -> bool:
        return not any(self.failed.values())


def add_code_change(changes: dict[str, tuple[int, tuple[str, ...]]], group: str, n_done: int,
                    files: tuple[str, ...]) -> None:
    """Add ``n_done`` results of ``group`` reused although ``files`` changed to ``changes`` (group -> (results
    reused, files)), the input of :func:`code_change_notices`; nothing when either is empty."""
    if n_done and files:
        changes[group] = (changes.get(group, (0, ()))[0] + n_done, tuple(files))


def changed_code_files(stored: dict | None, code: dict) -> tuple[str, ...]:
    """The source files of ``code`` (:meth:`Parametrised.code`) that differ from those of ``stored``, the code that
    computed a group's results: module names, the defining module by its file name; a file imported by one of them
    and not the other counts as changed. A group stored by an older harness has no ``files``: only the defining
    file is compared; one without any digest (code defined in no file) gives nothing."""
    if not stored:
        return ()
    old, new = stored.get("files"), code.get("files")
    if old and new:
        shown = {code.get("module"): code.get("file"), stored.get("module"): stored.get("file")}
        return tuple(sorted(shown.get(m) or m for m in set(old) | set(new) if old.get(m) != new.get(m)))
    if stored.get("sha256") and code.get("sha256") and stored["sha256"] != code["sha256"]:
        return (stored.get("file") or code.get("file") or "its file",)
    return ()


def code_change_notices(changes: dict[str, tuple[int, tuple[str, ...]]], most: int = 4) -> list[str]:
    """One line per set of changed files: the groups whose stored results were reused although those files have
    changed since they were computed, with the count (``changes``: group -> (results reused, files)). Their
    ``version`` has not changed, so they are reused: the harness cannot tell whether the change alters them."""
    by_files: dict[tuple[str, ...], list[tuple[str, int]]] = {}
    for group, (n, files) in changes.items():
        by_files.setdefault(tuple(files), []).append((group, n))
    lines = []
    for files, groups in sorted(by_files.items()):
        names = ", ".join(files[:most]) + (f" and {len(files) - most} more" if len(files) > most else "")
        shown = ", ".join(g for g, _ in groups[:most]) + (f" and {len(groups) - most} more group(s)"
                                                           if len(groups) > most else "")
        their = "its version has" if len(groups) == 1 else "their versions have"
        lines.append(f"{shown}: {sum(n for _, n in groups)} stored result(s) reused, computed before a change to "
                     f"{names}; {their} not changed. If the change alters the results, raise the class's `version` "
                     "or add --recompute with its id (or use another --out).")
    return lines
