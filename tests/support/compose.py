"""docker-compose run on the repository's docker-compose.yml.

Nothing of the caller's environment decides what is checked."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


COMPOSE = REPO / "docker-compose.yml"


REQUIRED = {
    "CIBA_PAYLOAD_KEY": "k",
    "CIBA_TOKEN_KEY": "t",
    "CIBA_CLIENT_SECRET": "s",
    "PAYMENT_API_CLIENT_SECRET": "p",
    "POSTGRES_PASSWORD": "w",
    "CIBA_CODEC_OPERATOR_TOKENS": "o",
}


def docker_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        raise RuntimeError("docker-compose is missing: scripts/setup.sh installs Debian's docker-compose")
    # Neither the caller's environment nor a .env beside the file may decide what is checked.
    base = {k: v for k, v in os.environ.items() if k not in REQUIRED and k != "CIBA_BIND"}
    with tempfile.TemporaryDirectory() as empty:
        env_file = Path(empty) / "empty.env"
        env_file.write_text("")
        return subprocess.run(
            [binary, "--env-file", str(env_file), "-f", str(COMPOSE), *args],
            env={**base, **env},
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        )
