"""``/docs``: Swagger UI over ``/openapi.json``, its script and style served from the
``swagger-ui-bundle-v2`` package (``/docs/assets/…``), so the page loads nothing from another
host (FastAPI's default page pulls them from a CDN, which leaks who reads the docs and fails
offline). ReDoc, CDN-only, is not offered."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from tunesmith.api.body import CappedRoute

ASSETS = "/docs/assets"

router = APIRouter(include_in_schema=False, route_class=CappedRoute)


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="tunesmith API",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
    )


def install(app: FastAPI) -> None:
    """Serves ``/docs`` and its assets; the app must be built with ``docs_url=None``."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")
    app.include_router(router)
