"""Chat and text completions: from an OpenAI request to tokens streaming out of the engine.

::

    open_call (worker thread)                         events (event loop)
      deployment ◄─ routing.resolve_target              engine.submit ─► sinks ─► asyncio.Queue
      weights + adapter ─► engine.prepare                 each delta: completion filter, then out
      model's own template ─► prompt tokens             all choices done: usage metered, limiter
      context check ─► rate limits ─► prompt filter        told the real token count

The prompt is rendered with the chat template and tokenizer stored with the served model (the
fine-tuned model's folder holds those it was trained with), and encoded as training encodes,
so serving feeds the model the tokens it learned from. Limits count the prompt plus
``max_tokens`` per choice when a request is admitted (as Azure does) and the real count after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tunesmith import tool_use, usage
from tunesmith.auth import Principal
from tunesmith.catalog.models import ModelUnavailable, materialize
from tunesmith.catalog.spec import CHAT_COMPLETION, TEXT_GENERATION
from tunesmith.data import messages as data_messages
from tunesmith.data.tool_calls import CallReader, ParsedCall, Piece
from tunesmith.deployments.routing import ServingTarget, resolve_target
from tunesmith.deployments.status import list_creating, record_load
from tunesmith.errors import InvalidRequest, ServerError, TunesmithError
from tunesmith.ids import new_id
from tunesmith.protocol.chat import ChatCompletionRequest, CompletionRequest, FinishReason
from tunesmith.protocol.deployments import DeploymentError
from tunesmith.ratelimits import Admission, RateLimiter
from tunesmith.serving.assets import ModelAssets, load_assets
from tunesmith.serving.engine import Engine, Generation, ModelSource
from tunesmith.serving.safety import ContentFilter, FilterResult, build_filter
from tunesmith.serving.sampling import SamplingParams
from tunesmith.settings import Settings
from tunesmith.store.db import transaction
from tunesmith.store.tables import DeploymentRow, ModelRow

log = logging.getLogger(__name__)
_PROBLEMS_SHOWN = 20  # of an invalid conversation's problems, in the error message
_ASSETS_KEPT = 64  # tokenizers and templates of recently served models

Kind = Literal["chat", "completion"]


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


@dataclass(slots=True)
class Call:
    """An admitted request, ready to generate."""

    id: str
    created: int
    kind: Kind
    target: ServingTarget
    assets: ModelAssets
    prompt: list[int]
    params: list[SamplingParams]
    admission: Admission
    content_filter: ContentFilter | None
    prompt_filter: FilterResult | None
    tools: tool_use.ToolPlan = tool_use.NO_TOOLS
    completion_tokens: int = 0
    filter_results: dict[int, FilterResult] = field(default_factory=dict)
    """The latest completion verdict of each choice (when the filter is on)."""
    generation: Generation | None = None

    def blocked(self, index: int) -> bool:
        verdict = self.filter_results.get(index)
        return verdict is not None and verdict.filtered

    @property
    def model(self) -> str:
        return self.target.deployment.model_id

    @property
    def prompt_tokens(self) -> int:
        return len(self.prompt)

    @property
    def headers(self) -> dict[str, str]:
        return {"x-request-id": self.id, **self.admission.headers}


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


class Serving:
    """The serving side of one server: the engine, the limiter, the content filter and the
    assets (tokenizer, template) of recently served models."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        engine: Engine,
        limiter: RateLimiter,
        content_filter: ContentFilter,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.engine = engine
        self.limiter = limiter
        self.content_filter = content_filter
        self._assets: OrderedDict[tuple[ModelSource, Path], ModelAssets] = OrderedDict()
        self._tokenizers: dict[str, ModelAssets] = {}
        """Loaded tokenizers by fingerprint, shared by the models whose files are identical."""
        self._assets_lock = threading.Lock()

    @classmethod
    def from_settings(
        cls, settings: Settings, sessions: sessionmaker[Session], limiter: RateLimiter
    ) -> Serving:
        import torch

        device = settings.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}.get(
            settings.serving_dtype, torch.bfloat16 if device == "cuda" else torch.float32
        )
        engine = Engine(
            max_batch=settings.serving_max_batch,
            max_adapters=settings.serving_max_adapters,
            base_idle_seconds=settings.serving_base_idle_seconds,
            device=device,
            dtype=dtype,
            threads=settings.serving_threads,
        )
        return cls(
            settings,
            sessions,
            engine=engine,
            limiter=limiter,
            content_filter=build_filter(settings),
        )

    # -- opening a call (blocking: run in a worker thread) ----------------------------------

    def open_call(
        self, principal: Principal, request: ChatCompletionRequest | CompletionRequest
    ) -> Call:
        """Resolves, renders, checks and admits a request; raises the 4xx it deserves."""
        now = int(time.time())
        tools = (
            tool_use.checked(request)
            if isinstance(request, ChatCompletionRequest)
            else tool_use.NOT_REQUESTED
        )
        with transaction(self.sessions) as session:
            target = resolve_target(session, principal, request.model, now=now)
            owner = _weights_owner(session, target)
        # Outside the transaction: the first request for a GGUF model waits for its conversion.
        source, folder = _source_of(target, owner, self.settings)
        assets = self.assets(source, folder, target.deployment.model_id)
        if isinstance(request, ChatCompletionRequest):
            kind: Kind = "chat"
            _require_task(target, CHAT_COMPLETION, "/v1/chat/completions")
            messages = normalise_messages(request.messages)
            plan = tool_use.plan(
                tools, assets.chat.call_syntax if assets.chat else None, target.deployment.name
            )
            prompt = assets.chat_prompt(messages, tools.tools, answer_prefix=plan.prefix)
            screened = "\n".join(str(m.get("content") or "") for m in messages)
            prompt_param = "messages"
        else:
            kind = "completion"
            _require_task(target, TEXT_GENERATION, "/v1/completions")
            prompt, screened, prompt_param = assets.encode(request.prompt), request.prompt, "prompt"
            plan = tool_use.NO_TOOLS
        max_tokens = self._max_tokens(request, len(prompt), assets.context_length)
        if request.n > self.engine.max_batch:
            raise InvalidRequest(
                f"n is {request.n}, but this server generates at most {self.engine.max_batch} "
                "choices per request (TUNESMITH_SERVING_MAX_BATCH).",
                param="n",
            )
        deployment = target.deployment
        admission = self.limiter.admit(
            deployment.id,
            target.limits,
            len(prompt) + max_tokens * request.n,
            now=time.time(),
        )
        try:
            content_filter = self.content_filter if deployment.content_filter else None
            verdict = content_filter.check(screened) if content_filter else None
            if verdict is not None and verdict.filtered:
                raise InvalidRequest(
                    "The prompt was blocked by this deployment's content filter ("
                    + ", ".join(f"{c}: {verdict.categories[c].severity}" for c in verdict.blocked())
                    + "). Rephrase the request; the deployment's owner can turn the filter off "
                    f"with PATCH /v1/deployments/{deployment.name} "
                    '{"content_filter": false}.',
                    param=prompt_param,
                    code="content_filter",
                )
            self._prepare(source, deployment.model_id)
        except BaseException:
            admission.finish(len(prompt), now=time.time())
            raise
        seed = request.seed
        params = [
            SamplingParams(
                max_tokens=max_tokens,
                temperature=request.temperature,
                top_p=request.top_p,
                stop=request.stops(),
                seed=None if seed is None else seed + i,
            )
            for i in range(request.n)
        ]
        return Call(
            id=new_id("chatcmpl-" if kind == "chat" else "cmpl-"),
            created=now,
            kind=kind,
            target=target,
            assets=assets,
            prompt=prompt,
            params=params,
            admission=admission,
            content_filter=content_filter,
            prompt_filter=verdict,
            tools=plan,
        )

    def stop(self) -> None:
        self.engine.stop()
        self.content_filter.close()

    def assets(self, source: ModelSource, folder: Path, name: str) -> ModelAssets:
        key = (source, folder)
        with self._assets_lock:
            if key in self._assets:
                self._assets.move_to_end(key)
                return self._assets[key]
        assets = load_assets(source, folder, name, known=self._tokenizers)
        with self._assets_lock:
            self._assets[key] = assets
            while len(self._assets) > _ASSETS_KEPT:
                self._assets.popitem(last=False)
        return assets

    def warm(self, deployment_id: str) -> None:
        """Loads a ``creating`` deployment's weights, adapter and tokenizer ahead of its first
        request, and records how that ended as its status (``deployments.status.record_load``):
        ``succeeded``, or ``failed`` with the error a chat request for it answers. Requests
        meanwhile load on their own (waiting for the same conversion) and report any failure
        as before. A deployment deleted meanwhile records nothing."""
        error: DeploymentError | None = None
        try:
            with transaction(self.sessions) as session:
                row = session.get(DeploymentRow, deployment_id)
                if row is None:
                    return
                target = resolve_target(
                    session,
                    Principal("warm-up", row.project_id, "reader"),
                    row.name,
                    now=int(time.time()),
                    touch=False,
                )
                owner = _weights_owner(session, target)
            model_id = target.deployment.model_id
            source, folder = _source_of(target, owner, self.settings)
            self.assets(source, folder, model_id)
            self._prepare(source, model_id)
        except TunesmithError as exc:  # model_not_servable, as a request for it would answer
            error = DeploymentError(code=exc.code or exc.error_type, message=exc.message)
        except Exception as exc:
            log.exception("loading the model of deployment %s failed", deployment_id)
            error = DeploymentError(
                code="model_load_failed", message=f"Loading failed ({type(exc).__name__}: {exc})."
            )
        try:
            with transaction(self.sessions) as session:
                record_load(session, deployment_id=deployment_id, error=error, now=int(time.time()))
        except Exception:  # off the request path: nobody to answer; it stays creating
            log.exception("recording the status of deployment %s failed", deployment_id)

    def warm_creating(self) -> None:
        """Loads every deployment a previous run of the server left ``creating`` (it stopped
        while loading), one after the other; ``succeeded`` ones load on their first request."""
        try:
            with transaction(self.sessions) as session:
                waiting = [row.id for row in list_creating(session)]
            for deployment_id in waiting:
                self.warm(deployment_id)
        except Exception:  # the server runs on; each deployment still loads on its first request
            log.exception("loading the deployments left creating failed")

    def _prepare(self, source: ModelSource, model_id: str) -> None:
        """Makes the weights (and adapter) resident; a model the engine cannot run is the
        request's error."""
        try:
            self.engine.prepare(source)
        except ValueError as exc:  # an architecture or adapter the engine cannot run
            raise InvalidRequest(
                f"{model_id} cannot be served: {exc}.",
                param="model",
                code="model_not_servable",
            ) from None

    def _max_tokens(
        self, request: ChatCompletionRequest | CompletionRequest, prompt: int, context: int
    ) -> int:
        asked = (
            request.completion_limit()
            if isinstance(request, ChatCompletionRequest)
            else request.max_tokens
        )
        param = "max_tokens"
        if isinstance(request, ChatCompletionRequest) and request.max_completion_tokens:
            param = "max_completion_tokens"
        ceiling = self.settings.max_completion_tokens
        if asked is not None and asked > ceiling:
            raise InvalidRequest(
                f"{param} is {asked}, but this server allows at most {ceiling} "
                "(TUNESMITH_MAX_COMPLETION_TOKENS).",
                param=param,
            )
        room = context - prompt
        if room < 1 or (asked is not None and asked > room):
            wanted = prompt + (asked or 1)
            raise InvalidRequest(
                f"This model's maximum context length is {context} tokens. However, you "
                f"requested {wanted} tokens ({prompt} in the messages, {asked or 1} in the "
                "completion). Please reduce the length of the messages or completion.",
                param="messages" if asked is None or prompt >= context else param,
                code="context_length_exceeded",
            )
        return asked if asked is not None else min(room, ceiling)

    # -- running a call (event loop) --------------------------------------------------------

    async def generate(self, call: Call) -> AsyncIterator[Delta]:
        """The call's deltas as they come, each choice ending with a ``finish_reason``. Usage
        is metered before the last delta goes out; a client that leaves stops generation."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        sinks = [_QueueSink(loop, queue, i) for i in range(len(call.params))]
        call.generation = generation = await run_in_threadpool(
            self.engine.submit,
            call.assets.source,
            call.prompt,
            list(zip(call.params, sinks, strict=True)),
            tokenizer=call.assets.decoder,
            stop_ids=call.assets.stop_ids,
        )
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
                    async for delta in self._release(call, index, choice, pieces, final=False):
                        yield delta
                    continue
                reason, tokens = value
                call.completion_tokens += tokens
                running -= 1
                pieces = choice.reader.finish() if choice.reader else []
                async for delta in self._release(call, index, choice, pieces, final=True):
                    yield delta
                finish: FinishReason = reason
                if call.blocked(index):
                    finish = "content_filter"
                elif choice.calls and (
                    reason != "length" or (choice.reader and choice.reader.done)
                ):
                    finish = "tool_calls"
                if not running:
                    await run_in_threadpool(self.meter, call)
                    metered = True
                yield Delta(index, finish_reason=finish)
        finally:
            if not metered:  # the client left, or generation failed
                generation.cancel()
                loop.run_in_executor(None, self.meter, call)

    async def _release(
        self, call: Call, index: int, choice: _Choice, pieces: list[Piece], *, final: bool
    ) -> AsyncIterator[Delta]:
        """What of a choice's new pieces may go out: content once the filter passed it (with
        the filter on, up to the last word boundary until ``final``: a partial word, "ass" of
        "assistant", is no word yet), a call once its name and arguments passed."""
        for piece in [*pieces, ""] if final else pieces:
            if call.blocked(index):
                return
            if isinstance(piece, str):
                choice.held += piece
                if text := await self._screened(call, index, choice, whole=final):
                    yield Delta(index, text)
                continue
            if text := await self._screened(call, index, choice, whole=True):
                yield Delta(index, text)  # the content before the call goes first
            if call.blocked(index) or not await self._passes(
                call, index, choice.sent, _call_text(piece)
            ):
                return
            choice.sent += _call_text(piece)
            choice.calls += 1
            yield Delta(index, tool_call=ToolCall(new_id("call_"), piece.name, piece.arguments))
            if choice.reader is not None and choice.reader.done and call.generation:
                call.generation.cancel(index)  # no more calls are read: stop generating

    async def _screened(self, call: Call, index: int, choice: _Choice, *, whole: bool) -> str:
        """The held content that may go out now ("" when none may, or the choice is blocked)."""
        end = len(choice.held)
        if call.content_filter is not None and not whole:
            end = _last_boundary(choice.held)
            if end <= call.content_filter.check_every_chars:
                return ""
        if not end or not await self._passes(call, index, choice.sent, choice.held[:end]):
            return ""
        release, choice.held = choice.held[:end], choice.held[end:]
        choice.sent += release
        return release

    async def _passes(self, call: Call, index: int, sent: str, new: str) -> bool:
        """Checks a choice's text so far with ``new`` added; a blocked choice is stopped."""
        if call.content_filter is None:
            return True
        if call.content_filter.check_every_chars:  # a network request: off the event loop
            verdict = await run_in_threadpool(call.content_filter.check, sent + new)
        else:  # a local filter, microseconds a check
            verdict = call.content_filter.check(sent + new)
        call.filter_results[index] = verdict
        if verdict.filtered and call.generation is not None:
            call.generation.cancel(index)  # stop generating what will not be sent
        return not verdict.filtered

    def meter(self, call: Call) -> None:
        """Records the call's usage and tells the limiter its real token count."""
        call.admission.finish(call.prompt_tokens + call.completion_tokens, now=time.time())
        with transaction(self.sessions) as session:
            usage.record_request(
                session,
                deployment=call.target.deployment,
                kind=call.kind,
                prompt_tokens=call.prompt_tokens,
                completion_tokens=call.completion_tokens,
                now=int(time.time()),
            )


