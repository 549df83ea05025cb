"""``POST /v1/chat/completions`` and ``POST /v1/completions``, whole or streamed as server-sent
events ending ``data: [DONE]``; and Azure OpenAI's deployment paths
(``/openai/deployments/{name}/chat/completions``), where the path names the deployment.

The body is read with a size cap and parsed strictly; the services do the rest
(:mod:`tunesmith.chat` opens the call, :mod:`tunesmith.generation` runs it); this module only
shapes its deltas into OpenAI's objects.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from fastapi import APIRouter
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError

from tunesmith.api.body import ChatRoute, LimitedBody, json_object
from tunesmith.api.deps import ChatCaller, RuntimeDep
from tunesmith.api.openapi import json_body
from tunesmith.chat import Call, Serving
from tunesmith.errors import (
    ServerError,
    ServiceUnavailable,
    TunesmithError,
)
from tunesmith.generation import Delta, ToolCall, generate
from tunesmith.protocol.chat import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    ChunkDelta,
    ChunkFunction,
    ChunkToolCall,
    Completion,
    CompletionChoice,
    CompletionRequest,
    FunctionCall,
    PromptFilterResult,
    Usage,
)
from tunesmith.protocol.chat import ToolCall as WireToolCall

log = logging.getLogger(__name__)
router = APIRouter(tags=["chat"], route_class=ChatRoute)
azure = APIRouter(prefix="/openai/deployments/{deployment}", tags=["chat"], route_class=ChatRoute)

R = TypeVar("R", bound=BaseModel)


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    openapi_extra=json_body(ChatCompletionRequest),
)
async def create_chat_completion(body: LimitedBody, caller: ChatCaller, runtime: RuntimeDep) -> Any:
    return await _answer(runtime.serving, caller, _parse(ChatCompletionRequest, json_object(body)))


@router.post(
    "/v1/completions", response_model=Completion, openapi_extra=json_body(CompletionRequest)
)
async def create_completion(body: LimitedBody, caller: ChatCaller, runtime: RuntimeDep) -> Any:
    return await _answer(runtime.serving, caller, _parse(CompletionRequest, json_object(body)))


@azure.post("/chat/completions", response_model=ChatCompletion, include_in_schema=False)
async def azure_chat_completion(
    deployment: str, body: LimitedBody, caller: ChatCaller, runtime: RuntimeDep
) -> Any:
    fields = json_object(body)
    fields.setdefault("model", deployment)
    return await _answer(runtime.serving, caller, _parse(ChatCompletionRequest, fields))


@azure.post("/completions", response_model=Completion, include_in_schema=False)
async def azure_completion(
    deployment: str, body: LimitedBody, caller: ChatCaller, runtime: RuntimeDep
) -> Any:
    fields = json_object(body)
    fields.setdefault("model", deployment)
    return await _answer(runtime.serving, caller, _parse(CompletionRequest, fields))


async def _answer(
    serving: Serving | None, caller: Any, parsed: ChatCompletionRequest | CompletionRequest
) -> Any:
    if serving is None:
        raise ServiceUnavailable("This server does not serve models (serving is turned off).")
    call = await serving.open_call(caller, parsed)
    include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
    if parsed.stream:
        events = _chat_events if call.kind == "chat" else _completion_events
        deltas = await _started(generate(serving, call))
        return StreamingResponse(
            _sse(events(call, deltas, include_usage)),
            media_type="text/event-stream",
            headers={**call.headers, "cache-control": "no-cache"},
        )
    texts = [""] * len(call.params)
    calls: list[list[ToolCall]] = [[] for _ in call.params]
    reasons: list[Any] = [None] * len(call.params)
    async for delta in generate(serving, call):
        texts[delta.index] += delta.text
        if delta.tool_call is not None:
            calls[delta.index].append(delta.tool_call)
        if delta.finish_reason is not None:
            reasons[delta.index] = delta.finish_reason
    body = _whole(call, texts, calls, reasons)
    return JSONResponse(body.model_dump(mode="json"), headers=call.headers)


async def _started(deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
    """Runs generation up to its first delta before the response starts: from then on its
    clean-up (cancelling, metering, freeing the limiter's slot) happens even if the client
    leaves before the stream is read; and a failure before the first token is a plain error."""
    first = await anext(deltas)

    async def chained() -> AsyncIterator[Delta]:
        yield first
        async for delta in deltas:
            yield delta

    return chained()


def _usage(call: Call) -> Usage:
    return Usage(
        prompt_tokens=call.prompt_tokens,
        completion_tokens=call.completion_tokens,
        total_tokens=call.prompt_tokens + call.completion_tokens,
    )


def _filter_results(call: Call, index: int) -> dict[str, dict[str, Any]] | None:
    verdict = call.filter_results.get(index)
    if verdict is None and call.content_filter is not None:
        return {}
    return verdict.to_azure() if verdict is not None else None


def _prompt_filter(call: Call) -> list[PromptFilterResult] | None:
    if call.prompt_filter is None:
        return None
    return [PromptFilterResult(content_filter_results=call.prompt_filter.to_azure())]


def _message(text: str, calls: list[ToolCall]) -> ChatMessage:
    """An answer's message: its content (null when it is only calls) and its calls."""
    if not calls:
        return ChatMessage(content=text)
    return ChatMessage(
        content=text or None,
        tool_calls=[
            WireToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))
            for c in calls
        ],
    )


