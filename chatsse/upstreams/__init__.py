"""The upstreams: choose one for the request's model group, authenticate, open it, fail over before the first token.

config.py     what an upstream is; the CHATSSE_CONFIG file of [[upstream]] tables
failover.py   Upstreams.open: the walk over a group, within a request's retry budget
router.py     which upstream next: priority tier, then weight, skipping those at rest
cooldown.py   rests after a 429, circuits after failures
client.py     one attempt on one upstream, read to the first token
shapes.py     the API shapes: azure, azure-v1, openai
auth.py       Microsoft Entra ID tokens
failures.py   what an upstream's failures mean, as chatsse's errors
reply.py      an upstream reply being read into typed events
"""

from chatsse.upstreams.config import UpstreamConfig
from chatsse.upstreams.failover import RetryBudget, Upstreams, startup_problem
from chatsse.upstreams.reply import UpstreamReply

__all__ = ["RetryBudget", "UpstreamConfig", "UpstreamReply", "Upstreams", "startup_problem"]
