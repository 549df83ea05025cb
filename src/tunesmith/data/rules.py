"""The validation checklist, applied to one parsed JSONL line.

:func:`check_example` detects the line's format (chat ``messages``, preference ``input`` /
``preferred_output`` / ``non_preferred_output``, or ``prompt`` / ``completion``), applies every
rule of OpenAI's fine-tuning data format that concerns a single example (their codes are listed
in docs/API.md, *The validation report*), and returns all the problems it found plus the
normalised conversation the tokenizer renders. Rules that need the whole file (example count,
duplicates) or the tokenizer (length, template) live in :mod:`.validate`.

Each issue carries a stable ``code``, the 1-based line, the 0-based message index and the field
path, and its message says what to do. The rules of one message, and what the chat template
receives of it, are :mod:`.messages`' — the same that chat requests are held to.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from tunesmith.data.issues import Issue
from tunesmith.data.messages import normalise_message

Format = Literal["chat", "preference", "completion"]

CHAT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
PREFERENCE_KEYS = frozenset(
    {
        "input",
        "preferred_output",
        "non_preferred_output",
        "preferred_completion",
        "non_preferred_completion",
    }
)
PREFERENCE_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})
COMPLETION_KEYS = frozenset({"prompt", "completion"})


@dataclass(frozen=True, slots=True)
class ChatUnit:
    """What the tokenizer renders: normalised messages, tools, and which messages are trained."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    trainable: tuple[bool, ...]


@dataclass(frozen=True, slots=True)
class TextUnit:
    """A prompt/completion example; only the completion is trained."""

    prompt: str
    completion: str


@dataclass(slots=True)
class Checked:
    format: Format | None
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    unit: ChatUnit | TextUnit | None = None
    message_count: int = 0


def detect_format(obj: dict[str, Any]) -> Format | None:
    if "messages" in obj:
        return "chat"
    if obj.keys() & PREFERENCE_KEYS:
        return "preference"
    if obj.keys() & COMPLETION_KEYS:
        return "completion"
    return None


