"""Tools in a chat request: checked as OpenAI checks them, then planned for the served model.

:func:`checked` reads ``tools``, ``tool_choice`` and ``parallel_tool_calls`` (every problem a
400 naming the field, before anything is looked up); :func:`plan` decides, for the model's own
call format (:class:`~tunesmith.data.tool_calls.CallSyntax`), what its answer does:

- ``none``: the tools are still rendered into the prompt (OpenAI passes them too), but the
  answer is never read for calls: it is content, as the model wrote it;
- ``auto`` (the default with tools): calls to offered tools are read out of the answer;
- ``required``: the answer starts with the opening of a call (``<tool_call>\\n{"name": "``)
  written at the end of the prompt, so the model continues inside a call and picks the name;
- a named function: the answer starts with the call's opening up to its arguments, the name
  fixed, and only that function's calls are read.

``parallel_tool_calls: false`` reads at most one call; generation stops once it is complete.
There is no constrained decoding: a forced call the model does not finish well is content.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from tunesmith.data.tool_calls import CallReader, CallSyntax
from tunesmith.errors import InvalidRequest
from tunesmith.protocol.chat import ChatCompletionRequest

MAX_TOOLS = 128  # OpenAI's limit
MAX_TOOL_BYTES = 64 * 1024
"""One tool's definition as JSON; the prompt it renders into is bounded by the context too."""
MAX_SCHEMA_DEPTH = 32
NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
FUNCTION_KEYS = frozenset({"name", "description", "parameters", "strict"})


@dataclass(frozen=True, slots=True)
class ToolRequest:
    """A request's tools, checked."""

    tools: list[dict[str, Any]] | None
    names: tuple[str, ...]
    choice: str
    """``none``, ``auto`` or ``required``; ``function`` with :attr:`function` set."""
    function: str | None
    parallel: bool


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """What serving does with one answer: its forced opening, and the calls read out of it."""

    prefix: str
    """Text the answer starts with, written at the end of the prompt ("" for none)."""
    syntax: CallSyntax | None
    """How calls are read; None: never (no tools, ``tool_choice`` none, an unread format)."""
    names: frozenset[str]
    limit: int | None

    def reader(self) -> CallReader | None:
        """A fresh reader for one choice, already holding the forced opening."""
        if self.syntax is None:
            return None
        reader = CallReader(self.syntax, self.names, limit=self.limit)
        reader.push(self.prefix)
        return reader


NOT_REQUESTED = ToolRequest(None, (), "none", None, True)
NO_TOOLS = ToolPlan("", None, frozenset(), None)


