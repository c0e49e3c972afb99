"""Start and drive the oidc-provider test OP (examples/demo/op/server.mjs) from Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

OP_DIR = Path(__file__).resolve().parents[2] / "examples" / "demo" / "op"
CIBA_GRANT = "urn:openid:params:grant-type:ciba"


def ensure_node_modules() -> None:
    """Install the pinned oidc-provider (package-lock.json) once, if it is not there yet."""
    if not (OP_DIR / "node_modules" / "oidc-provider").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to run the test OP (install Node.js 22)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=OP_DIR, check=True)


def ciba_client(client_id: str, *, mode: str = "poll", **metadata: Any) -> dict[str, Any]:
    """Client metadata for a CIBA client of the test OP."""
    return {
        "client_id": client_id,
        "grant_types": [CIBA_GRANT],
        "response_types": [],
        "redirect_uris": [],
        "backchannel_token_delivery_mode": mode,
        "authorization_details_types": [
            "payment_initiation",
            "account_reset",
            "production_change",
            "agent_tool_call",
            "service_job",
        ],
        "require_auth_time": True,
        **metadata,
    }


@dataclass
class TestOP:
    issuer: str
    process: subprocess.Popen[str]
    log_path: Path

    __test__ = False  # not a pytest test class

    def _admin(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, self.issuer + path, json=body, timeout=10.0)
        response.raise_for_status()
        return response.json()

    def requests(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._admin("GET", "/admin/requests" + (f"?status={status}" if status else ""))

    def approve(self, auth_req_id: str, **options: Any) -> dict[str, Any]:
        return self._admin("POST", f"/admin/requests/{auth_req_id}/approve", options)

    def deny(self, auth_req_id: str) -> dict[str, Any]:
        return self._admin("POST", f"/admin/requests/{auth_req_id}/deny", {})

    def token_requests(self, auth_req_id: str | None = None) -> list[dict[str, Any]]:
        query = f"?auth_req_id={auth_req_id}" if auth_req_id else ""
        return self._admin("GET", "/admin/token-requests" + query)

    def pings(self, auth_req_id: str | None = None) -> list[dict[str, Any]]:
        return [p for p in self._admin("GET", "/admin/pings") if auth_req_id is None or p["auth_req_id"] == auth_req_id]

    def ping_answers(self, auth_req_id: str, timeout: float = 10.0) -> list[str | None]:
        """What each ping for `auth_req_id` got, once every one has its answer.

        The OP records it when the ping's HTTP call returns, which can be after the approval it woke
        completed."""
        deadline = time.monotonic() + timeout
        while True:
            answers = [ping["status"] for ping in self.pings(auth_req_id)]
            if None not in answers or time.monotonic() > deadline:
                return answers
            time.sleep(0.05)

    def issued(self) -> dict[str, dict[str, Any]]:
        return self._admin("GET", "/admin/issued")

    def set_faults(self, *faults: dict[str, Any]) -> None:
        self._admin("POST", "/admin/faults", {"faults": list(faults)})

    def rotate_keys(self) -> list[str]:
        """New signing keys replace the OP's; returns their kids."""
        return self._admin("POST", "/admin/rotate-keys")["kids"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


# The OP's unauthenticated routes, off unless its config turns them on (server.mjs): the
# approver page and /admin/requests, approve, deny (adminRoutes), and the test-only
# /admin/issued (every token response) and /admin/faults (testRoutes).
TEST_ROUTES = {"adminRoutes": True, "testRoutes": True}


@contextmanager
def run_test_op(
    config: dict[str, Any], *, env: dict[str, str] | None = None, test_routes: bool = True
) -> Iterator[TestOP]:
    """Start the OP with `config` on a free loopback port.

    Stop it on exit. With `test_routes` (the default for tests) its admin and test-only routes are
    on unless `config` says otherwise; without, the OP runs exactly as configured."""
    ensure_node_modules()
    if test_routes:
        config = {**TEST_ROUTES, **config}
    workdir = Path(tempfile.mkdtemp(prefix="ciba-op-"))
    config_path = workdir / "config.json"
    config_path.write_text(json.dumps(config))
    log_path = workdir / "op.log"
    log = log_path.open("w")
    process = subprocess.Popen(
        [shutil.which("node") or "node", str(OP_DIR / "server.mjs"), str(config_path)],
        cwd=OP_DIR,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    ready: list[str] = []
    reader = threading.Thread(target=lambda: ready.append(process.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout=30)
    if not ready or not ready[0].strip():
        exit_code = process.poll()
        process.kill()
        state = "still running after 30 s" if exit_code is None else f"exited with {exit_code}"
        raise RuntimeError(f"the test OP did not start ({state}); see {log_path}:\n{log_path.read_text()[-2000:]}")
    op = TestOP(issuer=json.loads(ready[0])["issuer"], process=process, log_path=log_path)
    try:
        yield op
    finally:
        op.stop()
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)
