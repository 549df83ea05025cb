"""Serverless endpoints (extension, as Azure AI Foundry's): ``POST {scoring_uri}/v1/chat/
completions`` and ``POST {scoring_uri}/v1/completions`` for the deployment the ``scoring_uri``
names, also without ``/v1`` (as Azure AI model inference clients send them).

The key is checked against the endpoint (:func:`tunesmith.endpoints.admit`) in its own short
transaction; the request then runs as the chat routes run it, with ``model`` set to the
deployment's name.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from tunesmith import endpoints
from tunesmith.api.body import ChatRoute, LimitedBody, json_object
from tunesmith.api.deps import ChatCaller, RuntimeDep
from tunesmith.api.openapi import json_body
from tunesmith.api.routes import chat
from tunesmith.auth import Principal
from tunesmith.protocol.chat import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
)
from tunesmith.store.db import transaction

router = APIRouter(
    prefix=endpoints.SCORING_PREFIX + "/{project_id}/{deployment_name}",
    tags=["endpoints"],
    route_class=ChatRoute,
)


def endpoint_caller(
    project_id: str, deployment_name: str, principal: ChatCaller, runtime: RuntimeDep
) -> Principal:
    with transaction(runtime.sessions) as session:
        endpoints.admit(session, principal, project_id=project_id, name=deployment_name)
    return principal


EndpointCaller = Annotated[Principal, Depends(endpoint_caller)]


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    openapi_extra=json_body(ChatCompletionRequest),
)
@router.post("/chat/completions", response_model=ChatCompletion, include_in_schema=False)
async def endpoint_chat_completion(
    deployment_name: str, caller: EndpointCaller, body: LimitedBody, runtime: RuntimeDep
) -> Any:
    return await chat.create_chat_completion(_for(deployment_name, body), caller, runtime)


@router.post(
    "/v1/completions", response_model=Completion, openapi_extra=json_body(CompletionRequest)
)
@router.post("/completions", response_model=Completion, include_in_schema=False)
async def endpoint_completion(
    deployment_name: str, caller: EndpointCaller, body: LimitedBody, runtime: RuntimeDep
) -> Any:
    return await chat.create_completion(_for(deployment_name, body), caller, runtime)


def _for(deployment_name: str, body: bytes) -> bytes:
    """The body with ``model`` naming the endpoint's deployment, whatever it named."""
    return json.dumps({**json_object(body), "model": deployment_name}).encode()
