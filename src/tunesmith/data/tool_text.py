"""Tool calls as text, for chat templates that do not render them.

Many small models' templates (SmolLM2's among them) print only each message's ``content``: an
assistant turn that calls a tool would render as an empty answer, and training on it would teach
the model to reply with nothing. For such templates the conversation is rewritten before it is
rendered, in the widely used Hermes style that these models met in instruction tuning:

- an assistant message's ``tool_calls`` (or legacy ``function_call``) become
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` lines after its content;
- the ``tools`` (or legacy ``functions``) offered become a ``<tools>`` block in the system message,
  with one line saying how to call them.

Serving renders prompts with the same function, and :mod:`.tool_calls` reads ``<tool_call>``
blocks back into the OpenAI ``tool_calls`` shape, so training and inference agree on the format.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

TOOLS_PREAMBLE = (
    "You may call one or more functions to assist with the user query. The available "
    "functions are listed in <tools></tools> tags:\n<tools>\n{tools}\n</tools>\nTo call a "
    'function, reply with <tool_call>{{"name": <function-name>, "arguments": '
    "<args-json-object>}}</tool_call> for each call."
)


def call_text(name: str, arguments: Any) -> str:
    """One call as text; ``arguments`` given as a JSON string are embedded as an object."""
    if isinstance(arguments, str):
        with contextlib.suppress(json.JSONDecodeError):  # else kept as the string given
            arguments = json.loads(arguments)
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def calls_of(message: dict[str, Any]) -> list[str]:
    calls = [
        call_text(c["function"]["name"], c["function"].get("arguments", "{}"))
        for c in message.get("tool_calls") or []
    ]
    if message.get("function_call"):
        function = message["function_call"]
        calls.append(call_text(function["name"], function.get("arguments", "{}")))
    return calls


def inline_tools(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, *, calls: bool
) -> tuple[list[dict[str, Any]], int]:
    """The conversation with its calls (if ``calls``) and ``tools`` written into message text.

    Returns the new messages and how many messages were inserted at the front (0 or 1: a system
    message for the tool definitions when the conversation has none).
    """
    rewritten: list[dict[str, Any]] = []
    for message in messages:
        texts = calls_of(message) if calls else []
        if not texts:
            rewritten.append(message)
            continue
        plain = {k: v for k, v in message.items() if k not in ("tool_calls", "function_call")}
        plain["content"] = "\n".join(
            [message["content"], *texts] if message.get("content") else texts
        )
        rewritten.append(plain)
    if not tools:
        return rewritten, 0
    listing = "\n".join(json.dumps(t.get("function", t)) for t in tools)
    block = TOOLS_PREAMBLE.format(tools=listing)
    if rewritten and rewritten[0]["role"] == "system":
        first = rewritten[0]
        rewritten[0] = {**first, "content": f"{first['content']}\n\n{block}"}
        return rewritten, 0
    return [{"role": "system", "content": block}, *rewritten], 1
