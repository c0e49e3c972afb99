"""Connecting to Temporal with the SDK's environment configuration (temporalio.envconfig).

TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TEMPORAL_TLS_* and TEMPORAL_PROFILE
(or a temporal.toml profile) choose the cluster; localhost:7233 and `default` otherwise.
"""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.runtime import Runtime

from temporal_ciba._plugin import CibaPlugin
from temporal_ciba._programs.observability import tracing_interceptors


class TemporalUnavailable(Exception):
    """The Temporal server could not be reached with the configured connection."""


async def connect(
    payload_key: bytes, *, plugin: CibaPlugin | None = None, runtime: Runtime | None = None, **overrides: Any
) -> Client:
    """A Temporal client with the CibaPlugin.

    The plugin is the given one (a worker's, with activities) or a client-only one (with tracing
    when configured); `runtime` carries metrics when configured."""
    config: dict[str, Any] = dict(ClientConfig.load_client_connect_config())
    config.setdefault("target_host", "localhost:7233")
    config.update(overrides)
    if runtime is not None:
        config["runtime"] = runtime
    plugin = plugin or CibaPlugin(payload_key=payload_key, interceptors=tracing_interceptors())
    try:
        return await Client.connect(**config, plugins=[plugin])
    except RuntimeError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TemporalUnavailable(f"cannot connect to Temporal at {config['target_host']}: {message}") from None
