"""From a validated training file to token ids and labels.

:func:`tokenize_unit` is the one function that turns a conversation into what the model is trained
on: ``input_ids`` from the model's own chat template, and ``labels`` that copy the ids on the
assistant tokens (trained assistant turns, their end-of-turn token included) and hold ``IGNORE``
everywhere else. The assistant tokens come from :meth:`ChatFormat.render` spans, the same spans
the validation report counts, so the report's assistant-token figures and the training loss agree
token for token.

An example longer than the sequence limit is cut from the end (the validation report warns about
it), at :func:`~tunesmith.data.token_spans.example_trained_tokens` tokens: what is kept is what
the example adds to a job's trained tokens each epoch, as the report's estimate counts it. An
example left with nothing to train, whether by ``weight: 0`` on every answer or by the cut, is
refused with its line number: it would only dilute the loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.chat_format import ChatFormat, TemplateError
from tunesmith.data.jsonl import MAX_LINE_BYTES, JsonlFormatError, iter_lines, parse_line
from tunesmith.data.rules import ChatUnit, TextUnit, check_example, reserved_pattern
from tunesmith.data.token_spans import example_trained_tokens

IGNORE = -100
"""The label of a token that carries no loss (PyTorch's ``cross_entropy`` ``ignore_index``)."""


class ExampleError(ValueError):
    """An example that cannot be trained on; ``line`` is its 1-based line in the file."""

    def __init__(self, line: int, code: str, message: str) -> None:
        super().__init__(f"Line {line}: {message}")
        self.line = line
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TokenizedExample:
    line: int
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    """``input_ids[i]`` where token ``i`` is an assistant token, else :data:`IGNORE`; not
    shifted."""
    truncated: bool = False

    @property
    def n_assistant(self) -> int:
        """Assistant tokens, which carry the loss; the first token has no predecessor to predict
        it from."""
        return sum(1 for label in self.labels[1:] if label != IGNORE)


def tokenize_unit(
    chat_format: ChatFormat, unit: ChatUnit | TextUnit, *, line: int, max_length: int
) -> TokenizedExample:
    """Renders one example and marks its assistant tokens; cut to ``max_length`` tokens."""
    try:
        rendered = chat_format.render_unit(unit)
    except TemplateError as exc:
        raise ExampleError(line, "template_render_failed", exc.message) from None
    (encoding,) = chat_format.encode_batch([rendered.text])
    ids = list(encoding.ids)
    labels = [IGNORE] * len(ids)
    for answer in ChatFormat.assistant_token_ranges(encoding, rendered.spans):
        for i in answer:
            labels[i] = ids[i]
    if not any(label != IGNORE for label in labels[1:]):
        raise ExampleError(
            line,
            "nothing_to_train",
            "the example has no assistant tokens to train on (every assistant message has "
            "weight 0, or there is none); give at least one assistant message weight 1.",
        )
    kept = example_trained_tokens(len(ids), max_length)
    truncated = kept < len(ids)
    if truncated:
        ids, labels = ids[:kept], labels[:kept]
        if not any(label != IGNORE for label in labels[1:]):
            raise ExampleError(
                line,
                "nothing_to_train_after_truncation",
                f"the example is {len(encoding.ids)} tokens long and its first assistant token "
                f"comes after the sequence limit of {max_length}; shorten the conversation "
                "before the answer, or raise max_seq_length.",
            )
    return TokenizedExample(line, tuple(ids), tuple(labels), truncated)


def load_examples(
    path: Path, chat_format: ChatFormat, *, max_length: int, max_line_bytes: int = MAX_LINE_BYTES
) -> list[TokenizedExample]:
    """Every example of a chat or prompt/completion file, tokenised.

    Raises :class:`ExampleError` on the first line that cannot be trained on: files are validated
    with every problem listed before a job starts, so this is the last line of defence.
    """
    return list(_iter_examples(path, chat_format, max_length, max_line_bytes))


def _iter_examples(
    path: Path, chat_format: ChatFormat, max_length: int, max_line_bytes: int
) -> Iterator[TokenizedExample]:
    reserved = reserved_pattern(chat_format.special_tokens)
    try:
        for number, raw in iter_lines(path, max_line_bytes=max_line_bytes):
            checked = check_example(parse_line(number, raw), line=number, reserved=reserved)
            if checked.format == "preference":
                raise ExampleError(
                    number,
                    "unsupported_format",
                    "preference (DPO) examples cannot be used for supervised training; use "
                    "chat examples with 'messages'.",
                )
            if checked.errors or checked.unit is None:
                first = checked.errors[0]
                where = f"{first.field}: " if first.field else ""
                raise ExampleError(number, first.code, where + first.message)
            yield tokenize_unit(chat_format, checked.unit, line=number, max_length=max_length)
    except JsonlFormatError as exc:
        raise ExampleError(exc.line, exc.code, exc.message) from None
