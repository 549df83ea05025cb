"""Which tokens of an encoded text a loss span covers, how many tokens an example trains, and
counting both fast.

Two counts, one rule each:

- an example's *assistant tokens* carry the loss: a token is one when its first character lies
  inside a span (:func:`assistant_token_ranges`); the validation report and the training labels
  both use this rule;
- its *trained tokens* are what one epoch over it adds to a job's ``trained_tokens`` (the count
  usage is priced by): every token of it, system, prompt, answer and template tokens alike, up to
  the sequence limit it is cut at (:func:`example_trained_tokens`). The validation report's
  estimate and the training loop's running count both use this rule, so a job that runs to the
  end has trained exactly the estimate.

:class:`PieceEncoder` gives the same counts for a batch without encoding text twice: a tokenizer
splits its special tokens out before anything else, so a rendered text is encoded as the pieces
between special tokens, and a piece that repeats within a batch (typically the system prompt that
all examples of a dataset share) is encoded once. Whether a tokenizer really encodes piece by
piece is checked when it is built (its configuration, then probe texts encoded whole and in
pieces); for one that does not, :meth:`PieceEncoder.for_tokenizer` returns None.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Rendered:
    """A conversation as the model reads it (``ChatFormat.render``) and where its loss goes."""

    text: str
    spans: tuple[tuple[int, int], ...]
    """Character ranges ``[start, end)`` whose tokens carry the loss (the assistant tokens)."""


def example_trained_tokens(n_tokens: int, max_length: int) -> int:
    """The trained tokens of one example of ``n_tokens`` tokens in one epoch: all of them, up
    to ``max_length``, where the example is cut (OpenAI bills a training file's tokens × its
    epochs; the loss-carrying assistant tokens are only part of them)."""
    return min(n_tokens, max_length)


def assistant_token_ranges(encoding: Any, spans: Sequence[tuple[int, int]]) -> list[range]:
    """The token indices whose first character falls inside each span.

    ``encoding`` is a fast tokenizer encoding, or anything with its ``char_to_token`` and
    ``token_to_chars`` lookups (:class:`_Joined`).
    """
    ranges: list[range] = []
    for start, end in spans:
        first = _first_token_from(encoding, start, end)
        last = _last_token_before(encoding, start, end)
        if first is not None and last is not None and last >= first:
            ranges.append(range(first, last + 1))
    return ranges


class PieceEncoder:
    """Encodes a batch of rendered texts as the distinct pieces between their special tokens.

    The whole-text encoding is the pieces' encodings one after the other, each special token one
    token in between; :meth:`token_counts` maps spans onto that sequence exactly as
    :func:`assistant_token_ranges` does on the whole-text encoding (the same character
    lookups, made in the piece that holds the character).
    """

    def __init__(self, backend: Any, split: re.Pattern[str]) -> None:
        self._backend = backend
        self._split = split

    @classmethod
    def for_tokenizer(cls, backend: Any) -> PieceEncoder | None:
        """The encoder, or None when this tokenizer may not encode piece by piece."""
        if backend.truncation or backend.padding or backend.encode_special_tokens:
            return None  # lengths would be capped or padded piece by piece
        pre_tokenizer = backend.pre_tokenizer
        if pre_tokenizer is not None and _prepends_to_first_piece(
            json.loads(pre_tokenizer.__getstate__())
        ):
            return None  # Metaspace "first": only the text's first piece gets the prefix
        splitters = sorted(
            {
                t.content
                for t in backend.get_added_tokens_decoder().values()
                if t.special and not (t.lstrip or t.rstrip or t.single_word or t.normalized)
            },
            key=len,
            reverse=True,
        )
        if not splitters:
            return None
        encoder = cls(backend, re.compile("|".join(map(re.escape, splitters))))
        return encoder if encoder._exact(probe_texts(splitters)) else None

    def _pieces(self, text: str) -> list[tuple[int, int, bool]]:
        """``(start, end, is special token)`` of the text's pieces; empty pieces left out."""
        pieces: list[tuple[int, int, bool]] = []
        at = 0
        for match in self._split.finditer(text):
            start, end = match.span()
            if start > at:
                pieces.append((at, start, False))
            pieces.append((start, end, True))
            at = end
        if at < len(text):
            pieces.append((at, len(text), False))
        return pieces

    def _exact(self, texts: list[str]) -> bool:
        """Whether each text encodes whole exactly as its pieces do (ids and offsets)."""
        for text in texts:
            whole = self._backend.encode(text, add_special_tokens=False)
            ids: list[int] = []
            offsets: list[tuple[int, int]] = []
            for start, end, special in self._pieces(text):
                part = self._backend.encode(text[start:end], add_special_tokens=False)
                if special and len(part.ids) != 1:
                    return False  # _Joined takes a special token for one token
                ids += part.ids
                offsets += [(start + a, start + b) for a, b in part.offsets]
            if ids != whole.ids or offsets != whole.offsets:
                return False
        return True

    def token_counts(self, batch: Sequence[Rendered]) -> list[tuple[int, int]]:
        layouts = [self._pieces(r.text) for r in batch]
        index: dict[str, int] = {}  # each distinct piece of the batch -> its place in ``texts``
        places = [
            [
                -1 if special else index.setdefault(r.text[start:end], len(index))
                for start, end, special in pieces
            ]
            for r, pieces in zip(batch, layouts, strict=True)
        ]
        texts = list(index)  # in insertion order, so texts[index[piece]] == piece
        encoded = self._backend.encode_batch(texts, add_special_tokens=False) if texts else []
        return [
            _piece_counts(pieces, [None if i < 0 else encoded[i] for i in at], rendered.spans)
            for rendered, pieces, at in zip(batch, layouts, places, strict=True)
        ]


