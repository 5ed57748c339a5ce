"""What changed between two answers: backends added, removed and whose
weight or backup role changed, by name.  Pure."""

from __future__ import annotations

from collections.abc import Sequence

from attrs import frozen

from rproxy.config import BackendConfig

__all__ = ["AnswerChange", "diff_backends"]


@frozen
class AnswerChange:
    """
    The difference between the backends in use and a new answer's, each a
    tuple of backend names (addresses) in the new answer's order.
    """

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    #: in both, with another weight or backup role.
    changed: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        """
        C{"added 10.0.0.3:80; removed 10.0.0.1:80"}, or C{"no change"}.
        """
        parts = [
            f"{word} {', '.join(names)}"
            for word, names in (
                ("added", self.added),
                ("removed", self.removed),
                ("changed", self.changed),
            )
            if names
        ]
        return "; ".join(parts) or "no change"


def diff_backends(
    old: Sequence[BackendConfig], new: Sequence[BackendConfig]
) -> AnswerChange:
    """
    How C{new} differs from C{old}; matched by name, as a reload matches
    backends.
    """
    before = {b.name: b for b in old}
    after = {b.name: b for b in new}
    return AnswerChange(
        added=tuple(b.name for b in new if b.name not in before),
        removed=tuple(b.name for b in old if b.name not in after),
        changed=tuple(
            b.name
            for b in new
            if b.name in before
            and (before[b.name].weight, before[b.name].backup) != (b.weight, b.backup)
        ),
    )
