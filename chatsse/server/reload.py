"""Configuration reloaded live: SIGHUP, or a change of the CHATSSE_CONFIG file's content (checked every few
seconds, so that a Kubernetes ConfigMap update needs no signal), swaps in the file's upstreams, callers, keys,
teams and prices, checked first as start-up checks them. An invalid file keeps the running configuration."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

from chatsse.settings import ConfigError, Settings, reloaded
from chatsse.upstreams.config import NeedsRestart

log = logging.getLogger("chatsse")
CHECK_SECONDS = 2.0  # how often the file's content is compared with the one running


class Reloader:
    """`apply(new)` swaps a checked configuration in (the app's parts each take theirs); `counted(result)` feeds
    `chatsse_config_reloads_total{result}`: applied, invalid, unchanged."""

    def __init__(
        self,
        settings: Settings,
        apply: Callable[[Settings], None],
        counted: Callable[[str], None],
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.settings = settings
        self.apply = apply
        self.counted = counted
        self.check_seconds = check_seconds
        self.digest = self._digest()  # of the content last read: what the watch compares with
        self.previous: Any = None  # the SIGHUP handler before ours

    def install(self) -> None:
        """SIGHUP reloads (in the main thread only: servers run in threads in tests). A plain handler, as the drain's:
        the loop's own signal handling would turn uvicorn's SIGINT into a KeyboardInterrupt at exit."""
        if self.settings.config_path is None or threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        self.previous = signal.signal(
            signal.SIGHUP, lambda signum, frame: loop.call_soon_threadsafe(self.reload, "SIGHUP")
        )

    def uninstall(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGHUP, self.previous)

    async def watch(self) -> None:
        """Reload whenever the file's content changes (an edit, a ConfigMap's new version swapped in)."""
        while True:
            await asyncio.sleep(self.check_seconds)
            if self._digest() != self.digest:
                self.reload("its content changed")

    def reload(self, why: str) -> None:
        """Read the file, check it, and swap it in; or log its problems (as start-up does) and keep what runs."""
        self.digest = self._digest()
        try:
            new = reloaded(self.settings, os.environ)
            if new == self.settings:
                self.counted("unchanged")
                return
            self.apply(new)  # its first step refuses what needs a restart, before anything is swapped
        except (ConfigError, NeedsRestart) as refused:
            problems = refused.problems if isinstance(refused, ConfigError) else [str(refused)]
            for problem in problems:
                log.error("configuration not reloaded (%s); the running one stays: %s", why, problem)
            self.counted("invalid")
            return
        self.settings = new
        self.counted("applied")
        log.info(
            "configuration reloaded (%s): %d upstreams, %d callers, %d teams, %d prices",
            why,
            len(new.upstreams),
            len(new.callers.callers),
            len(new.callers.teams),
            len(new.prices.rows),
        )

    def _digest(self) -> str | None:
        if self.settings.config_path is None:
            return None
        try:
            with open(self.settings.config_path, "rb") as file:
                return hashlib.sha256(file.read()).hexdigest()
        except OSError:
            return None
