"""Who a request comes from, as the access middleware found it, for every layer after it."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from chatsse.callers.config import ANONYMOUS, CallerConfig


@dataclass(frozen=True)
class Caller:
    """`identity` is what a caller's counters are kept under and what its log lines name: a caller's name, a key's
    id (`key:<sha256 prefix>`) or a client address (`ip:<address>`, callers without a key). `label` names it in
    metrics, from configured names only, so the series stay bounded."""

    identity: str
    label: str = ANONYMOUS
    config: CallerConfig | None = None  # its limits; None: none
    keyed: bool = False  # it presented a key: only it may follow or stop its kept replies
    team: Caller | None = None  # its [[team]], whose quota and budget its members share (identity `team:<name>`)
    admin: bool = False  # it may read every caller's spend (CHATSSE_ADMIN_KEYS, or a caller with admin = true)


current_caller: ContextVar[Caller | None] = ContextVar("chatsse_caller", default=None)
