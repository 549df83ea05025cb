"""Chat and text completions as in OpenAI's API: the requests tunesmith accepts and the
``chat.completion``, ``chat.completion.chunk`` and ``text_completion`` objects it answers.

Requests are strict: an unknown field, or a parameter tunesmith does not implement with a value
that would change the answer (``logprobs``, penalties, ``response_format`` other than text),
is a 400 naming it, never silently ignored. Azure's ``content_filter_results`` and
``prompt_filter_results`` ride along on responses, as Azure OpenAI sends them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tunesmith.protocol.fields import OrAbsent

FinishReason = Literal["stop", "length", "content_filter", "tool_calls"]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False
    """Send a last chunk with the request's ``usage`` (and no choices) before ``[DONE]``."""


MAX_STOPS = 4
"""OpenAI's limit on stop sequences per request."""
MAX_STOP_CHARS = 256
"""Characters per stop sequence: OpenAI publishes no bound; matching costs this per character."""


class _Sampling(BaseModel):
    """Parameters shared by chat and text completions."""

    model_config = ConfigDict(extra="forbid")

    model: str
    """A deployment name, or the id (or registered name) of a deployed model."""
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1, le=128)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=-(2**63), le=2**63 - 1)
    """OpenAI's range: a signed 64-bit integer."""
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    user: str | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > MAX_STOPS or any(not s for s in stops):
            raise ValueError(f"give up to {MAX_STOPS} non-empty stop sequences")
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"a stop sequence is at most {MAX_STOP_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _unsupported(self) -> _Sampling:
        if self.presence_penalty or self.frequency_penalty:
            raise ValueError("presence_penalty and frequency_penalty are not supported; leave 0")
        if self.logit_bias:
            raise ValueError("logit_bias is not supported; leave it out")
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    def stops(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())


class ChatCompletionRequest(_Sampling):
    messages: list[dict[str, Any]] = Field(min_length=1)
    """system, developer, user, assistant and tool messages; checked by the chat service."""
    max_completion_tokens: int | None = Field(default=None, ge=1)
    tools: list[Any] | None = None
    """Function tools; checked, with ``tool_choice`` and ``parallel_tool_calls``, by
    :mod:`tunesmith.tool_use` (errors name ``tools[i].function.name`` and the like)."""
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None

    @model_validator(mode="after")
    def _chat_unsupported(self) -> ChatCompletionRequest:
        if self.logprobs or self.top_logprobs:
            raise ValueError("logprobs are not supported; leave logprobs and top_logprobs out")
        if self.response_format and self.response_format.get("type") != "text":
            raise ValueError("only response_format {'type': 'text'} is supported")
        if self.max_tokens is not None and self.max_completion_tokens is not None:
            raise ValueError("give max_tokens or max_completion_tokens, not both")
        return self

    def completion_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Sampling):
    prompt: str
    """One prompt text; the model continues it (``text_generation`` models)."""
    echo: bool = False
    suffix: str | None = None
    logprobs: int | None = None
    best_of: int | None = None

    @model_validator(mode="after")
    def _completion_unsupported(self) -> CompletionRequest:
        if self.suffix or self.logprobs or (self.best_of not in (None, 1)):
            raise ValueError("suffix, logprobs and best_of are not supported; leave them out")
        return self


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class FunctionCall(BaseModel):
    name: str
    arguments: str
    """A JSON object, as text."""


class ToolCall(BaseModel):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: OrAbsent[list[ToolCall]] = None


class ChatChoice(BaseModel):
    index: int
    message: ChatMessage
    finish_reason: FinishReason
    logprobs: None = None
    content_filter_results: OrAbsent[dict[str, dict[str, Any]]] = None


class PromptFilterResult(BaseModel):
    """Azure's verdict on the prompt (``prompt_index`` 0: the whole conversation)."""

    prompt_index: int = 0
    content_filter_results: dict[str, dict[str, Any]]


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: OrAbsent[str] = None
    prompt_filter_results: OrAbsent[list[PromptFilterResult]] = None


class ChunkFunction(BaseModel):
    name: OrAbsent[str] = None
    arguments: OrAbsent[str] = None


class ChunkToolCall(BaseModel):
    """A piece of a streamed call: the first names it (``id``, ``type``, ``function.name``,
    ``function.arguments: ""``), the next carries its arguments."""

    index: int
    id: OrAbsent[str] = None
    type: OrAbsent[Literal["function"]] = None
    function: ChunkFunction


class ChunkDelta(BaseModel):
    role: OrAbsent[Literal["assistant"]] = None
    content: OrAbsent[str] = None
    tool_calls: OrAbsent[list[ChunkToolCall]] = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: FinishReason | None = None
    """Null on every chunk until the choice ends (OpenAI's schema requires the field)."""
    logprobs: None = None
    content_filter_results: OrAbsent[dict[str, dict[str, Any]]] = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: OrAbsent[Usage] = None
    system_fingerprint: OrAbsent[str] = None
    prompt_filter_results: OrAbsent[list[PromptFilterResult]] = None


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: FinishReason | None
    logprobs: None = None
    content_filter_results: OrAbsent[dict[str, dict[str, Any]]] = None


class Completion(BaseModel):
    """A ``text_completion``; streamed chunks have the same shape with partial ``text``."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: OrAbsent[Usage] = None
    system_fingerprint: OrAbsent[str] = None
