"""Generation: an admitted :class:`~tunesmith.chat.Call` run on the engine, its answer released
to the client as it comes.

::

    engine.submit ─► sinks (engine thread) ─► asyncio.Queue (event loop)
      each token: tool calls read out (data/tool_calls.py), content held back for the
      completion filter (up to a word boundary), then sent as a Delta
      all choices done: usage metered, the limiter told the real token count

A client that leaves stops generation; its usage is metered all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tunesmith import tool_use, usage
from tunesmith.chat import Call, Serving
from tunesmith.data.tool_calls import CallReader, ParsedCall, Piece
from tunesmith.errors import ServerError
from tunesmith.ids import new_id
from tunesmith.protocol.chat import FinishReason
from tunesmith.serving.safety import ContentFilter, FilterResult, window_start
from tunesmith.store.db import transaction

INLINE_CHECK_CHARS = 2 * 1024
"""Texts up to this long are checked by a local filter on the event loop; longer ones (the
whole answer at its end) on a worker thread."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of one choice's answer (text, or one whole tool call), or (with
    ``finish_reason``) its end."""

    index: int
    text: str = ""
    finish_reason: FinishReason | None = None
    tool_call: ToolCall | None = None


@dataclass(slots=True)
class _Choice:
    """One choice on its way out."""

    reader: CallReader | None
    """Reads tool calls out of the answer; None: all of it is content."""
    sent: str = ""
    """What the content filter has passed: the content sent, and the text of each call."""
    held: str = ""
    """Content waiting for the filter."""
    calls: int = 0


class _QueueSink:
    """Hands one choice's output from the engine thread to the request's event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Any], index: int):
        self._loop, self._queue, self._index = loop, queue, index

    def token(self, text: str) -> None:
        self._put("token", text)

    def finish(self, reason: str, completion_tokens: int) -> None:
        self._put("finish", (reason, completion_tokens))

    def fail(self, error: BaseException) -> None:
        self._put("fail", error)

    def _put(self, kind: str, value: object) -> None:
        # RuntimeError: the request's loop has closed (the server is shutting down)
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (self._index, kind, value))


async def generate(serving: Serving, call: Call) -> AsyncIterator[Delta]:
    """The call's deltas as they come, each choice ending with a ``finish_reason``. Usage
    is metered before the last delta goes out; a client that leaves stops generation."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    sinks = [_QueueSink(loop, queue, i) for i in range(len(call.params))]
    try:
        call.generation = generation = await run_in_threadpool(
            serving.engine.submit,
            call.assets.source,
            call.prompt,
            list(zip(call.params, sinks, strict=True)),
            tokenizer=call.assets.decoder,
            stop_ids=call.assets.stop_ids,
        )
    except BaseException:  # nothing was generated: free the slot, meter nothing
        call.admission.finish(call.prompt_tokens, now=time.time())
        raise
    choices = [_Choice(call.tools.reader()) for _ in call.params]
    running = len(call.params)
    metered = False
    try:
        while running:
            index, kind, value = await queue.get()
            if kind == "fail":
                raise ServerError(f"Generation failed: {value}. Retry the request.")
            choice = choices[index]
            if kind == "token":
                pieces = choice.reader.push(value) if choice.reader else [value]
                async for delta in _release(call, index, choice, pieces, final=False):
                    yield delta
                continue
            reason, tokens = value
            call.completion_tokens += tokens
            running -= 1
            pieces = choice.reader.finish() if choice.reader else []
            async for delta in _release(call, index, choice, pieces, final=True):
                yield delta
            finish: FinishReason = reason
            if call.blocked(index):
                finish = "content_filter"
            elif choice.calls and (reason != "length" or (choice.reader and choice.reader.done)):
                finish = "tool_calls"
            if not running:
                await run_in_threadpool(meter, serving.sessions, call)
                metered = True
            yield Delta(index, finish_reason=finish)
    finally:
        if not metered:  # the client left, or generation failed
            generation.cancel()
            loop.run_in_executor(None, meter, serving.sessions, call)


def meter(sessions: sessionmaker[Session], call: Call) -> None:
    """Records the call's usage and tells the limiter its real token count."""
    call.admission.finish(call.prompt_tokens + call.completion_tokens, now=time.time())
    with transaction(sessions) as session:
        usage.record_request(
            session,
            deployment=call.target.deployment,
            kind=call.kind,
            prompt_tokens=call.prompt_tokens,
            completion_tokens=call.completion_tokens,
            now=int(time.time()),
        )