class _Joined:
    """The whole-text encoding's character lookups, answered from the encodings of its pieces."""

    __slots__ = ("bases", "encodings", "pieces", "starts")

    def __init__(self, pieces: list[tuple[int, int, bool]], encodings: list[Any]) -> None:
        self.pieces = pieces
        self.encodings = encodings
        self.starts = [start for start, _, _ in pieces]
        self.bases: list[int] = []  # index of each piece's first token in the whole encoding
        total = 0
        for encoding in encodings:
            self.bases.append(total)
            total += 1 if encoding is None else len(encoding)
        self.bases.append(total)

    def char_to_token(self, pos: int) -> int | None:
        i = bisect_right(self.starts, pos) - 1
        if i < 0 or pos >= self.pieces[i][1]:
            return None
        encoding = self.encodings[i]
        if encoding is None:  # a special token: one token over all its characters
            return self.bases[i]
        token = encoding.char_to_token(pos - self.pieces[i][0])
        return None if token is None else self.bases[i] + int(token)

    def token_to_chars(self, token: int) -> tuple[int, int]:
        i = bisect_right(self.bases, token) - 1
        start, end, _ = self.pieces[i]
        encoding = self.encodings[i]
        if encoding is None:
            return start, end
        a, b = encoding.token_to_chars(token - self.bases[i])
        return start + a, start + b


def _piece_counts(
    pieces: list[tuple[int, int, bool]],
    encodings: list[Any],
    spans: Sequence[tuple[int, int]],
) -> tuple[int, int]:
    """``(all tokens, assistant tokens)`` from the encodings of a text's pieces."""
    joined = _Joined(pieces, encodings)
    assistant = sum(len(r) for r in assistant_token_ranges(joined, spans))
    return joined.bases[-1], assistant


def _prepends_to_first_piece(config: Any) -> bool:
    """Whether a pre-tokenizer configuration treats a text's first piece unlike the others."""
    if isinstance(config, dict):
        if config.get("prepend_scheme") == "first":
            return True
        return any(_prepends_to_first_piece(v) for v in config.values())
    if isinstance(config, list):
        return any(_prepends_to_first_piece(v) for v in config)
    return False


def probe_texts(splitters: list[str]) -> list[str]:
    """Texts that exercise piece boundaries: whitespace, digits and unicode next to specials."""
    fragments = ["", " ", "\n", "\n\n", " \n x", "Hello world", "x ", "\t12.5", "café 東京 😀"]
    texts = []
    for i, fragment in enumerate(fragments):
        a, b = splitters[i % len(splitters)], splitters[(i + 1) % len(splitters)]
        texts.append(f"{fragment}{a}user\n{fragment}Hi{fragment}{b}{fragment}{a}{b}{fragment}")
    return texts


def _first_token_from(encoding: Any, start: int, end: int) -> int | None:
    for pos in range(start, end):
        token = encoding.char_to_token(pos)
        if token is not None:
            token_start = encoding.token_to_chars(token)[0]
            return int(token) if token_start >= start else int(token) + 1
    return None


def _last_token_before(encoding: Any, start: int, end: int) -> int | None:
    for pos in range(end - 1, start - 1, -1):
        token = encoding.char_to_token(pos)
        if token is not None:
            return int(token)
    return None
