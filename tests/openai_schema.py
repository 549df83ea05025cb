"""OpenAI's published response schemas, as a validator for recorded responses.

The document is OpenAI's ``openapi.yaml`` (``openai/openai-openapi``, commit ``COMMIT``), trimmed
by ``tests/data/openai-openapi/trim.py`` to the operations tunesmith implements. It is OpenAPI
3.1, whose schemas are JSON Schema 2020-12, but it keeps a few OpenAPI 3.0 spellings; these are
rewritten here (``normalise``), in the schema, never in tunesmith's answers:

- ``nullable: true`` → ``anyOf: [<the schema>, {type: null}]`` (also when it is a lone member of
  an ``allOf``, as ``Upload.file`` spells it);
- a boolean ``exclusiveMinimum`` / ``exclusiveMaximum`` → the number, from ``minimum`` /
  ``maximum``.

Where the document contradicts OpenAI's own API, ``AMENDMENTS`` patches it, each with its reason.

``OpenAISchema.problems(method, path, body, status=...)`` lists what is wrong, one line per
problem, starting with the JSON path (``$.choices[0].finish_reason``); ``check`` raises with
them. A stream is checked chunk by chunk (``parse_sse``; ``data: [DONE]`` ends it).
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_DIR = Path(__file__).parent / "data" / "openai-openapi"
COMMIT = "f85dbe223d40e1a31cba812ab2d755c7e98a92a3"
"""The commit of ``openai/openai-openapi`` the trimmed document comes from."""
BASE_URI = "urn:openai-openapi"

Schema = dict[str, Any]

_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SCHEMA_ONE = (
    "items",
    "additionalProperties",
    "not",
    "contains",
    "propertyNames",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")


def normalise(schema: Any) -> Any:
    """The schema with its OpenAPI 3.0 spellings in JSON Schema 2020-12."""
    if not isinstance(schema, dict):
        return schema
    node = dict(schema)
    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            node[key] = {name: normalise(sub) for name, sub in node[key].items()}
    for key in _SCHEMA_ONE:
        if isinstance(node.get(key), dict):
            node[key] = normalise(node[key])
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            node[key] = [normalise(sub) for sub in node[key]]
    nullable = node.pop("nullable", False)
    if isinstance(node.get("allOf"), list):
        lone = [s for s in node["allOf"] if s in ({"anyOf": [{}, {"type": "null"}]}, {})]
        if lone and len(lone) < len(node["allOf"]):
            # ``allOf: [X, {nullable: true}]``: 3.0's way of saying "X or null"
            nullable = nullable or any(s != {} for s in lone)
            node["allOf"] = [s for s in node["allOf"] if s not in lone]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        # 3.0: ``minimum: 0, exclusiveMinimum: true``; 3.1: ``exclusiveMinimum: 0``
        if isinstance(node.get(exclusive), bool) and node.pop(exclusive) and bound in node:
            node[exclusive] = node.pop(bound)
    if nullable:
        return {"anyOf": [node, {"type": "null"}]}
    return node


def _normalise_document(document: dict[str, Any]) -> dict[str, Any]:
    document = copy.deepcopy(document)
    for kind in ("schemas",):
        section = document.get("components", {}).get(kind, {})
        for name in section:
            section[name] = normalise(section[name])
    for operations in document["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if "schema" in parameter:
                    parameter["schema"] = normalise(parameter["schema"])
            for response in operation["responses"].values():
                for media in response.get("content", {}).values():
                    if "schema" in media:
                        media["schema"] = normalise(media["schema"])
    return document


def _pointer(*parts: str) -> str:
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def _at(document: dict[str, Any], pointer: str) -> Any:
    node: Any = document
    for part in pointer.lstrip("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


# -- amendments: where the document contradicts OpenAI's own API ---------------------------------


@dataclass(frozen=True)
class Amendment:
    pointer: str
    """JSON pointer into the (normalised) document of the schema or response amended."""
    change: Callable[[Any, dict[str, Any]], Any]
    """The amended value, from the document's value there (and the whole document)."""
    reason: str


def _nullable(schema: Schema, _document: dict[str, Any] | None = None) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _with_status(status: str) -> Callable[[Schema, dict[str, Any]], Schema]:
    def change(schema: Schema, _document: dict[str, Any]) -> Schema:
        return {**schema, "enum": [*schema["enum"], status]}

    return change