def checked(request: ChatCompletionRequest) -> ToolRequest:
    """The request's tools, or the :class:`InvalidRequest` naming what is wrong."""
    tools = request.tools
    if tools is None:
        for field in ("tool_choice", "parallel_tool_calls"):
            if getattr(request, field) is not None:
                raise InvalidRequest(
                    f"Invalid value for '{field}': '{field}' is only allowed when 'tools' are "
                    "specified.",
                    param=field,
                )
        return NOT_REQUESTED
    if not isinstance(tools, list) or not tools:
        raise InvalidRequest(
            "Invalid 'tools': give a non-empty list of function tools, or leave 'tools' out.",
            param="tools",
        )
    if len(tools) > MAX_TOOLS:
        raise InvalidRequest(
            f"Invalid 'tools': {len(tools)} tools given; at most {MAX_TOOLS} are allowed.",
            param="tools",
        )
    names = [_function_name(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidRequest(
                f"Invalid 'tools[{i}].function.name': {name!r} is given twice; function names "
                "must be unique.",
                param=f"tools[{i}].function.name",
            )
    choice, function = _choice(request.tool_choice, names)
    return ToolRequest(
        tools, tuple(names), choice, function, request.parallel_tool_calls is not False
    )


def plan(request: ToolRequest, syntax: CallSyntax | None, model: str) -> ToolPlan:
    """What ``model``, writing calls in ``syntax``, does with the request's tools."""
    if request.tools is None or request.choice == "none":
        return NO_TOOLS
    limit = None if request.parallel else 1
    if request.choice == "auto":
        if syntax is None:
            return NO_TOOLS  # calls in a format not read back stay content (documented)
        return ToolPlan("", syntax, frozenset(request.names), limit)
    prefix = syntax.forced_prefix(request.function) if syntax is not None else None
    if syntax is None or prefix is None:
        raise InvalidRequest(
            f"{model}'s chat template writes tool calls in a form tunesmith cannot read back or "
            f"start, so tool_choice {request.function or request.choice!r} cannot be honoured; "
            "use tool_choice 'auto' (calls then stay text in content).",
            param="tool_choice",
        )
    names = frozenset([request.function] if request.function else request.names)
    return ToolPlan(prefix, syntax, names, limit)


def screened_text(name: str, arguments: str) -> str:
    """What the content filter reads of a call: its name and its arguments' keys and values
    (the arguments as written, when they are not JSON)."""
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return f"{name} {arguments}"
    return " ".join([name, *_words(parsed)])


def screened_prompt(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str:
    """What the content filter reads of a chat request: every message's content, the calls
    assistant messages made (names and arguments), and the tools offered (names,
    descriptions and every key and value of their parameters' schemas)."""
    parts: list[str] = []
    for message in messages:
        parts.append(str(message.get("content") or ""))
        for call in message.get("tool_calls") or ():
            function = call.get("function") or {}
            parts.append(
                screened_text(str(function.get("name", "")), str(function.get("arguments", "")))
            )
    for tool in tools or ():
        parts.append(" ".join(_words(tool.get("function") or {})))
    return "\n".join(parts)


def _words(value: Any) -> list[str]:
    """The keys and values of a JSON value, depth first."""
    words: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in reversed(item.items()):
                stack.append(inner)
                stack.append(str(key))
        elif isinstance(item, list):
            stack.extend(reversed(item))
        elif item is not None:
            words.append(str(item))
    return words


def _function_name(tool: Any, where: str) -> str:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        raise InvalidRequest(
            f'Invalid \'{where}\': each tool must be {{"type": "function", "function": '
            '{"name": ..., "description": ..., "parameters": {...}}}; only function tools '
            "are supported.",
            param=f"{where}.type" if isinstance(tool, dict) else where,
        )
    unknown = sorted(set(tool) - {"type", "function"})
    if unknown:
        raise InvalidRequest(
            f"Invalid '{where}': unknown key {unknown[0]!r}; a tool has 'type' and 'function'.",
            param=f"{where}.{unknown[0]}",
        )
    function = tool.get("function")
    if not isinstance(function, dict):
        raise InvalidRequest(
            f"Invalid '{where}.function': give an object with 'name' and optional "
            "'description', 'parameters' and 'strict'.",
            param=f"{where}.function",
        )
    unknown = sorted(set(function) - FUNCTION_KEYS)
    if unknown:
        raise InvalidRequest(
            f"Invalid '{where}.function': unknown key {unknown[0]!r}; allowed are "
            + ", ".join(sorted(FUNCTION_KEYS))
            + ".",
            param=f"{where}.function.{unknown[0]}",
        )
    name = function.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InvalidRequest(
            f"Invalid '{where}.function.name': {name!r} does not match the pattern "
            "'^[a-zA-Z0-9_-]{1,64}$'; use 1 to 64 letters, digits, underscores or dashes.",
            param=f"{where}.function.name",
        )
    for key, kind in (("description", str), ("strict", bool), ("parameters", dict)):
        if function.get(key) is not None and not isinstance(function[key], kind):
            expected = {str: "a string", bool: "true or false", dict: "a JSON Schema object"}
            raise InvalidRequest(
                f"Invalid '{where}.function.{key}': expected {expected[kind]}.",
                param=f"{where}.function.{key}",
            )
    if _depth(function.get("parameters")) > MAX_SCHEMA_DEPTH:
        raise InvalidRequest(
            f"Invalid '{where}.function.parameters': nested deeper than {MAX_SCHEMA_DEPTH} levels.",
            param=f"{where}.function.parameters",
        )
    size = len(json.dumps(tool).encode())
    if size > MAX_TOOL_BYTES:
        raise InvalidRequest(
            f"Invalid '{where}': its definition is {size} bytes as JSON; at most "
            f"{MAX_TOOL_BYTES} are allowed.",
            param=where,
        )
    return name


def _choice(value: Any, names: list[str]) -> tuple[str, str | None]:
    if value is None:
        return "auto", None
    if value in ("none", "auto", "required"):
        return str(value), None
    named = value.get("function") if isinstance(value, dict) else None
    name = named.get("name") if isinstance(named, dict) else None
    if (
        not isinstance(value, dict)
        or set(value) != {"type", "function"}
        or value["type"] != "function"
        or not isinstance(named, dict)
        or set(named) != {"name"}
        or not isinstance(name, str)
    ):
        raise InvalidRequest(
            "Invalid value for 'tool_choice': give 'none', 'auto', 'required' or "
            '{"type": "function", "function": {"name": "<one of the tools>"}}.',
            param="tool_choice",
        )
    if name not in names:
        raise InvalidRequest(
            f"Invalid value for 'tool_choice': function {name!r} is not among the tools "
            f"given ({', '.join(names)}).",
            param="tool_choice",
        )
    return "function", name


def _depth(value: Any, level: int = 0) -> int:
    """How deeply ``value`` nests (stops counting past the limit)."""
    if level > MAX_SCHEMA_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level
