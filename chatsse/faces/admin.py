"""The operators' face: `GET /api/v1/admin/usage?period=day|week|month`, every caller's and team's spend in the
current period, as JSON or (with `Accept: text/csv`) CSV; for admin keys only (403 `admin_only` for anyone else)."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from chatsse.callers.identity import current_caller
from chatsse.callers.report import REPORT_PERIODS, as_csv, spend_report
from chatsse.errors import AdminOnly, InvalidRequest
from chatsse.relay import ChatRelay


class AdminFace:
    def __init__(self, relay: ChatRelay) -> None:
        self.relay = relay

    async def usage(self, request: Request) -> Response:
        caller = current_caller.get()
        if caller is None or not caller.admin:
            raise AdminOnly()
        period = request.query_params.get("period", "month")
        if period not in REPORT_PERIODS:
            raise InvalidRequest(f"period={period!r} is not valid: expected one of {', '.join(REPORT_PERIODS)}.")
        settings = self.relay.settings
        report = await spend_report(self.relay.ledger, settings.callers, period, time.time(), settings.prices.currency)
        if "text/csv" in request.headers.get("accept", ""):
            return Response(as_csv(report), media_type="text/csv; charset=utf-8")
        return JSONResponse(report)
