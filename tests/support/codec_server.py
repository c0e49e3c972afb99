"""`temporal-ciba codec-server` as a separate process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def codec_env(**values: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("CIBA_", "TEMPORAL_"))}
    return {**env, **values}


def start_codec_server(log: Path, **settings: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "temporal_ciba", "codec-server"]
    return subprocess.Popen(command, env=codec_env(**settings), stdout=log.open("wb"), stderr=subprocess.STDOUT)


def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the codec server did not come up: {log.read_text()[-2000:]}")
        time.sleep(0.05)
