"""Rendering a conversation with a model's chat template, and where its loss goes.

:meth:`ChatFormat.render` turns messages into the exact text the model is trained on and the
character spans whose tokens carry loss: each trained assistant turn, from the end of its header
to the end of its end-of-turn token (inside the mask: a model that never sees its end-of-turn
token in the loss never learns to stop). Spans come from rendering prefixes of the conversation;
a template whose prefixes are not prefixes of the whole (prefix-unstable) is refused, because no
loss mask can be trusted on it.

Rendering Jinja prefixes costs several template runs per example, so conversations that only
differ in their text share one *skeleton*: the conversation is rendered once per sequence of roles
with placeholder contents, and each example's text is then spliced in. A template that alters or
inspects message text (``trim``, ``split``, ``'x' in content``) is detected by
:mod:`.template_check` and always rendered in full. Both paths give identical results; the tests
hold them to it.

:meth:`ChatFormat.count_tokens` maps spans onto tokens: a token is trained when its first
character lies inside a span. The validation report and the training loop use these same spans.

:meth:`ChatFormat.token_counts` gives the same counts for a batch without encoding text twice: a
tokenizer splits its special tokens out before anything else, so a rendered text is encoded as the
pieces between special tokens, and a piece that repeats within a batch (typically the system
prompt that all examples of a dataset share) is encoded once. Whether a tokenizer really encodes
piece by piece is checked when the format is built (its configuration, then probe texts encoded
whole and in pieces); one that does not is always given whole texts.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.rules import ChatUnit, TextUnit
from tunesmith.data.template_check import inserts_content_verbatim
from tunesmith.data.tool_text import inline_tools

# A placeholder that no real text contains; the padding whitespace exposes templates that trim.
_SENTINEL = " \n\x1e{}\x1e\n "


class TemplateError(Exception):
    """The chat template cannot render this conversation, or renders it prefix-unstably."""

    def __init__(self, message: str, message_index: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.message_index = message_index


@dataclass(frozen=True, slots=True)
class Rendered:
    text: str
    spans: tuple[tuple[int, int], ...]
    """Character ranges ``[start, end)`` whose tokens are trained."""


@dataclass(frozen=True, slots=True)
class _Skeleton:
    """A rendered role sequence: literal template text between message contents."""

    literals: tuple[str, ...]  # len(messages) + 1 pieces
    turn_spans: dict[int, tuple[tuple[int, int], tuple[int, int]]]
    """message index -> ((literal index, offset), (literal index, offset)) of its span."""

    def fill(self, contents: Sequence[str], trainable: Sequence[bool]) -> Rendered:
        pieces: list[str] = []
        starts: list[int] = []  # where each literal starts in the filled text
        at = 0
        for literal, content in zip(self.literals, [*contents, ""], strict=True):
            starts.append(at)
            pieces.append(literal)
            pieces.append(content)
            at += len(literal) + len(content)
        spans = tuple(
            (starts[a[0]] + a[1], starts[b[0]] + b[1])
            for i, (a, b) in self.turn_spans.items()
            if trainable[i]
        )
        return Rendered("".join(pieces), spans)


class ChatFormat:
    """A tokenizer with its chat template, end-of-turn token and context length."""

    def __init__(self, tokenizer: Any, *, context_length: int, name: str) -> None:
        template = tokenizer.chat_template
        if not isinstance(template, str) or not template:
            raise ValueError(f"the tokenizer of {name} has no chat template")
        self.tokenizer = tokenizer
        self.name = name
        self.context_length = context_length
        self.end_of_turn: str = tokenizer.eos_token
        self.special_tokens: list[str] = sorted(
            {str(t) for t in tokenizer.all_special_tokens}
            | {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        )
        self._splice = inserts_content_verbatim(template)
        self._skeletons: dict[tuple[str, ...], _Skeleton | None] = {}
        self._pieces = _PieceEncoder.for_tokenizer(tokenizer.backend_tokenizer)
        self.renders_tool_calls, self.renders_tools = self._probe_tool_support()

    @classmethod
    def from_dir(cls, path: Path, name: str | None = None) -> ChatFormat:
        """Loads a Hugging Face folder's tokenizer; context length from its ``config.json``."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        config = json.loads((path / "config.json").read_text())
        return cls(
            tokenizer,
            context_length=int(config["max_position_embeddings"]),
            name=name or path.name,
        )

    # -- rendering -----------------------------------------------------------------------------

    def render_unit(self, unit: ChatUnit | TextUnit) -> Rendered:
        if isinstance(unit, TextUnit):
            text = unit.prompt + unit.completion + self.end_of_turn
            return Rendered(text, ((len(unit.prompt), len(text)),))
        return self.render(unit.messages, unit.trainable, tools=unit.tools)

    def render(
        self,
        messages: list[dict[str, Any]],
        trainable: Sequence[bool],
        *,
        tools: list[dict[str, Any]] | None = None,
    ) -> Rendered:
        inline_calls = not self.renders_tool_calls and any(
            m.get("tool_calls") or m.get("function_call") for m in messages
        )
        if inline_calls or (tools and not self.renders_tools):
            messages, inserted = inline_tools(
                messages, None if self.renders_tools else tools, calls=inline_calls
            )
            tools = tools if self.renders_tools else None
            try:
                return self._render(messages, (False,) * inserted + tuple(trainable), tools)
            except TemplateError as exc:
                index = exc.message_index
                raise TemplateError(
                    exc.message, None if index is None else max(0, index - inserted)
                ) from None
        return self._render(messages, trainable, tools)

    def prompt_text(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """The text a model continues to answer ``messages`` (serving), tools as in training."""
        inline_calls = not self.renders_tool_calls
        if inline_calls or (tools and not self.renders_tools):
            messages, _ = inline_tools(
                messages, None if self.renders_tools else tools, calls=inline_calls
            )
            tools = tools if self.renders_tools else None
        return self._template(messages, tools, prompt=True)

    def _probe_tool_support(self) -> tuple[bool, bool]:
        """Whether the template prints assistant tool calls, and the tools offered."""
        marker = "tunesmith_probe_fn"
        call = {"id": "call_0", "type": "function", "function": {"name": marker, "arguments": "{}"}}
        tool = {"type": "function", "function": {"name": marker, "parameters": {}}}
        user = {"role": "user", "content": "x"}
        try:
            calls = marker in self._template(
                [user, {"role": "assistant", "content": "", "tool_calls": [call]}], None, False
            )
        except TemplateError:
            calls = False
        try:
            tools = marker in self._template([user], [tool], prompt=True)
        except TemplateError:
            tools = False
        return calls, tools

    def _render(
        self,
        messages: list[dict[str, Any]],
        trainable: Sequence[bool],
        tools: list[dict[str, Any]] | None,
    ) -> Rendered:
        spliceable = (
            self._splice
            and tools is None
            and all(m.keys() <= {"role", "content"} and m["content"] for m in messages)
        )
        if not spliceable:
            return self._render_full(messages, trainable, tools)
        roles = tuple(m["role"] for m in messages)
        if roles not in self._skeletons:
            self._skeletons[roles] = self._build_skeleton(roles)
        skeleton = self._skeletons[roles]
        if skeleton is None:
            return self._render_full(messages, trainable, tools)
        return skeleton.fill([m["content"] for m in messages], trainable)

    def _template(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, prompt: bool
    ) -> str:
        try:
            text = self.tokenizer.apply_chat_template(
                messages, tools=tools, tokenize=False, add_generation_prompt=prompt
            )
        except Exception as exc:  # Jinja raises anything: TypeError, UndefinedError, ...
            raise TemplateError(
                f"the chat template of {self.name} cannot render it: {exc}"
            ) from exc
        return str(text)

    def _render_full(
        self,
        messages: list[dict[str, Any]],
        trainable: Sequence[bool],
        tools: list[dict[str, Any]] | None,
    ) -> Rendered:
        try:
            whole = self._template(messages, tools, prompt=False)
        except TemplateError as exc:
            raise self._locate_failure(messages, tools, exc) from None
        spans: list[tuple[int, int]] = []
        for i, train in enumerate(trainable):
            if not train:
                continue
            header = self._header(messages, i, tools)
            turn = self._template(messages[: i + 1], tools, prompt=False)
            if not (whole.startswith(turn) and turn.startswith(header)):
                raise TemplateError(
                    f"the chat template of {self.name} renders message {i} differently once "
                    "later messages follow (it is not prefix-stable), so its loss mask would "
                    "be wrong; set weight 0 on this message or use a base model whose template "
                    "is prefix-stable",
                    i,
                )
            end = turn.rfind(self.end_of_turn, len(header))
            spans.append((len(header), end + len(self.end_of_turn) if end >= 0 else len(turn)))
        return Rendered(whole, tuple(spans))

    def _header(
        self, messages: list[dict[str, Any]], i: int, tools: list[dict[str, Any]] | None
    ) -> str:
        """The text before message ``i``'s content: the conversation so far plus its header."""
        if i > 0:
            return self._template(messages[:i], tools, prompt=True)
        # Templates refuse an empty conversation, so for an opening answer take the text that
        # precedes a placeholder content.
        placeholder = _SENTINEL.format(0)
        text = self._template([{**messages[0], "content": placeholder}], tools, prompt=False)
        at = text.find(placeholder)
        if at < 0:
            raise TemplateError(
                f"the chat template of {self.name} alters the text of an opening assistant "
                "message, so its loss mask cannot be located; start the example with a user "
                "(or system) message",
                0,
            )
        return text[:at]

    def _locate_failure(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        error: TemplateError,
    ) -> TemplateError:
        """The same error, naming the first message the template cannot render."""
        index = len(messages) - 1
        for k in range(1, len(messages)):
            try:
                self._template(messages[:k], tools, prompt=False)
            except TemplateError:
                index = k - 1
                break
        role = messages[index].get("role")
        return TemplateError(
            f"{error.message}. The template fails on message {index} ({role}); give it the "
            "fields this model's template expects (such as text content), or choose a base model "
            "whose template supports them",
            index,
        )

    def _build_skeleton(self, roles: tuple[str, ...]) -> _Skeleton | None:
        sentinels = [_SENTINEL.format(i) for i in range(len(roles))]
        messages = [{"role": r, "content": s} for r, s in zip(roles, sentinels, strict=True)]
        trainable = [r == "assistant" for r in roles]
        try:
            rendered = self._render_full(messages, trainable, None)
        except TemplateError:
            return None  # the full path reports the error with the real text
        text = rendered.text
        bounds: list[tuple[int, int]] = []
        for sentinel in sentinels:
            at = text.find(sentinel)
            if at < 0 or text.count(sentinel) != 1 or (bounds and at < bounds[-1][1]):
                return None  # the template altered, dropped or repeated the text
            bounds.append((at, at + len(sentinel)))
        literal_starts = [0] + [end for _, end in bounds]
        literals = [
            text[start : (bounds[j][0] if j < len(bounds) else len(text))]
            for j, start in enumerate(literal_starts)
        ]

        def locate(pos: int) -> tuple[int, int] | None:
            j = sum(1 for _, end in bounds if end <= pos)
            if j < len(bounds) and pos > bounds[j][0]:
                return None  # inside a placeholder: the span cuts through message text
            return j, pos - literal_starts[j]

        turn_spans: dict[int, tuple[tuple[int, int], tuple[int, int]]] = {}
        assistant_indices = [i for i, r in enumerate(roles) if r == "assistant"]
        for i, (start, end) in zip(assistant_indices, rendered.spans, strict=True):
            a, b = locate(start), locate(end)
            if a is None or b is None:
                return None
            turn_spans[i] = (a, b)
        return _Skeleton(tuple(literals), turn_spans)

    # -- tokens --------------------------------------------------------------------------------

    def encode_batch(self, texts: list[str]) -> list[Any]:
        """Fast tokenizer encodings (with character offsets) of already rendered texts."""
        return list(self.tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False))

    @staticmethod
    def trained_token_ranges(encoding: Any, spans: Sequence[tuple[int, int]]) -> list[range]:
        """The token indices whose first character falls inside each span."""
        ranges: list[range] = []
        for start, end in spans:
            first = _first_token_from(encoding, start, end)
            last = _last_token_before(encoding, start, end)
            if first is not None and last is not None and last >= first:
                ranges.append(range(first, last + 1))
        return ranges

    def count_tokens(self, encoding: Any, rendered: Rendered) -> tuple[int, int]:
        """``(all tokens, trained tokens)`` of one encoded example."""
        trained = sum(len(r) for r in self.trained_token_ranges(encoding, rendered.spans))
        return len(encoding), trained

    def token_counts(self, batch: Sequence[Rendered]) -> list[tuple[int, int]]:
        """:meth:`count_tokens` of each example, encoding repeated pieces of text only once."""
        if self._pieces is None:
            encodings = self.encode_batch([r.text for r in batch])
            return [self.count_tokens(e, r) for e, r in zip(encodings, batch, strict=True)]
        return self._pieces.token_counts(batch)