def _completion_stream(response: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """A ``text/event-stream`` body for POST /completions: CreateCompletionResponse, with each
    choice's ``finish_reason`` null until the choice ends."""
    chunk = copy.deepcopy(document["components"]["schemas"]["CreateCompletionResponse"])
    finish = chunk["properties"]["choices"]["items"]["properties"]
    finish["finish_reason"] = _nullable(finish["finish_reason"])
    return {**response, "content": {**response["content"], "text/event-stream": {"schema": chunk}}}


AMENDMENTS: tuple[Amendment, ...] = (
    Amendment(
        _pointer("components", "schemas", "FineTuningJob", "properties", "status"),
        _with_status("paused"),
        "The status enum lacks `paused`, which POST /fine_tuning/jobs/{id}/pause answers: the "
        'document\'s own example response for pauseFineTuningJob has `"status": "paused"`.',
    ),
    *(
        Amendment(
            _pointer("components", "schemas", "ListFilesResponse", "properties", field),
            _nullable,
            f"`{field}` is a required string, but an empty page has no first or last file: the "
            "API answers null there, as the document itself spells it for the other cursor "
            "pages tunesmith serves (ListFineTuningJobCheckpointsResponse).",
        )
        for field in ("first_id", "last_id")
    ),
    Amendment(
        _pointer("paths", "/completions", "post", "responses", "200"),
        _completion_stream,
        "POST /completions documents no text/event-stream schema; its `stream` parameter says "
        "the answer comes as server-sent events of the same object, and OpenAI's stream sends "
        "each choice's `finish_reason` as null until the choice ends (the chat chunk schema "
        "spells this out; CreateCompletionResponse requires a string).",
    ),
)


def _amend(document: dict[str, Any]) -> dict[str, Any]:
    for amendment in AMENDMENTS:
        parent_pointer, _, last = amendment.pointer.rpartition("/")
        parent = _at(document, parent_pointer) if parent_pointer else document
        key = last.replace("~1", "/").replace("~0", "~")
        parent[key] = amendment.change(parent[key], document)
    return document


# -- server-sent events ------------------------------------------------------------------------


def parse_sse(text: str) -> list[Any]:
    """The JSON objects of an SSE body, in order; it must end with ``data: [DONE]``, and
    nothing may follow that."""
    chunks: list[Any] = []
    done = False
    for event in re.split(r"\r?\n\r?\n", text):
        lines = [line for line in event.splitlines() if line and not line.startswith(":")]
        if not lines:
            continue
        assert not done, f"an event after data: [DONE]: {event!r}"
        data = "\n".join(line.removeprefix("data:").removeprefix(" ") for line in lines)
        assert all(line.startswith("data:") for line in lines), f"not a data event: {event!r}"
        if data == "[DONE]":
            done = True
            continue
        chunks.append(json.loads(data))
    assert done, "the stream did not end with data: [DONE]"
    return chunks


# -- the validator ------------------------------------------------------------------------------


_PREFIXES = ("/openai/v1", "/v1", "/openai")


class OpenAISchema:
    """The trimmed document, normalised and amended, with a validator per response schema."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = _amend(_normalise_document(document))
        resource = Resource(contents=self.document, specification=DRAFT202012)
        self.registry: Registry[Any] = Registry().with_resource(BASE_URI, resource)
        self._templates = [
            (re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$"), path)
            for path in self.document["paths"]
        ]

    @classmethod
    @functools.cache
    def load(cls) -> OpenAISchema:
        return cls(json.loads((SPEC_DIR / "openapi.json").read_text()))

    def operation_path(self, path: str) -> str:
        """The document's path template for a served path (``/v1/files/file-1`` →
        ``/files/{file_id}``); Azure's ``/openai/deployments/{name}/…`` included."""
        path = path.split("?", 1)[0]
        path = re.sub(r"^/openai/deployments/[^/]+", "", path)
        for prefix in _PREFIXES:
            if path.startswith(prefix + "/"):
                path = path[len(prefix) :]
                break
        for pattern, template in self._templates:
            if pattern.match(path):
                return template
        raise KeyError(f"OpenAI documents no operation at {path}")

    def response_pointer(
        self, method: str, path: str, status: int = 200, media: str = "application/json"
    ) -> str:
        """A JSON pointer to the schema of an operation's response. An error status the
        operation does not document is OpenAI's error envelope (``ErrorResponse``)."""
        template = self.operation_path(path)
        operation = self.document["paths"][template][method.lower()]
        response = operation["responses"].get(str(status))
        if response is None and status >= 400:
            return _pointer("components", "schemas", "ErrorResponse")
        if response is None:
            raise KeyError(f"{method} {template} documents no {status} response")
        if "$ref" in response:
            response = _at(self.document, response["$ref"].removeprefix("#"))
        if media not in response.get("content", {}):
            raise KeyError(f"{method} {template} {status} documents no {media} body")
        if status >= 400 and "schema" not in response["content"][media]:
            return _pointer("components", "schemas", "ErrorResponse")
        return _pointer(
            "paths", template, method.lower(), "responses", str(status), "content", media, "schema"
        )

    def parameter_schema(self, method: str, path: str, name: str) -> Schema:
        template = self.operation_path(path)
        for parameter in self.document["paths"][template][method.lower()].get("parameters", []):
            if parameter["name"] == name:
                schema: Schema = parameter["schema"]
                return schema
        raise KeyError(f"{method} {template} has no parameter {name}")

    @functools.cache  # noqa: B019 (one instance per process)
    def validator(self, pointer: str) -> Draft202012Validator:
        return Draft202012Validator({"$ref": f"{BASE_URI}#{pointer}"}, registry=self.registry)

    def problems(
        self, method: str, path: str, body: Any, *, status: int = 200, stream: bool = False
    ) -> list[str]:
        """What is wrong with a response, one line per problem (empty when it validates). A
        stream's body is its text; each chunk is checked, ``$[i]`` naming the chunk."""
        media = "text/event-stream" if stream else "application/json"
        validator = self.validator(self.response_pointer(method, path, status, media))
        if not stream:
            return [_describe(e) for e in _errors(validator, body)]
        found: list[str] = []
        for i, chunk in enumerate(parse_sse(body)):
            found += [f"chunk {i}: {_describe(e)}" for e in _errors(validator, chunk)]
        return found

    def check(
        self, method: str, path: str, body: Any, *, status: int = 200, stream: bool = False
    ) -> None:
        found = self.problems(method, path, body, status=status, stream=stream)
        template = self.operation_path(path)
        assert not found, f"{method} {path} ({template}) {status}:\n  " + "\n  ".join(found)


def _errors(validator: Draft202012Validator, instance: Any) -> Iterator[ValidationError]:
    return iter(sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path)))


def _describe(error: ValidationError) -> str:
    line = f"{error.json_path}: {_short(error.message)}"
    if error.context:
        deepest = best_match(error.context)
        if deepest is not None and list(deepest.absolute_path) != list(error.absolute_path):
            line += f" (nearest: {deepest.json_path}: {_short(deepest.message)})"
    return line


def _short(text: str, limit: int = 240) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
