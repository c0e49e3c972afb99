"""docker-compose.yml is valid and coherent with the repository.

Debian's docker-compose checks it (it needs no engine); what it builds, mounts and configures
exists and is documented; it publishes only what a person must reach, on 127.0.0.1 unless
CIBA_BIND says otherwise."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import yaml

from tests.support.compose import COMPOSE, REPO, REQUIRED, docker_compose

# What a person opens in a browser: the Temporal UI and the demo OP's approver page. Nothing
# else is published: the frontend, PostgreSQL, the callback, the codec server and the payment
# API are on the compose network only.
PUBLISHED = {"temporal-ui": {8080}, "op": {3000}}
BIND = "${CIBA_BIND:-127.0.0.1}"


def published(env: dict[str, str]) -> dict[str, list[tuple[str | None, int | None, int]]]:
    """Per service, the ports the resolved file publishes as (host IP, host port, container port).

    None for a host IP means every interface."""
    result = docker_compose("config", env=env)
    assert result.returncode == 0, result.stderr
    found: dict[str, list[tuple[str | None, int | None, int]]] = {}
    for name, service in yaml.safe_load(result.stdout)["services"].items():
        for port in service.get("ports", []):
            found.setdefault(name, []).append(parse_port(port))
    return found


def parse_port(port: str | int | dict[str, Any]) -> tuple[str | None, int | None, int]:
    if isinstance(port, dict):  # the long syntax (Compose v2 prints this)
        ip = port.get("host_ip") or None
        host = port.get("published")
        return ip, int(host) if host not in (None, "") else None, int(port["target"])
    spec = str(port).rsplit("/", 1)[0]
    ip, _, rest = spec.rpartition("]:") if spec.startswith("[") else ("", "", spec)
    parts = rest.split(":")
    if ip:
        return ip.lstrip("["), int(parts[0]), int(parts[1])
    if len(parts) == 3:
        return parts[0] or None, int(parts[1]), int(parts[2])
    if len(parts) == 2:
        return None, int(parts[0]), int(parts[1])
    return None, None, int(parts[0])  # a random host port on every interface


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
    # No sign-in in front of the UI by default, so no codec endpoint (see the .env test below).
    assert services["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"] == "${CIBA_UI_CODEC_ENDPOINT:-}"
    assert services["codec-server"]["environment"]["CIBA_CODEC_OPERATOR_TOKENS"].startswith("${")
    assert services["worker"]["environment"]["CIBA_DELIVERY_MODE"] == "ping"
    assert services["worker"]["environment"]["CIBA_ISSUER"].startswith("https://")
    # The token key goes only where tokens are opened; the codec server reads history, no more.
    with_token_key = {name for name, service in services.items() if "CIBA_TOKEN_KEY" in service.get("environment", {})}
    assert with_token_key == {"worker", "callback"}


# An image pinned to what was tested: name:version@sha256:<digest> (scripts/refresh-image-digests.sh).
BY_DIGEST = r"[\w./-]+:\d[\w.-]*@sha256:[0-9a-f]{64}"
# Pinned by version only, because no digest of it could be resolved without registry access (and
# none is invented): each must still be written so here, and leaves this set once the script pins it.
AWAITING_DIGEST = {"temporalio/ui:2.49.1"}


def test_images_are_pinned_by_digest_and_builds_exist(services: dict[str, Any]) -> None:
    unpinned = set()
    for name, service in services.items():
        image = service.get("image", "")
        if "build" in service:
            assert (REPO / service["build"] / "Dockerfile").is_file(), name
        elif image in AWAITING_DIGEST:
            unpinned.add(image)
        else:
            assert re.fullmatch(BY_DIGEST, image), f"{name}: image {image!r} is not pinned by digest"
    assert unpinned == AWAITING_DIGEST


def test_base_images_are_pinned_by_digest() -> None:
    for dockerfile in (REPO / "Dockerfile", REPO / "examples" / "demo" / "op" / "Dockerfile"):
        bases = re.findall(r"^FROM\s+(\S+)", dockerfile.read_text(), re.MULTILINE)
        assert bases and all(re.fullmatch(BY_DIGEST, base) for base in bases), (dockerfile, bases)


def test_mounted_files_exist(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name}: {source} is missing"
    for script in (REPO / "deploy" / "temporal").glob("*.sh"):
        assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0, script


def test_every_setting_it_uses_is_documented(services: dict[str, Any]) -> None:
    reference = (REPO / "docs" / "operations" / "configuration.md").read_text()
    used = set()
    for service in services.values():
        environment = service.get("environment", {})
        used |= {name for name in environment if name.startswith(("CIBA_", "PAYMENT_API_"))}
    assert used and all(name in reference for name in used), sorted(name for name in used if name not in reference)


def test_only_the_ui_and_the_approver_page_are_published_on_loopback() -> None:
    ports = published(REQUIRED)
    assert set(ports) == set(PUBLISHED), f"published: {sorted(ports)}"
    for name, entries in ports.items():
        for ip, host, container in entries:
            assert ip == "127.0.0.1", f"{name} publishes :{container} on {ip or 'every interface'}"
            assert container in PUBLISHED[name] and host == container, (name, host, container)


def test_nothing_publishes_on_every_interface(services: dict[str, Any]) -> None:
    # As written: each published port starts with the bind address (loopback unless CIBA_BIND
    # is set), so none names every interface or falls back to it for want of a host IP.
    for name, service in services.items():
        for port in service.get("ports", []):
            assert isinstance(port, str) and port.startswith(BIND + ":"), f"{name}: {port!r}"
        assert "expose" not in service or all(":" not in str(port) for port in service["expose"]), name


def test_ciba_bind_moves_what_is_published_and_is_documented() -> None:
    ports = published({**REQUIRED, "CIBA_BIND": "192.0.2.7"})
    assert {ip for entries in ports.values() for ip, _, _ in entries} == {"192.0.2.7"}
    assert "CIBA_BIND" in (REPO / "docs" / "operations" / "deployment.md").read_text()
    assert "CIBA_BIND" in (REPO / "deploy" / "example.env").read_text()


def test_the_compose_op_is_a_demo_op_without_test_routes(services: dict[str, Any]) -> None:
    """The OP's approver page is the demo's phone (adminRoutes on).

    The routes that hand out tokens and plan faults (testRoutes) are for tests only."""
    mounts = services["op"]["volumes"]
    assert "./deploy/op.json:/config/op.json:ro" in mounts
    config = json.loads((REPO / "deploy" / "op.json").read_text())
    assert config["adminRoutes"] is True
    assert config.get("testRoutes", False) is False
    dockerfile = (REPO / "examples" / "demo" / "op" / "Dockerfile").read_text()
    assert '"/config/op.json"' in dockerfile and '"adminRoutes": true' in dockerfile


def resolved_services(env: dict[str, str]) -> dict[str, Any]:
    result = docker_compose("config", env=env)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def test_the_ui_origin_and_codec_endpoint_come_from_env() -> None:
    default = resolved_services(REQUIRED)
    assert default["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"] == ""
    assert default["codec-server"]["environment"]["CIBA_CODEC_CORS_ORIGINS"] == "http://localhost:8080"
    chosen = resolved_services(
        {
            **REQUIRED,
            "CIBA_UI_ORIGIN": "https://temporal.example.com",
            "CIBA_UI_CODEC_ENDPOINT": "https://codec.example",
        }
    )
    assert chosen["temporal-ui"]["environment"]["TEMPORAL_CODEC_ENDPOINT"] == "https://codec.example"
    assert chosen["codec-server"]["environment"]["CIBA_CODEC_CORS_ORIGINS"] == "https://temporal.example.com"


def test_every_env_variable_is_in_the_example_env() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
    example = (REPO / "deploy" / "example.env").read_text()
    assert used and all(name in example for name in used), sorted(name for name in used if name not in example)


def test_one_shot_services_restart_on_failure(services: dict[str, Any]) -> None:
    one_shot = {name for name, s in services.items() if "command" in s and s["command"][0] == "dev-certs"}
    one_shot |= {name for name, s in services.items() if str(s.get("entrypoint", "")).find("/deploy/") >= 0}
    assert one_shot == {"certs", "temporal-schema", "temporal-setup"}
    assert all(services[name]["restart"] == "on-failure" for name in one_shot)


def test_the_op_image_runs_on_node_22() -> None:
    dockerfile = (REPO / "examples" / "demo" / "op" / "Dockerfile").read_text()
    assert re.search(r"^FROM node:22[-.]", dockerfile, re.MULTILINE)
    assert "Node.js 22" in (REPO / "README.md").read_text()
    assert "Node.js 22" in (REPO / "docs" / "getting-started.md").read_text()
