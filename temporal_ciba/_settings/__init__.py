"""Configuration from `CIBA_*` environment variables (pydantic-settings).

Each program loads only what it needs (`load_settings(OPSettings)`); a missing or malformed variable
raises ConfigError with one line naming it, and the CLI exits with status 2.
The Temporal connection is not configured here: it uses temporalio.envconfig (TEMPORAL_*).

    loading      the `CIBA_` prefix, `load_settings`, ConfigError, the payload key's format
    op           the OP, this client's registration at it, and the FAPI-CIBA rules (`OPSettings`)
    factories    the protocol objects built from `OPSettings` (CibaClient, client auth, policy)
    shared       what the plugin, the worker and the programs share (Temporal, keys, records)

Each program's own settings live beside it: `temporal_ciba._programs.callback_settings`,
`temporal_ciba._programs.codec_server_settings`, and the audit command's in `temporal_ciba._cli.audit`.
"""

from temporal_ciba._settings.loading import (
    ENV_PREFIX,
    ConfigError,
    SettingsT,
    decode_payload_key,
    env_name,
    existing_file,
    load_settings,
    split_list,
)
from temporal_ciba._settings.op import FAPI_ALGS, OPSettings
from temporal_ciba._settings.shared import (
    LoggingSettings,
    RecordSettings,
    TemporalSettings,
    TokenKeySettings,
    WorkerSettings,
)

__all__ = [
    "ENV_PREFIX",
    "FAPI_ALGS",
    "ConfigError",
    "LoggingSettings",
    "OPSettings",
    "RecordSettings",
    "SettingsT",
    "TemporalSettings",
    "TokenKeySettings",
    "WorkerSettings",
    "decode_payload_key",
    "env_name",
    "existing_file",
    "load_settings",
    "split_list",
]