class _PieceEncoder:
    """Encodes a batch of rendered texts as the distinct pieces between their special tokens.

    The whole-text encoding is the pieces' encodings one after the other, each special token one
    token in between; :meth:`token_counts` maps spans onto that sequence exactly as
    :meth:`ChatFormat.trained_token_ranges` does on the whole-text encoding (the same character
    lookups, made in the piece that holds the character).
    """

    def __init__(self, backend: Any, split: re.Pattern[str]) -> None:
        self._backend = backend
        self._split = split

    @classmethod
    def for_tokenizer(cls, backend: Any) -> _PieceEncoder | None:
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
        return encoder if encoder._exact(_probe_texts(splitters)) else None

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
    """``(all tokens, trained tokens)`` from the encodings of a text's pieces."""
    joined = _Joined(pieces, encodings)
    trained = sum(len(r) for r in ChatFormat.trained_token_ranges(joined, spans))
    return joined.bases[-1], trained


def _prepends_to_first_piece(config: Any) -> bool:
    """Whether a pre-tokenizer configuration treats a text's first piece unlike the others."""
    if isinstance(config, dict):
        if config.get("prepend_scheme") == "first":
            return True
        return any(_prepends_to_first_piece(v) for v in config.values())
    if isinstance(config, list):
        return any(_prepends_to_first_piece(v) for v in config)
    return False


def _probe_texts(splitters: list[str]) -> list[str]:
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
