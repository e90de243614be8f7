"""Prometheus metrics, one registry per app (two apps in one process, as in tests, never collide).
What a model does carries a `model` label (its served name): batches, queues, backlog, readiness and
work done; HTTP requests and errors are counted by route."""

from __future__ import annotations

import time
import uuid

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """`observer(model)` is the engine's BatchObserver for one model, so the engine reports without importing us."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("sigserve_requests", "HTTP requests", ["route", "method", "status"], registry=r)
        self.latency = Histogram("sigserve_request_duration_seconds", "HTTP request latency",
                                 ["route", "method", "status"], registry=r)
        self.batch_size = Histogram("sigserve_batch_size", "Items per inference batch", ["model", "tower"],
                                    buckets=BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram("sigserve_batch_duration_seconds", "Inference time per batch",
                                       ["model", "tower"], registry=r)
        self.queue_depth = Gauge("sigserve_queue_depth", "Jobs waiting for the inference worker", ["model", "tower"],
                                 registry=r)
        self.pending = Gauge("sigserve_pending_items", "Items admitted and not finished", ["model"], registry=r)
        self.images = Counter("sigserve_images", "Images embedded", ["model"], registry=r)
        self.patches = Counter("sigserve_patches", "Valid image patches processed", ["model"], registry=r)
        self.text_tokens = Counter("sigserve_text_tokens", "Non-padding text tokens processed", ["model"], registry=r)
        self.errors = Counter("sigserve_errors", "Error responses by OpenAI error type", ["type"], registry=r)
        self.database_errors = Counter("sigserve_database_unavailable", "Failures to reach the keys and usage "
                                       "database (requests answered 503 database_unavailable)", registry=r)
        self.ratelimit_backend_errors = Counter("sigserve_ratelimit_backend_errors", "Failures to reach Redis for rate "
                                                "limits (then --redis-failure-mode applies)", registry=r)
        self.ready = Gauge("sigserve_ready", "1 when the model is loaded and its worker alive", ["model"], registry=r)
        self.memory = Gauge("sigserve_model_memory_bytes", "Resident memory the model added at load (measured)",
                            ["model"], registry=r)

    def observer(self, model: str) -> ModelObserver:
        """The engine's BatchObserver for one served model."""
        return ModelObserver(self, model)

    def on_error(self, type: str) -> None:
        self.errors.labels(type).inc()

    def on_usage(self, model: str, images: int, patches: int, tokens: int) -> None:
        self.images.labels(model).inc(images)
        self.patches.labels(model).inc(patches)
        self.text_tokens.labels(model).inc(tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelObserver:
    """BatchObserver of one model's engine (called from its worker thread; prometheus-client is thread-safe)."""

    def __init__(self, metrics: Metrics, model: str):
        self.metrics, self.model = metrics, model

    def on_batch(self, tower: str, size: int, seconds: float) -> None:
        self.metrics.batch_size.labels(self.model, tower).observe(size)
        self.metrics.batch_seconds.labels(self.model, tower).observe(seconds)

    def on_queue_depth(self, tower: str, depth: int) -> None:
        self.metrics.queue_depth.labels(self.model, tower).set(depth)


class RequestMetricsMiddleware:
    """Counts and times every request by route template (not raw path: bounded label values),
    and stamps `x-request-id` and `openai-processing-ms` on the response, as OpenAI does."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = {"code": 500}
        request_id = _request_id(scope)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                elapsed_ms = int((time.perf_counter() - start) * 1000)
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                headers.append((b"openai-processing-ms", str(elapsed_ms).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            code = str(status["code"])
            self.metrics.requests.labels(label, method, code).inc()
            self.metrics.latency.labels(label, method, code).observe(time.perf_counter() - start)


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            text = value.decode("latin-1")[:128]
            if text.isprintable():
                return text
    return f"req_{uuid.uuid4().hex}"
