"""docker-compose's services, each run here as the user its image runs as, on the same shared volume contents.

There is no Docker engine on these machines, so this is how a permission mistake (a key one service
writes and another cannot read) fails before anyone deploys.

What is modelled: the `certs` and `payments` volumes start as the app image makes /certs and
/data (owned by its user, ciba, 10001); each service runs its image's command (ENTRYPOINT and
compose `command`) under `setpriv` with its uid and gid (compose `user:`, else the Dockerfile's
USER), with the environment `docker-compose config` resolves; compose host names become
loopback addresses and container paths the volume directories. Third-party images (PostgreSQL,
Temporal, its UI and admin tools) are not run; the files mounted into them must be readable by
any user. The services run from an install like the image's, not from the checkout, which may
sit in a directory other users cannot enter. Needs root (setpriv changes uid)."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import ssl
import stat
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.compose import REPO, docker_compose
from tests.support.temporal import DevServer, free_port

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="setpriv needs root")

SECRETS = {
    "CIBA_PAYLOAD_KEY": base64.b64encode(os.urandom(32)).decode(),
    "CIBA_TOKEN_KEY": base64.b64encode(os.urandom(32)).decode(),
    "CIBA_CLIENT_SECRET": "client-secret-" + "c" * 32,
    "PAYMENT_API_CLIENT_SECRET": "payment-secret-" + "p" * 32,
    "POSTGRES_PASSWORD": "unused",
    "CIBA_CODEC_OPERATOR_TOKENS": "o" * 40,
}
# What each Dockerfile's USER is: the app image's `useradd --uid`, the node image's `node`.
KNOWN_USERS = {"node": (1000, 1000)}


@dataclass
class Service:
    name: str
    user: tuple[int, int]
    argv: list[str]
    env: dict[str, str]


def image_user(dockerfile: Path) -> tuple[int, int]:
    text = dockerfile.read_text()
    user = re.findall(r"^USER (\S+)", text, re.MULTILINE)[-1]
    created = re.search(rf"useradd --uid (\d+)\b[^\n]* {user}\b", text)
    if created:
        return int(created.group(1)), int(created.group(1))
    return KNOWN_USERS[user]


def entrypoint(dockerfile: Path) -> list[str]:
    found = re.search(r"^ENTRYPOINT (\[.*\])", dockerfile.read_text(), re.MULTILINE)
    return json.loads(found.group(1)) if found else []


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    result = docker_compose("config", env=SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def service(resolved: dict[str, Any], name: str, replace: dict[str, str], **env: str) -> Service:
    """The service `name` as it would run.

    Its user, its command, its environment with compose names and container paths replaced, plus
    `env`."""
    spec = resolved[name]
    dockerfile = REPO / spec["build"]["context"] / "Dockerfile" if "build" in spec else None
    assert dockerfile is not None and dockerfile.is_file(), f"{name}: not built here"
    if "user" in spec:
        uid, gid = (int(part) for part in str(spec["user"]).split(":"))
        user = (uid, gid)
    else:
        user = image_user(dockerfile)
    command = spec.get("command") or []
    environment = {}
    for key, value in (spec.get("environment") or {}).items():
        value = str(value)
        for old, new in replace.items():
            value = value.replace(old, new)
        environment[key] = value
    program = spec.get("entrypoint") or entrypoint(dockerfile)
    return Service(name, user, [*program, *command], {**environment, **env})


@dataclass
class Volumes:
    certs: Path
    data: Path
    root: Path


@pytest.fixture(scope="module")
def volumes() -> Iterator[Volumes]:
    # Under a directory every uid can traverse (pytest's own tmp_path is root-only).
    root = Path(tempfile.mkdtemp(prefix="compose-volumes-"))
    root.chmod(0o755)
    found = Volumes(root / "certs", root / "data", root)
    ciba = image_user(REPO / "Dockerfile")
    for directory in (found.certs, found.data):
        directory.mkdir()
        os.chown(directory, *ciba)  # as the app image's `mkdir /certs /data && chown ciba`
    yield found
    shutil.rmtree(root)


@pytest.fixture(scope="module")
def temporal() -> Iterator[DevServer]:
    directory = Path(tempfile.mkdtemp(prefix="compose-temporal-"))
    server = DevServer(directory)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(directory)


@dataclass
class Image:
    """The app image's install: its programs and its packages' directories."""

    bin: Path
    package: Path
    samples: Path

    def program(self, argv: list[str]) -> list[str]:
        if argv[0] in ("temporal-ciba", "temporal-ciba-examples"):
            return [str(self.bin / argv[0]), *argv[1:]]
        return argv


def link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system
        shutil.copy2(source, destination)


@pytest.fixture(scope="module")
def image(volumes: Volumes) -> Image:
    """What the Dockerfile's `pip install .` makes, under the volumes' root.

    A virtualenv with the test venv's dependencies and this checkout's package, readable by every
    user. Run from the checkout, a clone in a `mktemp -d` directory (0700) fails for a reason no
    image has."""
    app = volumes.root / "app"
    venv.create(app, symlinks=True)
    site = Path(sysconfig.get_path("purelib"))
    installed = app / site.relative_to(sys.prefix)
    # The editable install's finder points into the checkout; the package is copied instead.
    editable = shutil.ignore_patterns("__editable__*", "__pycache__")
    shutil.copytree(site, installed, ignore=editable, copy_function=link_or_copy, dirs_exist_ok=True)
    package = installed / "temporal_ciba"
    shutil.copytree(REPO / "temporal_ciba", package, ignore=editable, copy_function=link_or_copy)
    samples = installed / "temporal_ciba_examples"
    # node_modules stays: the op service runs server.mjs from here, as its image runs it after `npm ci`.
    not_installed = shutil.ignore_patterns("__editable__*", "__pycache__", "*.egg-info")
    shutil.copytree(REPO / "examples", samples, ignore=not_installed, copy_function=link_or_copy)
    # The console scripts pip writes for `[project.scripts]` of the library and of the samples.
    scripts = {"temporal-ciba": "temporal_ciba._cli", "temporal-ciba-examples": "temporal_ciba_examples.cli"}
    for name, module in scripts.items():
        script = app / "bin" / name
        script.write_text(f"#!{app}/bin/python\nimport sys\nfrom {module} import main\nsys.exit(main())\n")
        script.chmod(0o755)
    return Image(app / "bin", package, samples)


def as_user(service: Service, argv: list[str]) -> list[str]:
    uid, gid = service.user
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


class Running:
    def __init__(self, service: Service, image: Image, log: Path) -> None:
        self.service, self.log = service, log
        env = {"PATH": os.environ["PATH"], **service.env}
        self.process = subprocess.Popen(
            as_user(service, image.program(service.argv)), env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )

    def wait_until(self, ready: Any, what: str) -> None:
        deadline = time.monotonic() + 60
        while not ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{self.service.name} as uid {self.service.user}: {what}:\n{self.log.read_text()}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=15)


def serving(url: str, verify: Any = True) -> Any:
    def check() -> bool:
        try:
            return httpx.get(url, verify=verify, timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    return check


def test_every_app_service_runs_as_its_images_user(
    resolved: dict[str, Any], volumes: Volumes, image: Image, temporal: DevServer
) -> None:
    ports = {name: free_port() for name in ("op", "payment-api", "callback", "codec", "metrics")}
    op_issuer = f"https://127.0.0.1:{ports['op']}"
    replace = {
        "/certs/": f"{volumes.certs}/",
        "/data/": f"{volumes.data}/",
        "temporal:7233": temporal.address,
        "https://op:3000": op_issuer,
        "https://payment-api:8700": f"https://127.0.0.1:{ports['payment-api']}",
        "0.0.0.0": "127.0.0.1",  # noqa: S104 (what the services bind in compose, here loopback)
    }
    logs = volumes.root / "logs"
    logs.mkdir()
    running: list[Running] = []
    try:
        # certs: the one-shot that writes the CA, the certificate and the key into the volume.
        certs = service(resolved, "certs", replace)
        certs.argv = [part.replace("/certs", str(volumes.certs)) for part in certs.argv]
        made = subprocess.run(as_user(certs, image.program(certs.argv)), capture_output=True, text=True, check=False)
        assert made.returncode == 0, made.stderr
        ca = ssl.create_default_context(cafile=str(volumes.certs / "ca.pem"))

        # op: its command on its image's files, its config as mounted (paths and port mapped).
        config = json.loads((REPO / "deploy" / "op.json").read_text())
        config |= {"host": "127.0.0.1", "port": ports["op"], "issuer": op_issuer}
        config["tls"] = {k: v.replace("/certs/", f"{volumes.certs}/") for k, v in config["tls"].items()}
        config_file = volumes.root / "op.json"
        config_file.write_text(json.dumps(config))
        config_file.chmod(0o644)
        op = service(resolved, "op", replace)
        op.argv = ["node", str(image.samples / "demo" / "op" / "server.mjs"), str(config_file)]
        running.append(Running(op, image, logs / "op.log"))
        running[-1].wait_until(serving(op_issuer + "/.well-known/openid-configuration", verify=ca), "no HTTPS")

        payment_api = service(resolved, "payment-api", replace, PAYMENT_API_PORT=str(ports["payment-api"]))
        running.append(Running(payment_api, image, logs / "payment-api.log"))
        url = f"https://127.0.0.1:{ports['payment-api']}/healthz"
        running[-1].wait_until(serving(url, verify=ca), "no HTTPS")

        callback = service(resolved, "callback", replace, CIBA_CALLBACK_PORT=str(ports["callback"]))
        running.append(Running(callback, image, logs / "callback.log"))
        url = f"https://127.0.0.1:{ports['callback']}/healthz"
        running[-1].wait_until(serving(url, verify=ca), "no HTTPS")

        codec = service(resolved, "codec-server", replace, CIBA_CODEC_PORT=str(ports["codec"]))
        codec.env["CIBA_CODEC_ALLOWED_HOSTS"] = "127.0.0.1"
        running.append(Running(codec, image, logs / "codec-server.log"))
        running[-1].wait_until(serving(f"http://127.0.0.1:{ports['codec']}/decode"), "not serving")

        worker = service(
            resolved, "worker", replace, CIBA_METRICS_BIND=f"127.0.0.1:{ports['metrics']}", CIBA_LOG_LEVEL="INFO"
        )
        running.append(Running(worker, image, logs / "worker.log"))
        running[-1].wait_until(lambda: "worker started" in (logs / "worker.log").read_text(), "did not start")
    finally:
        for process in reversed(running):
            process.stop()


def bind_sources(spec: dict[str, Any]) -> list[Path]:
    """The host paths a service bind-mounts, in either syntax `docker-compose config` prints.

    `source:target[:mode]` (Debian's docker-compose 1.x) or the long form's mapping."""
    sources = []
    for volume in spec.get("volumes", []):
        if isinstance(volume, dict):
            source = volume["source"] if volume.get("type") == "bind" else ""
        else:
            source = volume.split(":")[0]
        if source.startswith("/"):  # a named volume's name has no slash
            sources.append(Path(source))
    return sources


def test_files_mounted_into_other_images_are_readable_by_any_user(resolved: dict[str, Any]) -> None:
    """A bind mount shows the container the file itself, whatever its directory on the host.

    What decides is the mode of the file and of the directories under the mount, for other users
    (third-party images run as their own)."""
    checked = []
    for name, spec in resolved.items():
        for source in bind_sources(spec):
            for path in [source, *source.rglob("*")]:
                mode = path.stat().st_mode
                needed = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0)
                assert mode & needed == needed, f"{name}: {path} is not readable by other users"
                checked.append(path)
    assert {REPO / "deploy" / "op.json", REPO / "deploy" / "temporal" / "setup-postgres.sh"} <= set(checked)
