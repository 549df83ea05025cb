"""The web portal: static files from ``tunesmith/web`` under ``/portal/``, and ``/`` sends a
browser there. Every asset is served from this server (the content security policy forbids any
other origin), and the portal speaks only the public API with the key its user signs in with.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

WEB_DIR = Path(str(files("tunesmith") / "web"))

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidated on every load (a 304 while unchanged), so an upgrade reaches the browser at once.
    "cache-control": "no-cache",
}


class PortalFiles(StaticFiles):
    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(SECURITY_HEADERS)
        return response


def mount_portal(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def to_portal() -> RedirectResponse:
        return RedirectResponse("/portal/")

    app.mount("/portal", PortalFiles(directory=WEB_DIR, html=True), name="portal")
