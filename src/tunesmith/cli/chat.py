"""``tunesmith chat MODEL``: talk to a deployed model, answers streamed as they are generated.

With ``-m`` it asks once and prints the answer; without, it reads one message per line (``> ``
prompt on a terminal; piped input works line by line), keeps the conversation, and stops at
``/exit`` or the end of input."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tunesmith.cli.connection import CliError, add_connection_flags, connect

EXIT_WORDS = {"/exit", "/quit"}


def register(sub: Any) -> None:
    chat = sub.add_parser("chat", help="chat with a deployed model (streamed)")
    chat.add_argument("model", help="a deployment's name, or a deployed model's id or name")
    chat.add_argument("-m", "--message", help="ask once, print the answer, exit")
    chat.add_argument("--system", help="a system message to start the conversation")
    chat.add_argument("--temperature", type=float, help="0 (greedy) to 2")
    chat.add_argument("--max-tokens", type=int, help="the most tokens in each answer")
    add_connection_flags(chat)
    chat.set_defaults(func=chat_command)


def chat_command(args: argparse.Namespace) -> int:
    client = connect(args).openai()
    history: list[dict[str, str]] = []
    if args.system:
        history.append({"role": "system", "content": args.system})
    if args.message is not None:
        history.append({"role": "user", "content": args.message})
        answer(client, args, history)
        return 0
    interactive = sys.stdin.isatty()
    while True:
        line = _read(interactive)
        if line is None:
            break
        text = line.strip()
        if not text:
            continue
        if text in EXIT_WORDS:
            break
        history.append({"role": "user", "content": text})
        history.append({"role": "assistant", "content": answer(client, args, history)})
    return 0


def _read(interactive: bool) -> str | None:
    if interactive:
        try:
            return input("> ")
        except EOFError:
            print()
            return None
    line = sys.stdin.readline()
    return line if line else None


def answer(client: Any, args: argparse.Namespace, history: list[dict[str, str]]) -> str:
    """Streams one answer to stdout (ending with a newline) and returns its text; an answer
    stopped by the content filter is an error."""
    options: dict[str, Any] = {}
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    stream = client.chat.completions.create(
        model=args.model, messages=history, stream=True, **options
    )
    parts: list[str] = []
    finish: str | None = None
    for chunk in stream:
        for choice in chunk.choices:
            delta = choice.delta.content if choice.delta else None
            if delta:
                parts.append(delta)
                sys.stdout.write(delta)
                sys.stdout.flush()
            if choice.finish_reason:
                finish = choice.finish_reason
    sys.stdout.write("\n")
    sys.stdout.flush()
    if finish == "content_filter":
        raise CliError("the answer was stopped by the content filter")
    return "".join(parts)
