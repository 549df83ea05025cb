"""The request bodies of ``/openapi.json`` that FastAPI cannot see.

Routes that read their body themselves (chat, completions and moderations parse a capped raw
body strictly; files and upload parts stream a multipart form, ``api/multipart.py``) declare
nothing FastAPI would put in the document, so clients, ``/docs`` and the fuzz suite
(``tests/test_fuzz_api.py``) would see operations without a body. Such a route passes
``openapi_extra=json_body(Model)`` or ``openapi_extra=multipart_body(...)``; :func:`install`
adds the models' schemas (as the routes validate them) to the document's components.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

_REF = "#/components/schemas/{model}"
_MODELS: dict[str, type[BaseModel]] = {}
"""Every model a route declared through :func:`json_body`, by its name in the components."""


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route whose JSON body ``model`` validates."""
    _MODELS[model.__name__] = model
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def multipart_body(
    *, required: list[str], binary: list[str], text: dict[str, str]
) -> dict[str, Any]:
    """``openapi_extra`` of a route that streams a multipart form: ``binary`` fields carry
    bytes, ``text`` fields a string each (name → description)."""
    properties: dict[str, Any] = {name: {"type": "string", "format": "binary"} for name in binary}
    properties.update(
        {name: {"type": "string", "description": about} for name, about in text.items()}
    )
    schema = {"type": "object", "required": required, "properties": properties}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


def install(app: FastAPI) -> None:
    """Builds ``app``'s document with the declared models among its components."""

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _, defs = models_json_schema(
                [(model, "validation") for model in _MODELS.values()], ref_template=_REF
            )
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            for name, schema in defs.get("$defs", {}).items():
                schemas.setdefault(name, schema)  # FastAPI's own, where it has one: the same
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
