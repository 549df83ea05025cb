"""``GET /v1/serving/status`` (extension, admin): the engine's resident base models and adapters
and the memory each holds, for operators sizing ``serving_max_adapters`` and the machine."""

from __future__ import annotations

from fastapi import APIRouter

from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Admin, RuntimeDep
from tunesmith.errors import ServiceUnavailable
from tunesmith.protocol.serving import ResidentAdapter, ResidentBase, ServingStatus

router = APIRouter(prefix="/v1/serving", tags=["serving"], route_class=CappedRoute)


@router.get("/status", response_model=ServingStatus)
def serving_status(_principal: Admin, runtime: RuntimeDep) -> ServingStatus:
    if runtime.serving is None:
        raise ServiceUnavailable("This server does not serve models (serving is turned off).")
    stats = runtime.serving.engine.stats()
    return ServingStatus(
        resident_bytes=stats.resident_bytes(),
        bases=[
            ResidentBase(
                weights=weights,
                weight_bytes=base["weight_bytes"],
                cache_bytes=base["cache_bytes"],
                adapters=[ResidentAdapter(path=p, bytes=b) for p, b in base["adapters"].items()],
                active=base["active"],
                pending=base["pending"],
            )
            for weights, base in stats.bases.items()
        ],
    )
