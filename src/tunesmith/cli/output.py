"""What the CLI prints: readable tables by default, JSON with ``--json`` (for scripts)."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Sequence
from typing import Any

Column = tuple[str, str]
"""A table column: its header and the key of the value in each row."""


def plain(value: Any) -> Any:
    """A pydantic model (the openai client's objects) or anything JSON-able, as plain data."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", exclude_unset=False)
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def emit(rows: Any, columns: Sequence[Column], *, as_json: bool) -> None:
    """Prints one object or a list of them: JSON, or a table of ``columns``."""
    data = plain(rows)
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return
    table(data if isinstance(data, list) else [data], columns)


def table(rows: list[dict[str, Any]], columns: Sequence[Column]) -> None:
    if not rows:
        print("(none)")
        return
    cells = [[cell(row, key) for _, key in columns] for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _) in enumerate(columns)]
    print("  ".join(h.upper().ljust(w) for (h, _), w in zip(columns, widths, strict=True)).rstrip())
    for line in cells:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())


def cell(row: dict[str, Any], key: str) -> str:
    """A value for a table: nested keys with dots, timestamps (``*_at``, ``created``) as UTC."""
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or (value == 0 and (key.endswith("_at") or key == "created")):
        return "-"
    if isinstance(value, int) and (key.endswith("_at") or key == "created") and value > 10**9:
        moment = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def fail(message: str) -> int:
    print(f"tunesmith: {message}", file=sys.stderr)
    return 1
