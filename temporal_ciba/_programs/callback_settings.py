"""The callback service's settings (`CIBA_CALLBACK_*`).

Where it listens, its TLS, and the bounds that keep slow or large requests from pinning it.

    temporal-ciba callback
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from temporal_ciba._settings import ConfigError, TokenKeySettings, existing_file


class CallbackSettings(TokenKeySettings):
    """The ping/push receiver: HTTPS with the configured certificate, or plain HTTP only when asked."""

    callback_host: str = "127.0.0.1"
    callback_port: int = Field(default=8443, ge=0, le=65535)
    callback_path: str = Field(default="/ciba/notify", pattern=r"^/[A-Za-z0-9._~/-]*$")
    callback_tls_cert: Path | None = None
    callback_tls_key: Path | None = None
    # For local use only (the demo, tests): serve plain HTTP.
    callback_insecure_http: bool = False
    callback_max_body_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    # Seconds for a request head to arrive (after the connection or the previous response), and
    # again for its body; slower clients are cut (408 for a late body).
    callback_read_timeout: float = Field(default=10.0, gt=0, le=300)
    # Open connections at most (idle and slow ones count); requests beyond get 503 at once.
    callback_max_connections: int = Field(default=512, ge=1, le=100_000)

    @field_validator("callback_tls_cert", "callback_tls_key")
    @classmethod
    def _readable(cls, path: Path | None) -> Path | None:
        return existing_file(path)

    @model_validator(mode="after")
    def _tls(self) -> CallbackSettings:
        has_cert, has_key = self.callback_tls_cert is not None, self.callback_tls_key is not None
        if has_cert != has_key:
            missing = "CIBA_CALLBACK_TLS_KEY" if has_cert else "CIBA_CALLBACK_TLS_CERT"
            raise ConfigError(f"{missing} is required with the other TLS setting")
        if not has_cert and not self.callback_insecure_http:
            raise ConfigError(
                "CIBA_CALLBACK_TLS_CERT and CIBA_CALLBACK_TLS_KEY are required "
                "(or CIBA_CALLBACK_INSECURE_HTTP=true for local use)"
            )
        return self
