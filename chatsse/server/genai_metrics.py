"""The OpenTelemetry GenAI conventions' histograms, under their Prometheus names, so dashboards built for those names
work: tokens per reply by type, the upstream operation's duration, and the time to the first token."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

# The bucket boundaries the conventions advise for each histogram.
TOKEN_BUCKETS = tuple(4.0**n for n in range(14))  # 1, 4, 16, ... 67108864
DURATION_BUCKETS = tuple(0.01 * 2.0**n for n in range(14))  # 0.01, 0.02, ... 81.92
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
LABELS = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]


class GenAIMetrics:
    """`gen_ai.client.token.usage`, `gen_ai.client.operation.duration` and `gen_ai.server.time_to_first_token`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.token_usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens of one reply, by type (input or output), as the upstream reported them.",
            [*LABELS, "gen_ai_token_type"],
            buckets=TOKEN_BUCKETS,
            registry=registry,
        )
        self.operation_duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "An upstream chat operation, from its request to the reply's end.",
            [*LABELS, "error_type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_first_token = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Request start to the reply's first token, as the gateway's callers wait for it.",
            LABELS,
            buckets=TTFT_BUCKETS,
            registry=registry,
        )

    def observe(
        self,
        provider: str,
        model: str,
        duration: float,
        first_token: float | None,
        usage: tuple[int, int] | None,
        error_type: str | None,
    ) -> None:
        """One reply's end: `usage` is (input, output) where the upstream reported it."""
        labels = ("chat", provider, model)
        self.operation_duration.labels(*labels, error_type or "").observe(duration)
        if first_token is not None:
            self.time_to_first_token.labels(*labels).observe(first_token)
        if usage is not None:
            self.token_usage.labels(*labels, "input").observe(usage[0])
            self.token_usage.labels(*labels, "output").observe(usage[1])
