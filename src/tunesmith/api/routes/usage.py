"""``/v1/usage`` (extension): a project's served tokens, hosting time, trained tokens and their
estimated cost over a time window."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from tunesmith import usage
from tunesmith.api.body import CappedRoute
from tunesmith.api.deps import Reader, RuntimeDep, SessionDep, now
from tunesmith.protocol.usage import UsageReport

router = APIRouter(prefix="/v1/usage", tags=["usage"], route_class=CappedRoute)

# Up to the last second of year 9999, the last a date can show; beyond it the sums overflow
# the database's 64-bit integers (a 500 before this bound).
MAX_UNIX_TIME = 253_402_300_799
UnixTime = Annotated[int | None, Query(ge=0, le=MAX_UNIX_TIME)]


@router.get("", response_model=UsageReport)
def usage_report(
    principal: Reader,
    session: SessionDep,
    runtime: RuntimeDep,
    start_time: UnixTime = None,
    end_time: UnixTime = None,
    deployment: str | None = None,
) -> UsageReport:
    return usage.usage_report(
        session,
        project_id=principal.project_id,
        start_time=start_time,
        end_time=end_time,
        deployment=deployment,
        prices=runtime.settings.prices,
        now=now(),
    )
