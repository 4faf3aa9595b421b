"""Choosing an upstream for a model group: the lowest priority tier with one that is not resting, then by weight."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Collection

from chatsse.upstreams.config import UpstreamConfig
from chatsse.upstreams.cooldown import Cooldown


class Router:
    """Groups upstreams by `model`; keeps each one's cooldown."""

    def __init__(self, upstreams: tuple[UpstreamConfig, ...], rng: random.Random | None = None) -> None:
        self.groups: dict[str, list[UpstreamConfig]] = defaultdict(list)
        for upstream in upstreams:
            self.groups[upstream.model].append(upstream)
        self.cooldowns = {upstream.name: Cooldown() for upstream in upstreams}
        self._random = rng or random.Random()

    def choose(self, model: str, now: float, exclude: Collection[str] = ()) -> UpstreamConfig | None:
        """An upstream of `model` that is not resting (nor in `exclude`), or None when there is none."""
        ready = [u for u in self.groups[model] if u.name not in exclude and not self.cooldowns[u.name].cooling(now)]
        if not ready:
            return None
        best = min(u.priority for u in ready)
        tier = [u for u in ready if u.priority == best]
        if len(tier) == 1:
            return tier[0]
        return self._random.choices(tier, weights=[u.weight for u in tier])[0]

    def soonest(self, model: str, now: float) -> tuple[float, bool]:
        """Seconds until the first of `model`'s upstreams is ready again (0: one is), and whether all of them rest
        because they are rate-limited."""
        cooldowns = [self.cooldowns[u.name] for u in self.groups[model]]
        wait = max(0.0, min(c.until for c in cooldowns) - now)
        return wait, wait > 0 and all(c.rate_limited for c in cooldowns)

    def resting(self, now: float) -> list[str]:
        """The names of the upstreams in cooldown right now."""
        return [name for name, cooldown in self.cooldowns.items() if cooldown.cooling(now)]
