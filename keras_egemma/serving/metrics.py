"""Prometheus metrics of the server (`GET /metrics`), via `prometheus_client`.

Each app has its own registry, so several servers (or tests) in one process
do not share counts.
"""

import prometheus_client

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
_TOKEN_BUCKETS = (64, 256, 1024, 2048, 4096, 8192, 16384, 32768)


class ServerMetrics:
    """Requests, texts, batches, queue depth and latency of one server.

    Metrics (all prefixed `keras_egemma_`): `requests_total{status}`,
    `request_latency_seconds` (histogram, `/v1/embeddings`),
    `requests_in_flight`, `queue_depth` (texts accepted, not yet embedded),
    `texts_total`, `tokens_total`, `batch_size` (histogram of texts per
    forward pass), `batch_tokens` (histogram of rows x padded length),
    `batch_seconds` (histogram of forward-pass time).

    Example:
    ```python
    metrics = ServerMetrics(queue_depth=lambda: batcher.queued)
    body = metrics.render()   # Prometheus text format, bytes
    ```
    """

    CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

    def __init__(self, queue_depth=None):
        self.registry = prometheus_client.CollectorRegistry()
        prefix = "keras_egemma_"

        def make(kind, name, doc, **kwargs):
            return kind(prefix + name, doc, registry=self.registry, **kwargs)

        self.requests = make(
            prometheus_client.Counter,
            "requests",
            "HTTP requests by status code.",
            labelnames=("status",),
        )
        self.latency = make(
            prometheus_client.Histogram,
            "request_latency_seconds",
            "Time to answer POST /v1/embeddings.",
            buckets=_LATENCY_BUCKETS,
        )
        self.in_flight = make(
            prometheus_client.Gauge, "requests_in_flight", "Embedding requests being answered."
        )
        self.queue_depth = make(
            prometheus_client.Gauge, "queue_depth", "Texts accepted and not yet embedded."
        )
        if queue_depth is not None:
            self.queue_depth.set_function(queue_depth)
        self.texts = make(prometheus_client.Counter, "texts", "Texts embedded.")
        self.tokens = make(
            prometheus_client.Counter,
            "tokens",
            "Tokens embedded (prompt and special tokens included).",
        )
        self.batch_size = make(
            prometheus_client.Histogram,
            "batch_size",
            "Texts per forward pass.",
            buckets=_SIZE_BUCKETS,
        )
        self.batch_tokens = make(
            prometheus_client.Histogram,
            "batch_tokens",
            "Rows x padded length per forward pass.",
            buckets=_TOKEN_BUCKETS,
        )
        self.batch_seconds = make(
            prometheus_client.Histogram,
            "batch_seconds",
            "Time of one forward pass.",
            buckets=_LATENCY_BUCKETS,
        )

    def observe_batch(self, texts, tokens, seconds):
        """Records one forward pass."""
        self.batch_size.observe(texts)
        self.batch_tokens.observe(tokens)
        self.batch_seconds.observe(seconds)

    def render(self):
        """The metrics in Prometheus' text format (bytes)."""
        return prometheus_client.generate_latest(self.registry)