class _Checker:
    """Collects the issues of one line; ``err``/``warn`` fill in the line number."""

    def __init__(self, line: int, reserved: re.Pattern[str] | None) -> None:
        self.line = line
        self.reserved = reserved
        self.result = Checked(format=None)

    def err(self, code: str, msg: str, field: str | None = None, index: int | None = None) -> None:
        self.result.errors.append(Issue(code, msg, self.line, index, field))

    def warn(self, code: str, msg: str, field: str | None = None, index: int | None = None) -> None:
        self.result.warnings.append(Issue(code, msg, self.line, index, field))

    def unknown_keys(
        self, obj: dict[str, Any], allowed: frozenset[str], where: str, prefix: str = ""
    ) -> None:
        for key in sorted(obj.keys() - allowed):
            self.err(
                "example_unrecognized_key",
                f"unrecognized key {key!r}{where}; allowed keys are {', '.join(sorted(allowed))}."
                " Remove it.",
                field=f"{prefix}{key}",
            )

    # -- messages ------------------------------------------------------------------------------

    def message(self, msg: Any, path: str, index: int) -> dict[str, Any] | None:
        """Checks one message; returns it as the template receives it, or None if unusable."""
        checked = normalise_message(
            msg, training=True, path=path, index=index, reserved=self.reserved
        )
        for problem in checked.errors:
            self.err(problem.code, problem.message, problem.field, problem.index)
        for problem in checked.warnings:
            self.warn(problem.code, problem.message, problem.field, problem.index)
        return checked.messages[0] if checked.messages else None

    def tools(self, obj: dict[str, Any], prefix: str = "") -> list[dict[str, Any]] | None:
        tools = obj.get("tools")
        if "parallel_tool_calls" in obj and not isinstance(obj["parallel_tool_calls"], bool):
            self.err(
                "invalid_parallel_tool_calls",
                "parallel_tool_calls must be true or false.",
                f"{prefix}parallel_tool_calls",
            )
        if "functions" in obj and not isinstance(obj["functions"], list):
            self.err("invalid_functions", "functions must be a list.", f"{prefix}functions")
        if tools is None:
            return None
        ok = isinstance(tools, list) and all(
            isinstance(t, dict)
            and t.get("type") == "function"
            and isinstance(t.get("function"), dict)
            and isinstance(t["function"].get("name"), str)
            for t in tools
        )
        if not ok:
            self.err(
                "invalid_tools",
                'tools must be a list of {"type": "function", "function": {"name": str, ...}}.',
                f"{prefix}tools",
            )
            return None
        return cast(list[dict[str, Any]], tools)

    def messages(self, value: Any, path: str) -> list[dict[str, Any]] | None:
        if not isinstance(value, list) or not value:
            self.err(
                "missing_messages_list",
                f"'{path}' must be a non-empty list of messages "
                '(e.g. [{"role": "user", ...}, {"role": "assistant", ...}]).',
                path,
            )
            return None
        self.result.message_count += len(value)
        checked = [self.message(m, f"{path}[{i}]", i) for i, m in enumerate(value)]
        if any(m is None for m in checked):
            return None
        return [m for m in checked if m is not None]

    # -- formats -------------------------------------------------------------------------------

    def chat(self, obj: dict[str, Any]) -> None:
        self.unknown_keys(obj, CHAT_KEYS, " at the top level of a chat example")
        tools = self.tools(obj)
        messages = self.messages(obj.get("messages"), "messages")
        if messages is None:
            return
        roles = [m["role"] for m in messages]
        if "assistant" not in roles:
            self.err(
                "example_missing_assistant_message",
                "the example has no assistant message, so there is nothing to learn; "
                "add the answer the model should give.",
                "messages",
            )
            return
        weights = [m.get("weight", 1) for m in obj["messages"]]
        trainable = tuple(r == "assistant" and w == 1 for r, w in zip(roles, weights, strict=True))
        if not any(trainable):
            self.err(
                "no_trainable_messages",
                "every assistant message has weight 0, so there is nothing to learn; "
                "set weight 1 on at least one.",
                "messages",
            )
            return
        if "system" not in roles:
            self.warn(
                "missing_system_message",
                "the example has no system message; add one if the model should follow "
                "standing instructions.",
                "messages",
            )
        if "user" not in roles:
            self.warn(
                "missing_user_message",
                "the example has no user message; add the request the answer responds to.",
                "messages",
            )
        if self.result.errors:
            return
        self.result.unit = ChatUnit(messages, tools, trainable)

    def preference(self, obj: dict[str, Any]) -> None:
        self.unknown_keys(obj, PREFERENCE_KEYS, " in a preference example")
        inp = obj.get("input")
        if not isinstance(inp, dict):
            self.err(
                "missing_input",
                "a preference example needs 'input': {\"messages\": [...]}, the conversation "
                "before the answer.",
                "input",
            )
            messages = None
            tools = None
        else:
            self.unknown_keys(inp, PREFERENCE_INPUT_KEYS, " in 'input'", "input.")
            tools = self.tools(inp, "input.")
            messages = self.messages(inp.get("messages"), "input.messages")
            if messages and messages[-1]["role"] == "assistant":
                self.err(
                    "invalid_input_messages",
                    "input.messages must not end with an assistant message; the preferred and "
                    "non-preferred outputs are the assistant's answer.",
                    f"input.messages[{len(messages) - 1}]",
                    len(messages) - 1,
                )
        chosen = self.output(obj, "preferred")
        self.output(obj, "non_preferred")
        if self.result.errors or messages is None or chosen is None:
            return
        trainable = (False,) * len(messages) + (True,)
        self.result.unit = ChatUnit([*messages, chosen], tools, trainable)

    def output(self, obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
        key, alias = f"{kind}_output", f"{kind}_completion"
        if key in obj and alias in obj:
            self.err(f"invalid_{key}", f"give either '{key}' or '{alias}', not both.", alias)
            return None
        name = alias if alias in obj and key not in obj else key  # absent: the canonical name
        value = obj.get(name)
        if not isinstance(value, list) or len(value) != 1:
            self.err(
                f"invalid_{key}",
                f"'{name}' must be a list holding exactly one assistant message.",
                name,
            )
            return None
        msg = self.message(value[0], f"{name}[0]", 0)
        if msg is not None and msg["role"] != "assistant":
            self.err(
                f"invalid_{key}",
                f"the message in '{name}' must have role 'assistant', not {msg['role']!r}.",
                f"{name}[0].role",
                0,
            )
            return None
        return msg

    def completion(self, obj: dict[str, Any]) -> None:
        self.unknown_keys(obj, COMPLETION_KEYS, " in a prompt/completion example")
        prompt, completion = obj.get("prompt"), obj.get("completion")
        if not isinstance(prompt, str):
            code = "missing_prompt" if prompt is None else "invalid_prompt"
            self.err(code, "'prompt' must be a string (it may be empty).", "prompt")
        if not isinstance(completion, str) or not completion:
            code = "missing_completion" if completion is None else "invalid_completion"
            self.err(code, "'completion' must be a non-empty string.", "completion")
        for key in ("prompt", "completion"):
            text = obj.get(key)
            if isinstance(text, str) and self.reserved and (hit := self.reserved.search(text)):
                self.err(
                    "reserved_token",
                    f"{key} contains the special token {hit.group()!r}; remove or escape it.",
                    key,
                )
        if not self.result.errors and isinstance(prompt, str) and isinstance(completion, str):
            self.result.unit = TextUnit(prompt, completion)


def check_example(
    obj: dict[str, Any], *, line: int, reserved: re.Pattern[str] | None = None
) -> Checked:
    """All single-example rules for one parsed line. ``reserved`` matches special-token text."""
    checker = _Checker(line, reserved)
    fmt = detect_format(obj)
    checker.result.format = fmt
    if fmt == "chat":
        checker.chat(obj)
    elif fmt == "preference":
        checker.preference(obj)
    elif fmt == "completion":
        checker.completion(obj)
    else:
        checker.err(
            "missing_messages_list",
            "the example has no 'messages' list; write each line as "
            '{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}.',
            "messages",
        )
    return checker.result


def reserved_pattern(special_tokens: list[str]) -> re.Pattern[str] | None:
    """A regex that finds any of the tokenizer's special tokens inside text."""
    tokens = sorted({t for t in special_tokens if t}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, tokens))) if tokens else None
