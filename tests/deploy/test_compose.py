"""docker-compose.yml is valid (checked by Debian's docker-compose, which needs no engine) and
coherent with the repository: what it builds, mounts and configures exists and is documented."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
REQUIRED = {
    "CIBA_PAYLOAD_KEY": "k",
    "CIBA_TOKEN_KEY": "t",
    "CIBA_CLIENT_SECRET": "s",
    "PAYMENT_API_CLIENT_SECRET": "p",
    "POSTGRES_PASSWORD": "w",
}


def docker_compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        raise RuntimeError("docker-compose is missing: scripts/setup.sh installs Debian's docker-compose")
    base = {k: v for k, v in os.environ.items() if k not in REQUIRED}
    return subprocess.run(
        [binary, "-f", str(COMPOSE), *args], env={**base, **env}, capture_output=True, text=True, cwd=REPO, check=False
    )


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_docker_compose_validates_it() -> None:
    result = docker_compose("config", "--quiet", env=REQUIRED)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_secrets_have_no_default(missing: str) -> None:
    result = docker_compose("config", "--quiet", env={k: v for k, v in REQUIRED.items() if k != missing})
    assert result.returncode != 0 and f"set {missing}" in result.stderr


def test_the_whole_system_is_there(services: dict[str, Any]) -> None:
    assert {"postgresql", "temporal", "temporal-ui", "worker", "callback", "op", "payment-api", "codec-server"} <= set(
        services
    )
    assert services["temporal"]["environment"]["DB"] == "postgres12"
    assert services["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"] == "http://localhost:8081"
    assert services["worker"]["environment"]["CIBA_DELIVERY_MODE"] == "ping"
    assert services["worker"]["environment"]["CIBA_ISSUER"].startswith("https://")
    # The token key goes only where tokens are opened; the codec server reads history, no more.
    with_token_key = {name for name, service in services.items() if "CIBA_TOKEN_KEY" in service.get("environment", {})}
    assert with_token_key == {"worker", "callback"}


def test_images_are_pinned_and_builds_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service:
            assert (REPO / service["build"] / "Dockerfile").is_file(), name
        else:
            assert re.match(r"^[\w./-]+:\d[\w.-]*$", image), f"{name}: image {image!r} is not pinned to a version"


def test_mounted_files_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} is missing"
    for script in (REPO / "deploy" / "temporal").glob("*.sh"):
        assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0, script


def test_every_setting_it_uses_is_documented(services: dict[str, Any]) -> None:
    readme = (REPO / "README.md").read_text()
    used = set()
    for service in services.values():
        environment = service.get("environment", {})
        used |= {name for name in environment if name.startswith(("CIBA_", "PAYMENT_API_"))}
    assert used and all(name in readme for name in used), sorted(name for name in used if name not in readme)
