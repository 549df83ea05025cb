"""Rendering a conversation with a model's chat template, and where its loss goes.

:meth:`ChatFormat.render` turns messages into the exact text the model is trained on and the
character spans whose tokens carry loss: each trained assistant turn, from the end of its header
to the end of its end-of-turn token (inside the mask: a model that never sees its end-of-turn
token in the loss never learns to stop; :mod:`.end_of_turn` says which token that is). Spans come
from rendering prefixes of the conversation; a trained turn that renders differently, up to its
end-of-turn token, once later messages follow (prefix-unstable) is refused, because no loss mask
can be trusted on it. What a template appends after the last turn only (Phi-3's eos) does not
count.

Rendering Jinja prefixes costs several template runs per example, so conversations that only
differ in their text share one *skeleton*: the conversation is rendered once per sequence of roles
with placeholder contents, and each example's text is then spliced in. A template that alters or
inspects message text (``trim``, ``split``, ``'x' in content``), or reads it any other way than
printing it (``.get('content')``, ``.items()``, ``|tojson``, a macro), is detected by
:mod:`.template_check` and always rendered in full; so is a conversation with anything besides
roles and non-empty texts (names, tool calls, tools). Both paths give identical results; the tests
hold them to it.

:meth:`ChatFormat.count_tokens` maps spans onto tokens: a token is an assistant token (it
carries the loss) when its first character lies inside a span. The validation report and the
training loop use these same spans.

:meth:`ChatFormat.token_counts` gives the same counts for a batch without encoding text twice
(:mod:`.token_spans`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.end_of_turn import find_end_of_turn, generation_eos_ids
from tunesmith.data.rules import ChatUnit, TextUnit
from tunesmith.data.template_check import inserts_content_verbatim
from tunesmith.data.token_spans import PieceEncoder, Rendered, assistant_token_ranges
from tunesmith.data.tool_calls import HERMES, CallSyntax, detect_syntax
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
    """A tokenizer with its chat template, end-of-turn token and context length.

    ``eos_ids`` are the model's ``generation_config.json`` eos ids: the end-of-turn token is the
    one of them, or the tokenizer's eos token, that the template writes after an answer
    (:func:`~tunesmith.data.end_of_turn.find_end_of_turn`); the eos token when it writes none
    (registration refuses such a model).
    """

    def __init__(
        self, tokenizer: Any, *, context_length: int, name: str, eos_ids: Sequence[int] = ()
    ) -> None:
        template = tokenizer.chat_template
        if not isinstance(template, str) or not template:
            raise ValueError(f"the tokenizer of {name} has no chat template")
        self.tokenizer = tokenizer
        self.name = name
        self.context_length = context_length
        try:
            found = find_end_of_turn(tokenizer, eos_ids)
        except Exception:  # Jinja raises anything; rendering reports it with the example
            found = None
        self.end_of_turn: str = found or tokenizer.eos_token
        self.special_tokens: list[str] = sorted(
            {str(t) for t in tokenizer.all_special_tokens}
            | {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
        )
        self._splice = inserts_content_verbatim(template)
        self._skeletons: dict[tuple[str, ...], _Skeleton | None] = {}
        self._pieces = PieceEncoder.for_tokenizer(tokenizer.backend_tokenizer)
        self.renders_tool_calls, self.renders_tools = self._probe_tool_support()
        self.call_syntax: CallSyntax | None = (
            detect_syntax(
                lambda messages, prompt: self._template(messages, None, prompt), self.end_of_turn
            )
            if self.renders_tool_calls
            else HERMES
        )
        """How this model writes a tool call (as trained); None: in a form not read back."""

    @classmethod
    def from_dir(cls, path: Path, name: str | None = None) -> ChatFormat:
        """Loads a Hugging Face folder's tokenizer; context length from its ``config.json``, eos
        ids from its ``generation_config.json``."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path))
        config = json.loads((path / "config.json").read_text())
        return cls(
            tokenizer,
            context_length=int(config["max_position_embeddings"]),
            name=name or path.name,
            eos_ids=generation_eos_ids(path),
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
        messages, tools, inserted = self._as_template_sees_them(messages, tools)
        if not inserted:
            return self._render(messages, trainable, tools)
        try:
            return self._render(messages, (False,) * inserted + tuple(trainable), tools)
        except TemplateError as exc:
            index = exc.message_index
            raise TemplateError(
                exc.message, None if index is None else max(0, index - inserted)
            ) from None

    def prompt_text(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
    ) -> str:
        """The text a model continues to answer ``messages`` (serving), tools as in training;
        a conversation the template refuses raises the :class:`TemplateError` training would,
        naming the message and the fix."""
        messages, tools, inserted = self._as_template_sees_them(messages, tools)
        try:
            return self._template(messages, tools, prompt=True)
        except TemplateError as exc:
            error = self._locate_failure(messages, tools, exc)
            index = error.message_index
            raise TemplateError(
                error.message, None if index is None else max(0, index - inserted)
            ) from None

    def _as_template_sees_them(
        self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None, int]:
        """Tool calls and tools written as text where the template would drop them.

        Returns the messages, the tools still to pass to the template, and how many messages
        were inserted at the front (a system message holding the tools).
        """
        inline_calls = not self.renders_tool_calls and any(
            m.get("tool_calls") or m.get("function_call") for m in messages
        )
        if not inline_calls and not (tools and not self.renders_tools):
            return messages, tools, 0
        messages, inserted = inline_tools(
            messages, None if self.renders_tools else tools, calls=inline_calls
        )
        return messages, tools if self.renders_tools else None, inserted

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
            end = turn.find(self.end_of_turn, len(header)) if turn.startswith(header) else -1
            span = (len(header), end + len(self.end_of_turn) if end >= 0 else len(turn))
            # what follows the turn's end (Phi-3's eos after the last message) may change
            if not (turn.startswith(header) and whole.startswith(turn[: span[1]])):
                raise TemplateError(self._unstable(i, turn[: span[1]], whole), i)
            spans.append(span)
        return Rendered(whole, tuple(spans))

    def _unstable(self, i: int, turn: str, whole: str) -> str:
        """Why message ``i``'s loss mask cannot be trusted: the template renders it differently
        once later messages follow (Qwen3 drops the think block of earlier answers)."""
        at = next((k for k, (a, b) in enumerate(zip(turn, whole, strict=False)) if a != b), None)
        shown = ""
        if at is not None:
            shown = (
                f" (as the last message it reads {turn[at : at + 24]!r} where the whole "
                f"conversation has {whole[at : at + 24]!r})"
            )
        return (
            f"the chat template of {self.name} renders message {i} differently once later "
            f"messages follow{shown}, so its loss mask would be wrong; set weight 0 on this "
            "message (the answers after it still train), or use a base model whose template "
            "renders earlier answers as it renders the last"
        )

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
        if not messages:
            return error
        index = len(messages) - 1
        for k in range(1, len(messages)):
            try:
                self._template(messages[:k], tools, prompt=False)
            except TemplateError:
                index = k - 1
                break
        role = messages[index].get("role")
        return TemplateError(
            f"{error.message}. The template fails on message {index} ({role}); "
            f"{_fix_for(messages, index)}",
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
    def assistant_token_ranges(encoding: Any, spans: Sequence[tuple[int, int]]) -> list[range]:
        """The token indices whose first character falls inside each span."""
        return assistant_token_ranges(encoding, spans)

    def count_tokens(self, encoding: Any, rendered: Rendered) -> tuple[int, int]:
        """``(all tokens, assistant tokens)`` of one encoded example."""
        assistant = sum(len(r) for r in self.assistant_token_ranges(encoding, rendered.spans))
        return len(encoding), assistant

    def token_counts(self, batch: Sequence[Rendered]) -> list[tuple[int, int]]:
        """:meth:`count_tokens` of each example, encoding repeated pieces of text only once."""
        if self._pieces is None:
            encodings = self.encode_batch([r.text for r in batch])
            return [self.count_tokens(e, r) for e, r in zip(encodings, batch, strict=True)]
        return self._pieces.token_counts(batch)


def _fix_for(messages: list[dict[str, Any]], index: int) -> str:
    """What to change when the template refuses message ``index``, from the roles around it:
    the rules real templates enforce (Gemma 2 and Mistral refuse a system message, both need
    user and assistant turns to alternate from a user turn)."""
    role = messages[index].get("role")
    if role == "system":
        return (
            "this model's template does not accept a system message here: remove it, or move its "
            "text to the start of the first user message"
        )
    turns = [m.get("role") for m in messages[: index + 1] if m.get("role") != "system"]
    if role in ("user", "assistant") and (
        turns[0] != "user" or (len(turns) > 1 and turns[-1] == turns[-2])
    ):
        return (
            "this model's template needs user and assistant messages to alternate, starting "
            "with a user message: merge consecutive messages of one role into one, or remove "
            "the extra message"
        )
    return (
        "give it the fields this model's template expects (such as text content), or use a "
        "base model whose template supports them"
    )
