"""From a validated training file to token ids and labels.

:func:`tokenize_unit` is the one function that turns a conversation into what the model is trained
on: ``input_ids`` from the model's own chat template, and ``labels`` that copy the ids on trained
tokens (assistant turns, their end-of-turn token included) and hold ``IGNORE`` everywhere else.
The trained tokens come from :meth:`ChatFormat.render` spans, the same spans the validation report
counts, so the report's trained-token figures and the training loss agree token for token.

An example longer than the sequence limit is cut from the end (the validation report warns about
it); an example left with nothing to train, whether by ``weight: 0`` on every answer or by the cut,
is refused with its line number: it would only dilute the loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunesmith.data.chat_format import ChatFormat, TemplateError
from tunesmith.data.jsonl import JsonlFormatError, iter_lines, parse_line
from tunesmith.data.rules import ChatUnit, TextUnit, check_example, reserved_pattern

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
    """``input_ids[i]`` where token ``i`` is trained, else :data:`IGNORE`; not shifted."""
    truncated: bool = False

    @property
    def n_trained(self) -> int:
        """Tokens that carry loss; the first token has no predecessor to predict it from."""
        return sum(1 for label in self.labels[1:] if label != IGNORE)


def tokenize_unit(
    chat_format: ChatFormat, unit: ChatUnit | TextUnit, *, line: int, max_length: int
) -> TokenizedExample:
    """Renders one example and marks its trained tokens; cut to ``max_length`` tokens."""
    try:
        rendered = chat_format.render_unit(unit)
    except TemplateError as exc:
        raise ExampleError(line, "template_render_failed", exc.message) from None
    (encoding,) = chat_format.encode_batch([rendered.text])
    ids = list(encoding.ids)
    labels = [IGNORE] * len(ids)
    for trained in ChatFormat.trained_token_ranges(encoding, rendered.spans):
        for i in trained:
            labels[i] = ids[i]
    if not any(label != IGNORE for label in labels[1:]):
        raise ExampleError(
            line,
            "nothing_to_train",
            "the example has no assistant tokens to train on (every assistant message has "
            "weight 0, or there is none); give at least one assistant message weight 1.",
        )
    truncated = len(ids) > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
        if not any(label != IGNORE for label in labels[1:]):
            raise ExampleError(
                line,
                "nothing_to_train_after_truncation",
                f"the example is {len(encoding.ids)} tokens long and its first trained token "
                f"comes after the sequence limit of {max_length}; shorten the conversation "
                "before the answer, or raise max_seq_length.",
            )
    return TokenizedExample(line, tuple(ids), tuple(labels), truncated)


def load_examples(
    path: Path, chat_format: ChatFormat, *, max_length: int
) -> list[TokenizedExample]:
    """Every example of a chat or prompt/completion file, tokenised.

    Raises :class:`ExampleError` on the first line that cannot be trained on: files are validated
    with every problem listed before a job starts, so this is the last line of defence.
    """
    return list(_iter_examples(path, chat_format, max_length))


def _iter_examples(
    path: Path, chat_format: ChatFormat, max_length: int
) -> Iterator[TokenizedExample]:
    reserved = reserved_pattern(chat_format.special_tokens)
    try:
        for number, raw in iter_lines(path):
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
