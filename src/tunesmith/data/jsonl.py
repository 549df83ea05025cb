"""Reading JSONL: UTF-8 with or without a byte order mark, one JSON object per line.

A file that is not JSONL at all stops at its first bad line with :class:`JsonlFormatError`,
which names the 1-based line and quotes its start, in the words OpenAI uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

BOM = b"\xef\xbb\xbf"
_QUOTE_CHARS = 40


class JsonlFormatError(Exception):
    def __init__(self, *, line: int, code: str, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.code = code
        self.message = message


def _hint(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    return text[:_QUOTE_CHARS] + ("…" if len(text) > _QUOTE_CHARS else "")


def _fail(number: int, raw: bytes, code: str, problem: str) -> JsonlFormatError:
    return JsonlFormatError(
        line=number,
        code=code,
        message=(
            "Expected file to have JSONL format, where every line is a JSON dictionary. "
            f"Line {number} {problem} (HINT: line starts with: {_hint(raw)!r})."
        ),
    )


def parse_line(number: int, raw: bytes) -> dict[str, Any]:
    """One line (without its newline) to a dict, or :class:`JsonlFormatError`."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise _fail(
                number,
                raw,
                "invalid_utf8",
                f"is not valid UTF-8 (byte {bad.start + 1}); save the file as UTF-8",
            ) from None
        raise _fail(number, raw, "invalid_json", f"is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        kind = type(value).__name__.replace("NoneType", "null")
        raise _fail(number, raw, "not_a_dictionary", f"is not a dictionary but a JSON {kind}")
    return value


def iter_lines(path: Path, chunk_bytes: int = 1 << 20) -> Iterator[tuple[int, bytes]]:
    """Yields ``(1-based line number, raw line)`` with the BOM and line ending removed.

    Blank lines at the end of the file are ignored; a blank line before more data is an error.
    """
    blank_at: int | None = None
    number = 0
    with path.open("rb", buffering=chunk_bytes) as handle:
        for raw in handle:
            number += 1
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            line = raw.rstrip(b"\r\n")
            if not line.strip():
                blank_at = blank_at or number
                continue
            if blank_at is not None:
                raise JsonlFormatError(
                    line=blank_at,
                    code="blank_line",
                    message=(
                        "Expected file to have JSONL format, where every line is a JSON "
                        f"dictionary. Line {blank_at} is empty; remove blank lines."
                    ),
                )
            yield number, line
    if number == 0 or blank_at == 1:
        raise JsonlFormatError(
            line=1, code="empty_file", message="The file is empty; it needs one example per line."
        )
