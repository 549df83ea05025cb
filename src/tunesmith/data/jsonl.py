"""Reading JSONL: UTF-8 with or without a byte order mark, one JSON object per line.

No line is read whole without a bound (:data:`MAX_LINE_BYTES`, a setting). A file that is not
JSONL at all, or has a line over that cap, stops at its first bad line with
:class:`JsonlFormatError`, which names the 1-based line and quotes its start, in the words
OpenAI uses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

BOM = b"\xef\xbb\xbf"
MAX_LINE_BYTES = 8 << 20
"""The default cap on one line (``TUNESMITH_MAX_JSONL_LINE_BYTES``). The longest example a
128k-token context holds is about 0.5 MB of JSON at 4 bytes a token, under 2 MB were all of it
non-Latin text escaped as ``\\uXXXX``; 8 MiB leaves room beyond that for tools and system
prompts, while one line and what parsing it builds stay within tens of MB per validation."""
_QUOTE_CHARS = 40
_JSON_KINDS = {
    list: "an array",
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
}


class JsonlFormatError(Exception):
    def __init__(self, *, line: int, code: str, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.code = code
        self.message = message


def _hint(raw: bytes) -> str:
    """The line's start as it is in the file (not ``repr``: escaped quotes would not match the
    user's text); only characters that cannot be shown are escaped."""
    text = raw.decode("utf-8", errors="replace").strip()
    shown = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text[:_QUOTE_CHARS])
    return shown + ("…" if len(text) > _QUOTE_CHARS else "")


def _fail(number: int, raw: bytes, code: str, problem: str) -> JsonlFormatError:
    return JsonlFormatError(
        line=number,
        code=code,
        message=(
            "Expected file to have JSONL format, where every line is a JSON dictionary. "
            f'Line {number} {problem} (HINT: line starts with: "{_hint(raw)}").'
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
                f"is not valid UTF-8 (byte {bad.start + 1} of the line); save the file as UTF-8",
            ) from None
        # The parser sees one line as a whole document: its own "line 1" would contradict ours.
        problem = f"is not valid JSON ({exc.msg} at column {exc.colno}); fix the JSON there"
        raise _fail(number, raw, "invalid_json", problem) from None
    if not isinstance(value, dict):
        problem = (
            f"is not a dictionary but {_JSON_KINDS.get(type(value), 'a JSON value')}; "
            'write each example as one JSON object, {"messages": [...]}'
        )
        raise _fail(number, raw, "not_a_dictionary", problem)
    return value


def iter_lines(
    path: Path, chunk_bytes: int = 1 << 20, *, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[tuple[int, bytes]]:
    """Yields ``(1-based line number, raw line)`` with the BOM and line ending removed.

    Blank lines at the end of the file are ignored; a blank line before more data is an error.
    No line is read whole beyond ``max_line_bytes`` (not counting its line ending): a longer
    one raises :class:`JsonlFormatError` (``line_too_long``) once its first ``max_line_bytes + 2``
    bytes are read, so memory stays bounded however long the line is.
    """
    blank_at: int | None = None
    number = 0
    with path.open("rb", buffering=chunk_bytes) as handle:
        while True:
            # Room for the line ending (and, on line 1, a BOM): one byte more than a line of
            # the cap with its CRLF means the line is longer than the cap.
            raw = handle.readline(max_line_bytes + 2 + (len(BOM) if number == 0 else 0))
            if not raw:
                break
            number += 1
            if number == 1 and raw.startswith(BOM):
                raw = raw[len(BOM) :]
            line = raw.rstrip(b"\r\n")
            if len(line) > max_line_bytes:
                problem = (
                    f"is longer than {max_line_bytes} bytes, the most one line may have "
                    "(TUNESMITH_MAX_JSONL_LINE_BYTES); shorten or split the example"
                )
                raise _fail(number, line, "line_too_long", problem)
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
