"""The whole-file check: every rule, every line, all problems at once, with token statistics.

One streaming pass over the file: each line is parsed (:mod:`.jsonl`), checked
(:mod:`.rules`) and rendered (:mod:`.chat_format`); rendered examples are tokenised in batches on
a background thread while the next batch is parsed, so validation costs little beyond the
tokenizer itself; text that examples repeat, such as a shared system prompt, is tokenised once
(:meth:`~tunesmith.data.chat_format.ChatFormat.token_counts`). Memory stays bounded: per-example
figures are small integer arrays.

A file that is not JSONL at all raises :class:`~tunesmith.data.jsonl.JsonlFormatError` (the
upload answers 400); everything else ends up in the :class:`ValidationReport`.
"""

from __future__ import annotations

from array import array
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.data.chat_format import ChatFormat, TemplateError
from tunesmith.data.issues import Issue, IssueList
from tunesmith.data.jsonl import MAX_LINE_BYTES, iter_lines, parse_line
from tunesmith.data.rules import ChatUnit, Format, TextUnit, check_example, reserved_pattern
from tunesmith.data.stats import TokenStats
from tunesmith.data.token_spans import Rendered

MIN_EXAMPLES = 10  # OpenAI's minimum for a training file
BATCH = 512  # examples tokenised per call: large enough to use every core, small for memory


@dataclass(slots=True)
class ValidationReport:
    format: Format | None
    n_examples: int
    errors: IssueList
    warnings: IssueList
    statistics: dict[str, Any] | None
    tokenizer: str | None
    context_length: int | None

    @property
    def valid(self) -> bool:
        return self.errors.total == 0

    def summary(self) -> str:
        """One line for ``status_details``: the count and the first error, located."""
        if self.valid:
            return f"{self.n_examples} examples, no errors"
        first = self.errors.items[0].located() if self.errors.items else ""
        return f"{self.errors.total} error(s); first: {first}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "format": self.format,
            "n_examples": self.n_examples,
            "error_count": self.errors.total,
            "errors": [i.to_dict() for i in self.errors.items],
            "warning_count": self.warnings.total,
            "warnings": [i.to_dict() for i in self.warnings.items],
            "statistics": self.statistics,
            "tokenizer": self.tokenizer,
            "context_length": self.context_length,
        }


@dataclass(slots=True)
class _Pending:
    """Rendered examples waiting for the tokenizer."""

    lines: list[int] = field(default_factory=list)
    messages: list[int] = field(default_factory=list)
    rendered: list[Rendered] = field(default_factory=list)


def validate_file(
    path: Path,
    chat_format: ChatFormat | None,
    *,
    max_issues: int = 100,
    min_examples: int = MIN_EXAMPLES,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ValidationReport:
    """Checks a training file. ``chat_format=None`` skips everything that needs a tokenizer.
    A line over ``max_line_bytes`` raises :class:`~tunesmith.data.jsonl.JsonlFormatError`."""
    errors, warnings = IssueList(max_issues), IssueList(max_issues)
    reserved = reserved_pattern(chat_format.special_tokens) if chat_format else None
    stats = TokenStats(chat_format.context_length if chat_format else 0)
    file_format: Format | None = None
    first_line_of: dict[Format, int] = {}
    hashes, hash_lines = array("q"), array("i")
    n_examples = 0
    pending = _Pending()

    def tokenised(batch: _Pending, counts: list[tuple[int, int]]) -> None:
        assert chat_format is not None
        for line, n_messages, (total, assistant) in zip(
            batch.lines, batch.messages, counts, strict=True
        ):
            stats.add(messages=n_messages, tokens=total, assistant=assistant)
            if total > chat_format.context_length:
                warnings.add(
                    Issue(
                        "example_too_long",
                        f"the example is {total} tokens long, over the context length of "
                        f"{chat_format.context_length}; tokens past it will be truncated from "
                        "the end. Shorten or split it.",
                        line,
                    )
                )

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize") as pool:
        in_flight: tuple[_Pending, Future[list[tuple[int, int]]]] | None = None

        def flush() -> None:
            nonlocal pending, in_flight
            if in_flight is not None:
                tokenised(in_flight[0], in_flight[1].result())
                in_flight = None
            if pending.rendered and chat_format is not None:
                in_flight = (pending, pool.submit(chat_format.token_counts, pending.rendered))
                pending = _Pending()

        for number, raw in iter_lines(path, max_line_bytes=max_line_bytes):
            obj = parse_line(number, raw)
            n_examples += 1
            hashes.append(hash(raw.strip()))
            hash_lines.append(number)
            checked = check_example(obj, line=number, reserved=reserved)
            fmt = checked.format
            if fmt is not None:
                first_line_of.setdefault(fmt, number)
                if file_format is None:
                    file_format = fmt
                elif fmt != file_format:
                    errors.add(
                        Issue(
                            "mixed_formats",
                            f"this is a {fmt} example but the file started with {file_format} "
                            f"examples (line {first_line_of[file_format]}); use one format "
                            "per file.",
                            number,
                        )
                    )
                    continue
            errors.extend(checked.errors)
            warnings.extend(checked.warnings)
            if checked.unit is None or chat_format is None:
                continue
            try:
                rendered = chat_format.render_unit(checked.unit)
            except TemplateError as exc:
                index, where = _message_location(checked.unit, fmt, exc.message_index)
                errors.add(Issue("template_render_failed", exc.message, number, index, where))
                continue
            pending.lines.append(number)
            pending.messages.append(checked.message_count)
            pending.rendered.append(rendered)
            if len(pending.rendered) >= BATCH:
                flush()
        flush()
        flush()

    _report_duplicates(hashes, hash_lines, warnings)
    if n_examples < min_examples:
        errors.add(
            Issue(
                "invalid_n_examples",
                f"the file has {n_examples} example(s), but must have at least {min_examples}; "
                "add more examples.",
            )
        )
    return ValidationReport(
        format=file_format,
        n_examples=n_examples,
        errors=errors,
        warnings=warnings,
        statistics=stats.summary(n_examples) if chat_format and stats.tokens else None,
        tokenizer=chat_format.name if chat_format else None,
        context_length=chat_format.context_length if chat_format else None,
    )


def _message_location(
    unit: ChatUnit | TextUnit, fmt: Format | None, index: int | None
) -> tuple[int | None, str | None]:
    """``(message index, field)`` in the file's terms of a message of a rendered unit."""
    if index is None or not isinstance(unit, ChatUnit):
        return None, None
    if fmt == "preference":  # the unit is input.messages + [the preferred answer]
        if index == len(unit.messages) - 1:
            return 0, "preferred_output[0]"
        return index, f"input.messages[{index}]"
    return index, f"messages[{index}]"


def _report_duplicates(hashes: array[int], lines: array[int], warnings: IssueList) -> None:
    """Warns once for each line that repeats an earlier line byte for byte."""
    if len(hashes) < 2:
        return
    keys = np.frombuffer(hashes, dtype=np.int64)
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    same = np.flatnonzero(ordered[1:] == ordered[:-1]) + 1
    if not len(same):
        return
    numbers = np.frombuffer(lines, dtype=np.int32)
    group_start = np.zeros(len(keys), dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    group_start[starts] = starts
    group_start = np.maximum.accumulate(group_start)
    found = sorted((int(numbers[order[i]]), int(numbers[order[group_start[i]]])) for i in same)
    for line, original in found:
        warnings.add(
            Issue(
                "duplicate_example",
                f"this example repeats line {original} exactly, so training weighs it twice; "
                "remove the copy unless that is intended.",
                line,
            )
        )
