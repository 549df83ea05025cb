"""OpenAI chat messages as a chat template receives them: one rule book for training files and
chat requests alike.

:func:`normalise_messages` checks a conversation and turns it into the messages the chat
template renders. The validator and the training loop (through :mod:`.rules`) and serving (the
chat service) all call it, so a conversation renders to the same text, and the same tokens, on
both paths. Each rule is decided once:

- ``role``: ``system``, ``developer``, ``user``, ``assistant``, ``tool`` or ``function``.
  ``developer`` is OpenAI's instructions role, which replaces ``system`` for its newer models;
  open models' templates know only ``system``, so the template receives ``system``. Training
  files may use it too, and render exactly as a request with it does.
- ``content``: a string, or a list of text parts (``{"type": "text", "text": …}``) joined
  without a separator; any other part (an image, audio, a file) is refused, naming
  ``messages[i].content[j]``. It may be left out or null only on an assistant message with
  ``tool_calls`` or ``function_call`` (or a ``refusal``); the template receives ``""`` then.
  Training files must also give every other message some text.
- ``name``: a string, kept; a template that prints names sees the same name either way.
- ``tool_calls``: assistant messages only, a non-empty list of ``{"id", "type": "function",
  "function": {"name", "arguments"}}`` with ``arguments`` a JSON string; the template receives
  each call in exactly that shape. ``function_call`` (the legacy single call): assistant only,
  ``{"name", "arguments"}``. ``tool_call_id``: required on ``tool`` messages, kept.
- ``refusal``: assistant only, a string or null. It is what the assistant said instead of an
  answer, so it becomes the message's text (a message may not have both); the key itself never
  reaches the template.
- ``null`` ``tool_calls``, ``function_call`` and ``refusal`` count as absent, as in the messages
  OpenAI's answers carry (a client that sends an answer back in the conversation sends them).
- ``weight`` (0 or 1, assistant messages): training files only; it marks which answers are
  trained and never reaches the template. In a request it is an unknown key.
- Any other key is refused, naming it (``messages[2].metadata``).

Every problem is reported, each with its code, the message's index and its field, all at once.
Training files are also checked for text a model must not be trained on (the tokenizer's
special tokens, answers of only whitespace).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
KEYS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "function_call", "refusal"}
)
TRAINING_KEYS = KEYS | {"weight"}
_NULL_MEANS_ABSENT = ("tool_calls", "function_call", "refusal")
_TEMPLATE_KEYS = ("name", "tool_calls", "tool_call_id", "function_call")  # in this order


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken rule: a stable ``code``, what to do, and where (``messages[2].content``)."""

    code: str
    message: str
    field: str
    index: int


@dataclass(slots=True)
class Normalised:
    """The messages as the template receives them (None when any has an error), and why not."""

    messages: list[dict[str, Any]] | None
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)


def normalise_messages(
    messages: list[Any],
    *,
    training: bool,
    path: str = "messages",
    reserved: re.Pattern[str] | None = None,
) -> Normalised:
    """Checks and normalises a conversation. ``training``: the rules of a training file
    (``weight``, text required); ``reserved`` finds special-token text that content must not
    hold (training files)."""
    result = Normalised(messages=[])
    for i, message in enumerate(messages):
        checker = _Message(f"{path}[{i}]", i, training, reserved, result)
        normalised = checker.check(message)
        if result.messages is not None and normalised is not None:
            result.messages.append(normalised)
    if result.errors:
        result.messages = None
    return result


def normalise_message(
    message: Any,
    *,
    training: bool,
    path: str,
    index: int,
    reserved: re.Pattern[str] | None = None,
) -> Normalised:
    """:func:`normalise_messages` for one message found at ``path``."""
    result = Normalised(messages=[])
    normalised = _Message(path, index, training, reserved, result).check(message)
    result.messages = [normalised] if normalised is not None and not result.errors else None
    return result


