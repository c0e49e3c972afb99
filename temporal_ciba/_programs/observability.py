"""Logs, metrics and traces, each switched on by configuration.

- Logs: `CIBA_LOG_FORMAT=json` writes one JSON object per line (time, level, logger, message,
  and the workflow or activity context Temporal attaches). The workflow logs one line per
  state change; nothing logged anywhere carries a token or a secret.
- Metrics: `CIBA_METRICS_BIND=HOST:PORT` exposes the Temporal SDK's metrics for Prometheus.
- Traces: the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) turns on
  OpenTelemetry tracing through temporalio.contrib.opentelemetry, exported over OTLP/HTTP
  (`pip install 'temporal-ciba[otel]'`).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
from typing import Any

from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

_CONTEXT = ("temporal_workflow", "temporal_activity")
_FIELDS = ("ciba_status", "auth_req_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*_FIELDS, *_CONTEXT):
            if hasattr(record, name):
                entry[name.removeprefix("temporal_")] = getattr(record, name)
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            entry["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        return json.dumps(entry, default=str)


def configure_logging(level: str, log_format: str) -> None:
    handler = logging.StreamHandler()
    if log_format == "json":
        import temporalio.activity
        import temporalio.workflow

        handler.setFormatter(JsonFormatter())
        # The workflow/activity context goes in its own JSON member, not appended to the message.
        temporalio.workflow.logger.workflow_info_on_message = False
        temporalio.activity.logger.activity_info_on_message = False
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def telemetry_runtime(metrics_bind: str | None) -> Runtime | None:
    """A runtime exporting SDK metrics for Prometheus at `metrics_bind`, or None for the default."""
    if not metrics_bind:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=metrics_bind)))


def tracing_interceptors() -> list[Any]:
    """The OpenTelemetry tracing interceptor when an OTLP endpoint is configured, else none."""
    if not (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return []
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from temporalio.contrib.opentelemetry import TracingInterceptor

    provider = TracerProvider(
        resource=Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "temporal-ciba")})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    # Workflow spans even when the starter is not traced (an agent started from elsewhere).
    return [TracingInterceptor(always_create_workflow_spans=True)]