def normalise_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's messages as the chat template receives them, by the rules training files
    follow (:mod:`tunesmith.data.messages`); every problem named by its index and field."""
    checked = data_messages.normalise_messages(messages, training=False)
    if checked.messages is None:
        shown = checked.errors[:_PROBLEMS_SHOWN]
        more = len(checked.errors) - len(shown)
        raise InvalidRequest(
            "Invalid messages: "
            + "; ".join(f"{p.field}: {p.message.rstrip('.')}" for p in shown)
            + (f"; and {more} more problems" if more else "")
            + ".",
            param=checked.errors[0].field,
        )
    return checked.messages


def _call_text(call: ParsedCall) -> str:
    return "\n" + tool_use.screened_text(call.name, call.arguments) + "\n"


def _last_boundary(text: str) -> int:
    """The length of ``text`` up to and including its last non-word character (0: none)."""
    for i in range(len(text) - 1, -1, -1):
        if not (text[i].isalnum() or text[i] == "_"):
            return i + 1
    return 0


def _weights_owner(session: Session, target: ServingTarget) -> Path | None:
    """The folder of the full fine-tuned model a deployed adapter runs on, if it has one (an
    adapter trained on top of a fully fine-tuned model); None: the catalog base model."""
    row = target.model
    if row is None or row.kind == "full" or not row.weights_of:
        return None
    owner = session.get(ModelRow, row.weights_of)
    return Path(owner.path) if owner is not None else None


def _source_of(
    target: ServingTarget, owner: Path | None, settings: Settings
) -> tuple[ModelSource, Path]:
    """The weights (and adapter) to serve, and the folder holding the served tokenizer. A GGUF
    base model is converted on first use (once, however many requests ask at the same time);
    one that cannot be is the request's error, not a server error."""
    row = target.model
    if row is not None and row.kind == "full":
        path = Path(row.path)
        return ModelSource(path), path
    weights = owner
    if weights is None:
        try:
            weights = materialize(target.base, settings.model_cache_dir())
        except ModelUnavailable as exc:
            raise InvalidRequest(
                f"{target.deployment.model_id} cannot be served: {exc}",
                param="model",
                code="model_not_servable",
            ) from None
    if row is None:
        return ModelSource(weights), weights
    path = Path(row.path)
    return ModelSource(weights, path), path


def _require_task(target: ServingTarget, task: str, endpoint: str) -> None:
    if task not in target.base.tasks:
        raise InvalidRequest(
            f"{target.deployment.name} serves {target.base.id}, which is registered for "
            f"{', '.join(target.base.tasks)}, not {task}; {endpoint} cannot serve it.",
            param="model",
            code="task_not_supported",
        )