class _Message:
    """The checks of one message, adding what they find to ``result``."""

    def __init__(
        self,
        path: str,
        index: int,
        training: bool,
        reserved: re.Pattern[str] | None,
        result: Normalised,
    ) -> None:
        self.path, self.index, self.training, self.reserved = path, index, training, reserved
        self.result = result

    def err(self, code: str, message: str, where: str = "") -> None:
        self.result.errors.append(Problem(code, message, f"{self.path}{where}", self.index))

    def warn(self, code: str, message: str, where: str = "") -> None:
        self.result.warnings.append(Problem(code, message, f"{self.path}{where}", self.index))

    def check(self, message: Any) -> dict[str, Any] | None:
        if not isinstance(message, dict):
            self.err(
                "message_not_object",
                "each message must be a JSON object with 'role' and 'content', "
                f"not {json_type(message)}.",
            )
            return None
        before = len(self.result.errors)
        plain = len(message) == ("role" in message) + ("content" in message)
        if not plain:  # keys beyond role and content: null fields are dropped
            message = {
                k: v for k, v in message.items() if v is not None or k not in _NULL_MEANS_ABSENT
            }
        allowed = TRAINING_KEYS if self.training else KEYS
        if not message.keys() <= allowed:
            for key in sorted(message.keys() - allowed):
                self.err(
                    "message_unrecognized_key",
                    f"unrecognized key {key!r} in a message; allowed keys are "
                    f"{', '.join(sorted(allowed))}. Remove it.",
                    f".{key}",
                )
        role = self.role(message)
        text = self.content(message, role)
        if self.training and "weight" in message:
            self.weight(message["weight"], role)
        if "name" in message and not isinstance(message["name"], str):
            self.err("invalid_name", "name must be a string.", ".name")
        if "tool_calls" in message:
            self.tool_calls(message["tool_calls"], role)
        if "function_call" in message:
            self.function_call(message["function_call"], role)
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            self.err(
                "message_missing_key",
                "a tool message needs 'tool_call_id', the id of the call it answers.",
                ".tool_call_id",
            )
        if len(self.result.errors) > before or text is None:
            return None
        normalised: dict[str, Any] = {
            "role": "system" if role == "developer" else role,
            "content": text,
        }
        if not plain:
            for key in _TEMPLATE_KEYS:
                if key in message:
                    normalised[key] = message[key]
            if "tool_calls" in normalised:
                normalised["tool_calls"] = [_call(c) for c in normalised["tool_calls"]]
            if "function_call" in normalised:
                normalised["function_call"] = _function(normalised["function_call"])
        return normalised

    def role(self, message: dict[str, Any]) -> str | None:
        role = message.get("role")
        if "role" not in message:
            self.err(
                "message_missing_key",
                "message has no 'role'; add one of " + ", ".join(ROLES) + ".",
                ".role",
            )
        elif role not in ROLES:
            self.err(
                "unrecognized_role",
                f"role {role!r} is not recognized; use one of {', '.join(ROLES)}.",
                ".role",
            )
        return role if isinstance(role, str) and role in ROLES else None

    def content(self, message: dict[str, Any], role: str | None) -> str | None:
        """The message's text ("" when it may have none), or None after an error."""
        calls = "tool_calls" in message or "function_call" in message
        text = self.text(message.get("content"))
        if text is None:
            return None
        refusal = message.get("refusal")
        if "refusal" in message:
            if role != "assistant" or not isinstance(refusal, str):
                self.err(
                    "invalid_refusal",
                    "refusal must be a string, and only an assistant message may have one.",
                    ".refusal",
                )
            elif text:
                self.err(
                    "invalid_refusal",
                    "give either content or refusal (what the assistant said instead of an "
                    "answer), not both.",
                    ".refusal",
                )
            else:
                text = refusal
        textless = not text and not calls and "refusal" not in message
        if "content" not in message and textless:
            self.err(
                "message_missing_key", "message has no 'content'; add the message text.", ".content"
            )
        elif textless and (self.training or message["content"] is None):
            self.err(
                "missing_content",
                "content is empty; write the message text (only an assistant message with "
                "tool_calls may leave it out).",
                ".content",
            )
        if self.training and text and role == "assistant" and not text.strip() and not calls:
            self.warn(
                "empty_assistant_message",
                "the assistant message is only whitespace, so the model will learn to answer "
                "with nothing; write the answer, or set its weight to 0.",
                ".content",
            )
        if text and self.reserved is not None and (hit := self.reserved.search(text)):
            self.err(
                "reserved_token",
                f"content contains the special token {hit.group()!r}, which the tokenizer "
                "reserves for its chat format; remove or escape it.",
                ".content",
            )
        return text

    def text(self, content: Any) -> str | None:
        """The text of a ``content`` value, or None (with an error) if it has the wrong type."""
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        if not isinstance(content, list):
            self.err(
                "invalid_content_type",
                f"content must be a string or a list of text parts, not {json_type(content)}.",
                ".content",
            )
            return None
        texts: list[str] = []
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "text":
                if isinstance(part.get("text"), str) and part.keys() == {"type", "text"}:
                    texts.append(part["text"])
                    continue
                problem = 'a text part is {"type": "text", "text": "..."} and nothing else'
            else:
                kind = part.get("type") if isinstance(part, dict) else None
                what = f"a {kind!r} part" if isinstance(kind, str) else json_type(part)
                problem = (
                    f"content parts must be text parts, not {what}; these models take text "
                    "only, so send the text itself"
                )
            self.err("invalid_content_part", problem + ".", f".content[{j}]")
        return "".join(texts) if len(texts) == len(content) else None

    def weight(self, weight: Any, role: str | None) -> None:
        if role != "assistant":
            self.err(
                "invalid_weight",
                "'weight' is only allowed on assistant messages; remove it here.",
                ".weight",
            )
        elif isinstance(weight, bool) or weight not in (0, 1):
            self.err("invalid_weight", f"weight must be 0 or 1, not {weight!r}.", ".weight")

    def tool_calls(self, calls: Any, role: str | None) -> None:
        if role != "assistant":
            self.err(
                "invalid_tool_calls", "only assistant messages may have tool_calls.", ".tool_calls"
            )
            return
        if not isinstance(calls, list) or not calls:
            self.err("invalid_tool_calls", "tool_calls must be a non-empty list.", ".tool_calls")
            return
        for j, call in enumerate(calls):
            ok = (
                isinstance(call, dict)
                and isinstance(call.get("id"), str)
                and call.get("type", "function") == "function"
                and _is_function(call.get("function"))
            )
            if not ok:
                self.err(
                    "invalid_tool_calls",
                    'each tool call must be {"id": str, "type": "function", "function": '
                    '{"name": str, "arguments": "<JSON as a string>"}}.',
                    f".tool_calls[{j}]",
                )

    def function_call(self, call: Any, role: str | None) -> None:
        if role != "assistant" or not _is_function(call):
            self.err(
                "invalid_function_call",
                'function_call must be {"name": str, "arguments": "<JSON as a string>"}, and '
                "only an assistant message may have one.",
                ".function_call",
            )


def _is_function(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("name"), str)
        and isinstance(value.get("arguments"), str)
    )


def _function(value: dict[str, Any]) -> dict[str, Any]:
    return {"name": value["name"], "arguments": value["arguments"]}


def _call(call: dict[str, Any]) -> dict[str, Any]:
    return {"id": call["id"], "type": "function", "function": _function(call["function"])}


def json_type(value: Any) -> str:
    """How a JSON value is called in messages: "an object", "a list", "null", …"""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
