"""One problem found in a training file, and the bounded list that collects them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Issue:
    """A rule violation. ``line`` is 1-based, ``message_index`` 0-based (as in the JSON)."""

    code: str
    message: str
    line: int | None = None
    message_index: int | None = None
    field: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def located(self) -> str:
        """``"Line 4, messages[2].role: …"``: the message prefixed with where it happened."""
        where = []
        if self.line is not None:
            where.append(f"Line {self.line}")
        if self.field is not None:
            where.append(self.field)
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass(slots=True)
class IssueList:
    """Keeps the first ``cap`` issues and counts all of them."""

    cap: int
    items: list[Issue] = field(default_factory=list)
    total: int = 0

    def add(self, issue: Issue) -> None:
        self.total += 1
        if len(self.items) < self.cap:
            self.items.append(issue)

    def extend(self, issues: list[Issue]) -> None:
        for issue in issues:
            self.add(issue)
