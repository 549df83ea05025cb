"""Chat and text completions, the request side: an OpenAI request made an admitted
:class:`Call`, ready to generate (``generation.py`` runs it).

::

    open_call
      deployment ◄─ deployments/routing.py resolve_target (worker thread)
      a slot of the deployment's limits (waiting on the event loop while it is busy)
      weights + adapter ─► engine.prepare (served_models.py)
      model's own template ─► prompt tokens
      context check ─► rate limits ─► prompt filter ─► Call

The prompt is rendered with the chat template and tokenizer stored with the served model (the
fine-tuned model's folder holds those it was trained with), and encoded as training encodes,
so serving feeds the model the tokens it learned from. Limits count the prompt plus
``max_tokens`` per choice when a request is admitted (as Azure does) and the real count after.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from tunesmith import tool_use
from tunesmith.auth import Principal
from tunesmith.catalog.spec import CHAT_COMPLETION, TEXT_GENERATION
from tunesmith.data import messages as data_messages
from tunesmith.deployments.routing import ServingTarget, resolve_target
from tunesmith.errors import InvalidRequest
from tunesmith.ids import new_id
from tunesmith.protocol.chat import ChatCompletionRequest, CompletionRequest
from tunesmith.ratelimits import Admission, RateLimiter
from tunesmith.served_models import ServedModels, weights_owner
from tunesmith.serving.assets import ModelAssets
from tunesmith.serving.engine import Engine, Generation
from tunesmith.serving.safety import ContentFilter, FilterResult, build_filter
from tunesmith.serving.sampling import SamplingParams
from tunesmith.settings import Settings
from tunesmith.store.db import transaction

_PROBLEMS_SHOWN = 20  # of an invalid conversation's problems, in the error message

Kind = Literal["chat", "completion"]


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


class Serving:
    """The serving side of one server: the engine, the limiter, the content filter and the
    models it serves (:class:`~tunesmith.served_models.ServedModels`)."""

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
        self.models = ServedModels(settings, sessions, engine)

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

    async def open_call(
        self, principal: Principal, request: ChatCompletionRequest | CompletionRequest
    ) -> Call:
        """Resolves, admits, renders and checks a request; raises the 4xx it deserves."""
        now = int(time.time())
        tools = (
            tool_use.checked(request)
            if isinstance(request, ChatCompletionRequest)
            else tool_use.NOT_REQUESTED
        )
        target, owner = await run_in_threadpool(self._resolve, principal, request.model, now)
        # Admitted before any work is spent on it (its model's load, its prompt's rendering):
        # under overload a refusal costs next to nothing, so the engine keeps its capacity.
        admission = await self.limiter.wait_for_room(
            target.deployment.id,
            target.limits,
            wait_seconds=self.settings.admission_wait_seconds,
        )
        try:
            return await run_in_threadpool(
                self._admitted, target, owner, request, tools, admission, now
            )
        except BaseException:  # refused (or failed) before it was served: not counted
            admission.withdraw()
            raise

    def _resolve(
        self, principal: Principal, model: str, now: int
    ) -> tuple[ServingTarget, Path | None]:
        with transaction(self.sessions) as session:
            target = resolve_target(session, principal, model, now=now)
            return target, weights_owner(session, target)

    def _admitted(
        self,
        target: ServingTarget,
        owner: Path | None,
        request: ChatCompletionRequest | CompletionRequest,
        tools: tool_use.ToolRequest,
        admission: Admission,
        now: int,
    ) -> Call:
        # Outside the transaction: the first request for a GGUF model waits for its conversion.
        source, assets = self.models.load(target, owner)
        if isinstance(request, ChatCompletionRequest):
            kind: Kind = "chat"
            _require_task(target, CHAT_COMPLETION, "/v1/chat/completions")
            messages = normalise_messages(request.messages)
            plan = tool_use.plan(
                tools, assets.chat.call_syntax if assets.chat else None, target.deployment.name
            )
            prompt = assets.chat_prompt(messages, tools.tools, answer_prefix=plan.prefix)
            screened = tool_use.screened_prompt(messages, tools.tools)
            prompt_param = "messages"
        else:
            kind = "completion"
            _require_task(target, TEXT_GENERATION, "/v1/completions")
            prompt, screened, prompt_param = assets.encode(request.prompt), request.prompt, "prompt"
            plan = tool_use.NO_TOOLS
        if not prompt:  # the engine's prefill needs a token to continue from
            raise InvalidRequest(
                "The prompt is empty: it encodes to no tokens, and the model needs at least "
                "one to continue from. Send some text.",
                param=prompt_param,
            )
        max_tokens = self._max_tokens(request, len(prompt), assets.context_length)
        if request.n > self.engine.max_batch:
            raise InvalidRequest(
                f"n is {request.n}, but this server generates at most {self.engine.max_batch} "
                "choices per request (TUNESMITH_SERVING_MAX_BATCH).",
                param="n",
            )
        deployment = target.deployment
        admission.charge(len(prompt) + max_tokens * request.n, now=time.time())
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
        self.models.prepare(source, deployment.model_id)
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


def _require_task(target: ServingTarget, task: str, endpoint: str) -> None:
    if task not in target.base.tasks:
        raise InvalidRequest(
            f"{target.deployment.name} serves {target.base.id}, which is registered for "
            f"{', '.join(target.base.tasks)}, not {task}; {endpoint} cannot serve it.",
            param="model",
            code="task_not_supported",
        )
