"""Reading tool calls back out of a model's answer, in the format it was trained to write them.

A model fine-tuned on tool calls writes each call the way its training examples showed it:
for templates that drop calls, the Hermes-style text of :mod:`.tool_text`
(``<tool_call>\\n{"name": …, "arguments": {…}}\\n</tool_call>``); for templates that print calls
themselves, whatever the template prints. :func:`detect_syntax` renders a probe call with the
template and reads the format off it as a :class:`CallSyntax`: an opening marker, a JSON object
naming the function (``"name"``) and its arguments (``"arguments"`` or ``"parameters"``, as an
object or as a JSON string), and a closing marker. Formats outside that shape (a JSON list of
calls, Python-like ``name(arg=…)``) give ``None``: such a model's calls stay text.

:class:`CallReader` splits an answer, as it streams, into content and calls. It holds back any
text that could still be the beginning of a call (a tail that is a prefix of the opening marker,
and everything from an opening marker on until the call is complete), so no half call ever
leaves as content. A call is a call only when it is well formed and names a tool on offer;
anything else goes out as the text the model wrote. Whitespace that separates content from a
call (the newline training wrote between them) belongs to neither. Whole answers are split by
the same reader (:func:`split_answer`), so an answer and its stream hold the same calls.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from tunesmith.data.tool_text import call_text

ARGUMENT_KEYS = ("arguments", "parameters")
PROBE_NAME = "tunesmith_probe_fn"
PROBE_ARGUMENTS = {"tunesmith_probe_arg": 1}


@dataclass(frozen=True, slots=True)
class CallSyntax:
    """How one model writes a tool call."""

    open: str
    """The marker before a call's JSON object (``<tool_call>``); empty: the whole answer is
    one JSON object (Llama 3.1 style)."""
    close: str
    """The marker after it (``</tool_call>``); may be empty."""
    arguments_key: str
    """``arguments`` or ``parameters``."""
    lead: str | None
    """The text of a call up to its function name (``<tool_call>\\n{"name": "``): what a
    prompt ends with to make the model write a call. None: the name is not first."""
    between: str | None
    """The text from the end of the name to the arguments (``", "arguments":``)."""

    def forced_prefix(self, name: str | None) -> str | None:
        """What the answer starts with when a call (of ``name``, if given) must be made; None
        when this format cannot be started that way."""
        if self.lead is None or self.between is None:
            return None
        return self.lead if name is None else self.lead + name + self.between


@dataclass(frozen=True, slots=True)
class ParsedCall:
    name: str
    arguments: str
    """The arguments as JSON text of an object."""


Piece = str | ParsedCall
"""Content text, or one complete call."""


def syntax_of(text: str, name: str, arguments: dict[str, Any]) -> CallSyntax | None:
    """The syntax of ``text``, the rendering of one call of ``name`` with ``arguments``."""
    decoder = json.JSONDecoder()
    for start in (i for i, c in enumerate(text) if c == "{"):
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            continue
        key = _arguments_key(value, arguments)
        if not isinstance(value, dict) or value.get("name") != name or key is None:
            continue
        open_, close = text[:start].strip(), text[end:].strip()
        if not open_ and close:
            return None  # a closing marker without an opening one: not a shape read here
        body = text[start:end]
        named = body.find(json.dumps(name))
        keyed = body.find(json.dumps(key) + ":", named)
        lead = between = None
        if 0 <= named < keyed:
            lead = text[: start + named + 1].lstrip()
            between = body[named + len(json.dumps(name)) - 1 : keyed + len(key) + 3]
        return CallSyntax(open_, close, key, lead, between)
    return None


def detect_syntax(
    render: Callable[[list[dict[str, Any]], bool], str], end_of_turn: str
) -> CallSyntax | None:
    """The syntax a chat template prints a call in, read from the answer's text up to its
    ``end_of_turn`` token; ``render(messages, generation_prompt)`` renders with the template
    (raising on failure). None: no readable call was printed."""
    user = {"role": "user", "content": "x"}
    call = {
        "id": "call_0",
        "type": "function",
        "function": {"name": PROBE_NAME, "arguments": json.dumps(PROBE_ARGUMENTS)},
    }
    try:
        header = render([user], True)
        whole = render([user, {"role": "assistant", "content": "", "tool_calls": [call]}], False)
    except Exception:  # Jinja raises anything
        return None
    if not whole.startswith(header):
        return None
    answer = whole[len(header) :]
    end = answer.rfind(end_of_turn)
    return syntax_of(answer[:end] if end >= 0 else answer, PROBE_NAME, PROBE_ARGUMENTS)


class CallReader:
    """Splits one answer into content and calls as its text arrives.

    ``names``: the tools whose calls count; ``limit``: how many calls at most (then
    :attr:`done` is set and the rest of the answer is dropped). An answer without calls comes
    out unchanged; whitespace next to a call is dropped, except one run between two pieces of
    content."""

    def __init__(
        self, syntax: CallSyntax, names: Collection[str], *, limit: int | None = None
    ) -> None:
        self.syntax = syntax
        self.names = frozenset(names)
        self.limit = limit
        self.calls = 0
        self.done = False
        self._text = ""  # undecided text
        self._gap = ""  # whitespace not handed out yet
        self._gap_by_call = False  # the gap touches a call: dropped unless content follows
        self._emitted = False  # some content went out
        self._plain = False  # whole-answer syntax: the answer is no call, all text is content

    def push(self, text: str) -> list[Piece]:
        """Adds text; returns what became final."""
        if self.done:
            return []
        self._text += text
        if not self.syntax.open:
            return self._read_whole(final=False)
        return self._read(final=False)

    def finish(self) -> list[Piece]:
        """Everything still held, at the end of the answer."""
        if self.done:
            return []
        if not self.syntax.open:
            pieces = self._read_whole(final=True)
            if self._text:
                pieces.append(self._text)
            self._text = ""
            return pieces
        pieces = self._read(final=True)
        if self._text:
            pieces.append(self._content(self._text, final=True))
        elif self._gap and not self._gap_by_call:
            pieces.append(self._gap)
        self._text = self._gap = ""
        return [p for p in pieces if p]

    def _read(self, *, final: bool) -> list[Piece]:
        pieces: list[Piece] = []
        opener = self.syntax.open
        while self._text and not self.done:
            at = self._text.find(opener)
            if at < 0:  # content, less a tail that may begin an opener
                at = len(self._text) - _overlap(self._text, opener)
                pieces.append(self._content(self._text[:at]))
                self._text = self._text[at:]
                break
            pieces.append(self._content(self._text[:at]))
            self._text = self._text[at:]
            end = self._call_end(final=final)
            if end is None:
                break  # the call is not complete yet
            raw, self._text = self._text[:end], self._text[end:]
            parsed = self._parse(raw)
            if parsed is None:  # not a call after all: the text as written
                pieces.append(self._content(raw, final=True))
                continue
            pieces.append(parsed)
            self.calls += 1
            self.done = self.limit is not None and self.calls >= self.limit
            self._gap_by_call = True
        return [p for p in pieces if p]

    def _content(self, text: str, *, final: bool = False) -> str:
        """``text`` as content. Its trailing whitespace waits as the gap before what follows
        (unless ``final``: a piece of text that is whole, such as a malformed call)."""
        if self._gap_by_call:  # whitespace after a call joins the gap, once
            lead = len(text) - len(text.lstrip())
            self._gap, text = self._gap or text[:lead], text[lead:]
        release = text if final else text.rstrip()
        if not release:
            self._gap += text
            return ""
        keep_gap = not self._gap_by_call or self._emitted
        piece = (self._gap if keep_gap else "") + release
        self._gap, self._gap_by_call, self._emitted = text[len(release) :], False, True
        return piece

    def _call_end(self, *, final: bool) -> int | None:
        """Where the call at the start of ``_text`` ends, or None while it may go on."""
        text, opener, close = self._text, self.syntax.open, self.syntax.close
        body = len(opener) + (len(text[len(opener) :]) - len(text[len(opener) :].lstrip()))
        if body < len(text) and text[body] != "{":
            return len(opener)  # no JSON object follows the marker: plain text
        if close:
            at = text.find(close, body)
            if at >= 0:
                return at + len(close)
        else:
            try:
                _, end = json.JSONDecoder().raw_decode(text, body)
                return end
            except json.JSONDecodeError:
                pass
        return len(text) if final else None

    def _parse(self, raw: str) -> ParsedCall | None:
        inner = raw[len(self.syntax.open) :]
        if self.syntax.close:
            if not inner.endswith(self.syntax.close):
                return None
            inner = inner[: -len(self.syntax.close)]
        return self._call_of(inner)

    def _call_of(self, text: str) -> ParsedCall | None:
        """A call to a tool on offer from the JSON object ``text``, or None."""
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        if not isinstance(value, dict) or set(value) != {"name", self.syntax.arguments_key}:
            return None
        name, arguments = value["name"], value[self.syntax.arguments_key]
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except json.JSONDecodeError:
                return None
        if not isinstance(name, str) or name not in self.names or not isinstance(arguments, dict):
            return None
        return ParsedCall(name, json.dumps(arguments, ensure_ascii=False))

    def _read_whole(self, *, final: bool) -> list[Piece]:
        """The whole-answer syntax: a call is an answer that is one JSON object."""
        if self._plain or (self._text.strip() and not self._text.lstrip().startswith("{")):
            self._plain = True
            text, self._text = self._text, ""
            return [text] if text else []
        if not final:
            return []
        parsed = self._call_of(self._text.strip())
        if parsed is None:
            return []  # finish() hands the text out
        self._text = ""
        self.calls = 1
        self.done = True
        return [parsed]


def split_answer(
    text: str, syntax: CallSyntax, names: Collection[str], *, limit: int | None = None
) -> tuple[str, list[ParsedCall]]:
    """A whole answer's content and calls."""
    reader = CallReader(syntax, names, limit=limit)
    pieces = [*reader.push(text), *reader.finish()]
    content = "".join(p for p in pieces if isinstance(p, str))
    return content, [p for p in pieces if isinstance(p, ParsedCall)]


def _arguments_key(value: Any, arguments: dict[str, Any]) -> str | None:
    if not isinstance(value, dict):
        return None
    for key in ARGUMENT_KEYS:
        given = value.get(key)
        if isinstance(given, str):
            try:
                given = json.loads(given)
            except json.JSONDecodeError:
                continue
        if given == arguments:
            return key
    return None


def _overlap(text: str, marker: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``marker``."""
    for size in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:size]):
            return size
    return 0


def _hermes() -> CallSyntax:
    syntax = syntax_of(call_text(PROBE_NAME, PROBE_ARGUMENTS), PROBE_NAME, PROBE_ARGUMENTS)
    if syntax is None:
        raise RuntimeError("tool_text.call_text writes calls that cannot be read back")
    return syntax


HERMES = _hermes()
"""The format of :mod:`.tool_text`, read off its own writer."""