def _whole(
    call: Call, texts: list[str], calls: list[list[ToolCall]], reasons: list[Any]
) -> BaseModel:
    if call.kind == "chat":
        return ChatCompletion(
            id=call.id,
            created=call.created,
            model=call.model,
            choices=[
                ChatChoice(
                    index=i,
                    message=_message(text, calls[i]),
                    finish_reason=reasons[i],
                    content_filter_results=_filter_results(call, i),
                )
                for i, text in enumerate(texts)
            ],
            usage=_usage(call),
            prompt_filter_results=_prompt_filter(call),
        )
    return Completion(
        id=call.id,
        created=call.created,
        model=call.model,
        choices=[
            CompletionChoice(
                index=i,
                text=text,
                finish_reason=reasons[i],
                content_filter_results=_filter_results(call, i),
            )
            for i, text in enumerate(texts)
        ],
        usage=_usage(call),
    )


async def _chat_events(
    call: Call, deltas: AsyncIterator[Delta], include_usage: bool
) -> AsyncIterator[BaseModel]:
    def chunk(choices: list[ChunkChoice], **extra: Any) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=call.id, created=call.created, model=call.model, choices=choices, **extra
        )

    yield chunk(
        [
            ChunkChoice(index=i, delta=ChunkDelta(role="assistant", content=""))
            for i in range(len(call.params))
        ],
        prompt_filter_results=_prompt_filter(call),
    )
    calls = [0] * len(call.params)
    async for delta in deltas:
        if delta.tool_call is not None:
            # OpenAI's sequence: the call named with empty arguments, then its arguments
            tool = delta.tool_call
            opening = ChunkToolCall(
                index=calls[delta.index],
                id=tool.id,
                type="function",
                function=ChunkFunction(name=tool.name, arguments=""),
            )
            rest = ChunkToolCall(
                index=calls[delta.index], function=ChunkFunction(arguments=tool.arguments)
            )
            calls[delta.index] += 1
            for piece in (opening, rest):
                yield chunk([ChunkChoice(index=delta.index, delta=ChunkDelta(tool_calls=[piece]))])
        elif delta.finish_reason is None:
            yield chunk([ChunkChoice(index=delta.index, delta=ChunkDelta(content=delta.text))])
        else:
            done = ChunkChoice(
                index=delta.index,
                delta=ChunkDelta(),
                finish_reason=delta.finish_reason,
                content_filter_results=_filter_results(call, delta.index),
            )
            yield chunk([done])
    if include_usage:
        yield chunk([], usage=_usage(call))


async def _completion_events(
    call: Call, deltas: AsyncIterator[Delta], include_usage: bool
) -> AsyncIterator[BaseModel]:
    def chunk(choices: list[CompletionChoice], **extra: Any) -> Completion:
        return Completion(
            id=call.id, created=call.created, model=call.model, choices=choices, **extra
        )

    async for delta in deltas:
        yield chunk(
            [
                CompletionChoice(
                    index=delta.index,
                    text=delta.text,
                    finish_reason=delta.finish_reason,
                    content_filter_results=(
                        _filter_results(call, delta.index) if delta.finish_reason else None
                    ),
                )
            ]
        )
    if include_usage:
        yield chunk([], usage=_usage(call))


async def _sse(events: AsyncIterator[BaseModel]) -> AsyncIterator[bytes]:
    """Each event as ``data: <json>``; nulls are kept (a chunk's ``finish_reason``), and the
    fields that must be absent rather than null say so in their model (``OrAbsent``)."""
    try:
        async for event in events:
            yield b"data: " + event.model_dump_json().encode() + b"\n\n"
    except Exception as exc:  # once the headers are out, an error is an event of its own
        if not isinstance(exc, TunesmithError):
            log.exception("streamed generation failed", exc_info=exc)
            exc = ServerError("The server had an error while generating; retry the request.")
        yield b"data: " + json.dumps(exc.to_envelope()).encode() + b"\n\n"
        return
    yield b"data: [DONE]\n\n"


def _parse(model: type[R], body: dict[str, Any]) -> R:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        details: list[dict[str, Any]] = [dict(d) for d in exc.errors()]
        errors = [{**d, "loc": ("body", *d["loc"])} for d in details]
        raise RequestValidationError(errors) from None
