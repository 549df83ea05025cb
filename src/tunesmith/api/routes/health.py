"""``GET /health``: liveness, no authentication."""

from __future__ import annotations

from fastapi import APIRouter

from tunesmith.api.body import CappedRoute

router = APIRouter(tags=["health"], route_class=CappedRoute)


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
