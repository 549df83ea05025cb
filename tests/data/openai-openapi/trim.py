"""Trims OpenAI's OpenAPI document to what tunesmith's schema test needs.

    cd tests/data/openai-openapi && python trim.py path/to/openapi.yaml > openapi.json

Keeps the operations tunesmith implements (``OPERATIONS``: their parameters and responses, not
their request bodies), the error envelope, and every component those reach through ``$ref``,
transitively. Annotations (descriptions, examples, titles, ``x-`` extensions) are dropped, as is
anything else a validator never reads; keys of ``properties`` are kept whatever their name. The
output is JSON, keys in the document's order. Reads ``.yaml`` or ``.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OPERATIONS: tuple[tuple[str, str], ...] = (
    ("get", "/files"),
    ("post", "/files"),
    ("get", "/files/{file_id}"),
    ("delete", "/files/{file_id}"),
    ("post", "/uploads"),
    ("post", "/uploads/{upload_id}/parts"),
    ("post", "/uploads/{upload_id}/complete"),
    ("post", "/uploads/{upload_id}/cancel"),
    ("post", "/fine_tuning/jobs"),
    ("get", "/fine_tuning/jobs"),
    ("get", "/fine_tuning/jobs/{fine_tuning_job_id}"),
    ("post", "/fine_tuning/jobs/{fine_tuning_job_id}/cancel"),
    ("post", "/fine_tuning/jobs/{fine_tuning_job_id}/pause"),
    ("post", "/fine_tuning/jobs/{fine_tuning_job_id}/resume"),
    ("get", "/fine_tuning/jobs/{fine_tuning_job_id}/events"),
    ("get", "/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints"),
    ("get", "/models"),
    ("get", "/models/{model}"),
    ("delete", "/models/{model}"),
    ("post", "/chat/completions"),
    ("post", "/completions"),
    ("post", "/moderations"),
)
"""Every OpenAI operation tunesmith serves with a JSON answer. ``GET /files/{file_id}/content``
is left out: it answers the file's bytes, which the document calls a JSON string."""

EXTRA_SCHEMAS: tuple[str, ...] = ("ErrorResponse",)
"""Components no operation names but every operation answers: the error envelope."""

ANNOTATIONS = frozenset(
    {"description", "example", "examples", "title", "summary", "externalDocs", "deprecated"}
)
MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
"""Keywords whose value maps names (any name, ``description`` included) to schemas."""


def strip(node: Any) -> Any:
    """A schema (or parameter, or response) without its annotations."""
    if isinstance(node, list):
        return [strip(item) for item in node]
    if not isinstance(node, dict):
        return node
    kept: dict[str, Any] = {}
    for key, value in node.items():
        if key in ANNOTATIONS or key.startswith("x-"):
            continue
        if key in MAPS and isinstance(value, dict):
            kept[key] = {name: strip(schema) for name, schema in value.items()}
        elif key in ("enum", "const", "default", "required"):
            kept[key] = value  # values, not schemas
        else:
            kept[key] = strip(value)
    return kept


def refs(node: Any) -> set[str]:
    if isinstance(node, list):
        return set().union(*(refs(item) for item in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
    for value in node.values():
        found |= refs(value)
    return found


def trim(document: dict[str, Any]) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for method, path in OPERATIONS:
        operation = document["paths"][path][method]
        kept = {"operationId": operation["operationId"], "responses": operation["responses"]}
        if "parameters" in operation:
            kept["parameters"] = operation["parameters"]
        paths.setdefault(path, {})[method] = strip(kept)
    components: dict[str, dict[str, Any]] = {}
    pending = refs(paths) | {f"#/components/schemas/{name}" for name in EXTRA_SCHEMAS}
    seen: set[str] = set()
    while pending:
        ref = pending.pop()
        seen.add(ref)
        _, section, kind, name = ref.split("/", 3)
        assert section == "components", ref
        schema = strip(document["components"][kind][name])
        components.setdefault(kind, {})[name] = schema
        pending |= refs(schema) - seen
    ordered = {
        kind: {
            name: components[kind][name]
            for name in document["components"][kind]
            if name in components[kind]
        }
        for kind in document["components"]
        if kind in components
    }
    return {
        "openapi": document["openapi"],
        "info": {"title": document["info"]["title"], "version": document["info"]["version"]},
        "paths": paths,
        "components": ordered,
    }


def load(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        document: dict[str, Any] = json.loads(path.read_text())
        return document
    import yaml

    loaded: dict[str, Any] = yaml.load(
        path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    )
    return loaded


if __name__ == "__main__":
    json.dump(trim(load(Path(sys.argv[1]))), sys.stdout, indent=1, default=str)
    sys.stdout.write("\n")
