"""Admin endpoints (scope ``admin``): consolidation runs, on demand and inspectable."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from core.consolidation.runs import RunRecord, RunStore
from core.errors import StoreUnavailable
from deployments.http.deps import Admin, Ctx
from deployments.remote import call

router = APIRouter(prefix="/v1/admin", tags=["admin"])


class ConsolidationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    partitions: list[int] | None = Field(None, max_length=4096, description="Default: every partition")
    parallelism: int | None = Field(None, ge=1, le=256)


def _runs(ctx: Any) -> RunStore:
    return RunStore(ctx.extras["resources"].pool)


@router.post("/consolidations", status_code=202, summary="Start a consolidation run (one at a time)")
async def start_consolidation(body: ConsolidationIn, ctx: Ctx, who: Admin) -> dict[str, Any]:
    if ctx.admin is None:
        raise StoreUnavailable("scheduler", "the consolidation scheduler is not deployed")
    started: dict[str, Any] = await call(
        "scheduler", ctx.admin.submit.remote(body.partitions, body.parallelism, "api")
    )
    return started


@router.get("/consolidations/{run_id}", response_model=RunRecord, summary="A consolidation run's record")
async def get_consolidation(run_id: uuid.UUID, ctx: Ctx, who: Admin) -> RunRecord:
    return await _runs(ctx).get(run_id)


@router.get("/consolidations", response_model=list[RunRecord], summary="Recent consolidation runs")
async def list_consolidations(
    ctx: Ctx, who: Admin, limit: Annotated[int, Query(ge=1, le=200)] = 20
) -> list[RunRecord]:
    return await _runs(ctx).recent(limit=limit)