async def _release(
    call: Call, index: int, choice: _Choice, pieces: list[Piece], *, final: bool
) -> AsyncIterator[Delta]:
    """What of a choice's new pieces may go out: content once the filter passed it (with
    the filter on, up to the last word boundary until ``final``: a partial word, "ass" of
    "assistant", is no word yet), a call once its name and arguments passed."""
    for piece in [*pieces, ""] if final else pieces:
        if call.blocked(index):
            return
        if isinstance(piece, str):
            choice.held += piece
            last = final and piece == ""
            if text := await _screened(call, index, choice, whole=final, last=last):
                yield Delta(index, text)
            continue
        if text := await _screened(call, index, choice, whole=True):
            yield Delta(index, text)  # the content before the call goes first
        if call.blocked(index) or not await _passes(call, index, choice.sent, _call_text(piece)):
            return
        choice.sent += _call_text(piece)
        choice.calls += 1
        yield Delta(index, tool_call=ToolCall(new_id("call_"), piece.name, piece.arguments))
        if choice.reader is not None and choice.reader.done and call.generation:
            call.generation.cancel(index)  # no more calls are read: stop generating


async def _screened(
    call: Call, index: int, choice: _Choice, *, whole: bool, last: bool = False
) -> str:
    """The held content that may go out now ("" when none may, or the choice is blocked).
    The ``last`` check of a choice reads its whole answer, even with nothing held."""
    end = len(choice.held)
    if call.content_filter is not None and not whole:
        end = _last_boundary(choice.held)
        if end <= call.content_filter.check_every_chars:
            return ""
    if not (end or last) or not await _passes(
        call, index, choice.sent, choice.held[:end], whole=last
    ):
        return ""
    release, choice.held = choice.held[:end], choice.held[end:]
    choice.sent += release
    return release


async def _passes(call: Call, index: int, sent: str, new: str, *, whole: bool = False) -> bool:
    """Checks a choice's text so far with ``new`` added; a blocked choice is stopped.

    While the answer streams, a check reads ``new`` and the end of what was checked before
    (``safety.window_start``), so each costs the same however long the answer grows; a window
    the filter flags is checked again whole before the choice is blocked, and the ``whole``
    check at the end reads the entire answer: the verdicts are those of the whole text."""
    content_filter = call.content_filter
    if content_filter is None:
        return True
    start = 0 if whole else window_start(sent)
    verdict = await _checked(content_filter, sent[start:] + new)
    if verdict.filtered and start:
        verdict = await _checked(content_filter, sent + new)
    call.filter_results[index] = verdict
    if verdict.filtered and call.generation is not None:
        call.generation.cancel(index)  # stop generating what will not be sent
    return not verdict.filtered


async def _checked(content_filter: ContentFilter, text: str) -> FilterResult:
    """The filter's verdict on ``text``: on the event loop for a local filter and a short text
    (tens of microseconds, less than a thread hop), on a worker thread otherwise."""
    if content_filter.check_every_chars or len(text) > INLINE_CHECK_CHARS:
        return await run_in_threadpool(content_filter.check, text)
    return content_filter.check(text)


def _call_text(call: ParsedCall) -> str:
    return "\n" + tool_use.screened_text(call.name, call.arguments) + "\n"


def _last_boundary(text: str) -> int:
    """The length of ``text`` up to and including its last non-word character (0: none)."""
    for i in range(len(text) - 1, -1, -1):
        if not (text[i].isalnum() or text[i] == "_"):
            return i + 1
    return 0
