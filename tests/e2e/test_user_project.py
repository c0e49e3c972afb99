"""The package as a library in someone else's project, and the samples beside it.

The wheel built from this checkout, installed into a virtual environment of its own, and the
quickstart (the repository's workflows/, activities/, worker.py and starter.py, built only on
`from temporal_ciba import ...`) run from a directory of its own against the real Temporal dev
server and the real test OP; and the samples' wheel installed beside it."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from importlib.util import find_spec
from pathlib import Path

import pytest

from tests.support.op import TestOP
from tests.support.stack import AGENT_CLIENT, PAYLOAD_KEY, SECRET, TOKEN_KEY, clean_env
from tests.support.temporal import DevServer, wait_for

ROOT = Path(__file__).resolve().parents[2]
USER_FILES = ("workflows", "activities", "worker.py", "starter.py")
APPROVER = "alice"  # an account of the test OP (tests.support.stack ACCOUNTS)

# What the source tree holds besides the package's sources: never copied into the build.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
)

# What a user checks after installing: the public names import, and from where.
IMPORTS = """\
import importlib.metadata
import json
import sys

import activities.accounts
import temporal_ciba
import worker
import workflows.reset_account
from temporal_ciba import ApprovalOutcome, ApprovalRequest, CibaPlugin, require_approval

assert workflows.reset_account.require_approval is require_approval
print(json.dumps({
    "temporal_ciba": temporal_ciba.__file__,
    "workflows": workflows.reset_account.__file__,
    "activities": activities.accounts.__file__,
    "worker": worker.__file__,
    "distribution": str(importlib.metadata.distribution("temporal-ciba").locate_file("temporal_ciba/__init__.py")),
    "version": importlib.metadata.version("temporal-ciba"),
    "sys_path": sys.path,
}))
"""


@dataclass
class UserProject:
    python: Path  # the project's virtual environment's interpreter
    venv: Path
    site_packages: Path
    directory: Path  # the project: workflows/, activities/, worker.py


def user_env(**values: str) -> dict[str, str]:
    """This process's environment without anything that points Python at this checkout or venv."""
    env = clean_env(**values)
    for name in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(name, None)
    return env


def run(command: list[str | Path], *, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, env=user_env(), capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _builds_without_isolation() -> bool:
    """setuptools builds wheels by itself from 70.1; older ones need the `wheel` package."""
    installed = tuple(int(part) for part in re.findall(r"\d+", version("setuptools"))[:2])
    return installed >= (70, 1) or (installed >= (69, 0) and find_spec("wheel") is not None)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout (the checkout gets no build/ directory)."""
    directory = tmp_path_factory.mktemp("wheel")
    source = directory / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    command: list[str | Path] = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"]
    if _builds_without_isolation():
        command.append("--no-build-isolation")  # offline: the venv's own setuptools
    run([*command, "-w", directory / "dist", source], cwd=directory, timeout=300)
    (built,) = (directory / "dist").glob("temporal_ciba-*.whl")
    return built


@pytest.fixture(scope="module")
def user_project(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> UserProject:
    """A fresh venv with only the wheel installed.

    The dependencies are the test venv's, seen through a .pth file, so nothing is downloaded."""
    base = tmp_path_factory.mktemp("user")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    python = venv / "bin" / "python"
    site_packages = Path(
        run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=base).stdout.strip()
    )
    (site_packages / "test-venv-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index"]
    run([*install, "--disable-pip-version-check", wheel], cwd=base)

    project = base / "project"
    project.mkdir()
    for name in USER_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, project / name)
    return UserProject(python=python, venv=venv, site_packages=site_packages, directory=project)


def test_wheel_holds_the_package_only(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"temporal_ciba", "temporal_ciba-0.1.0.dist-info"}
    for required in ("temporal_ciba/__init__.py", "temporal_ciba/py.typed"):
        assert required in names, required
    assert not [name for name in names if name.endswith((".mjs", ".html", "package.json"))]
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def test_installed_package_is_the_wheel_beside_the_users_modules(user_project: UserProject) -> None:
    result = run([user_project.python, "-c", IMPORTS], cwd=user_project.directory)
    found = json.loads(result.stdout)
    installed = user_project.site_packages / "temporal_ciba" / "__init__.py"
    assert Path(found["temporal_ciba"]) == installed  # the wheel's copy, not the checkout's
    assert Path(found["distribution"]) == installed and found["version"] == "0.1.0"
    for module, path in (
        ("workflows", "workflows/reset_account.py"),
        ("activities", "activities/accounts.py"),
        ("worker", "worker.py"),
    ):
        assert Path(found[module]) == user_project.directory / path, module
    assert str(ROOT) not in found["sys_path"]
    assert not (user_project.site_packages / "temporal_ciba" / "example").exists()
    assert (user_project.venv / "bin" / "temporal-ciba").is_file()


# The samples' distribution installed from its wheel: its modules and data come from site-packages.
SAMPLES = """\
import json
from pathlib import Path

import temporal_ciba_examples.demo.supervisor
import temporal_ciba_examples.payment_agent.workflows
from temporal_ciba_examples.demo.servers import PACKAGED_OP
from temporal_ciba_examples.policy.policy_runner import EXAMPLE_POLICY

print(json.dumps({
    "workflows": temporal_ciba_examples.payment_agent.workflows.__file__,
    "op": [str(PACKAGED_OP / name) for name in ("server.mjs", "package-lock.json", "public/approver.html")],
    "policy": str(EXAMPLE_POLICY),
}))
"""


def test_the_samples_install_from_their_wheel_beside_the_library(user_project: UserProject, wheel: Path) -> None:
    directory = wheel.parent.parent
    command: list[str | Path] = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"]
    if _builds_without_isolation():
        command.append("--no-build-isolation")
    run([*command, "-w", directory / "samples", directory / "source" / "examples"], cwd=directory, timeout=300)
    (built,) = (directory / "samples").glob("temporal_ciba_examples-*.whl")
    names = zipfile.ZipFile(built).namelist()
    assert {name.split("/")[0] for name in names} == {
        "temporal_ciba_examples",
        "temporal_ciba_examples-0.1.0.dist-info",
    }
    install = [sys.executable, "-m", "pip", "--python", user_project.python, "install", "--no-deps", "--no-index"]
    run([*install, "--disable-pip-version-check", built], cwd=directory)
    found = json.loads(run([user_project.python, "-c", SAMPLES], cwd=user_project.directory).stdout)
    installed = user_project.site_packages / "temporal_ciba_examples"
    assert Path(found["workflows"]) == installed / "payment_agent" / "workflows.py"
    assert all(Path(path).is_file() and Path(path).is_relative_to(installed) for path in found["op"]), found["op"]
    assert Path(found["policy"]) == installed / "policy" / "policy.toml" and Path(found["policy"]).is_file()
    script = user_project.venv / "bin" / "temporal-ciba-examples"
    assert "payment-worker" in run([script, "--help"], cwd=user_project.directory).stdout


@dataclass
class UserWorker:
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def user_worker(user_project: UserProject, temporal_server: DevServer, op: TestOP) -> Iterator[UserWorker]:
    """`python worker.py` in the user's project and venv: CibaPlugin.from_env(), poll mode."""
    env = user_env(
        TEMPORAL_ADDRESS=temporal_server.address,
        CIBA_ISSUER=op.issuer,
        CIBA_CLIENT_ID=AGENT_CLIENT,
        CIBA_CLIENT_SECRET=SECRET,
        CIBA_DELIVERY_MODE="poll",
        CIBA_PAYLOAD_KEY=PAYLOAD_KEY,
        CIBA_TOKEN_KEY=TOKEN_KEY,
        CIBA_TASK_QUEUE=f"user-project-{uuid.uuid4().hex[:8]}",
    )
    log_path = user_project.directory.parent / "worker.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(user_project.python), "worker.py"],
            cwd=user_project.directory,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield UserWorker(process, log_path, env)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def worker_log_on_failure(worker: UserWorker) -> Iterator[None]:
    try:
        yield
        assert worker.process.poll() is None, "the user's worker exited"
    except BaseException:
        print(f"--- the user's worker ({worker.log_path}) ---\n{worker.log()[-5000:]}")
        raise


@pytest.mark.parametrize("approve", [True, False], ids=["approved", "denied"])
async def test_users_worker_runs_the_users_workflow(
    user_project: UserProject, user_worker: UserWorker, op: TestOP, approve: bool
) -> None:
    account_id = f"acct-{uuid.uuid4().hex[:8]}"
    with worker_log_on_failure(user_worker):
        starter = await asyncio.create_subprocess_exec(
            str(user_project.python),
            "starter.py",
            account_id,
            APPROVER,
            f"reset-{account_id}",
            cwd=user_project.directory,
            env=user_worker.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        finished = asyncio.create_task(starter.communicate())
        try:

            def pending() -> str | None:
                if finished.done():
                    out, err = finished.result()
                    output = (out + err).decode()
                    raise AssertionError(f"the starter ended before an approval was asked:\n{output}")
                if user_worker.process.poll() is not None:
                    raise AssertionError("the user's worker exited")
                message = f"Reset account {account_id}"
                return next(
                    (
                        request["auth_req_id"]
                        for request in op.requests("pending")
                        if request["binding_message"] == message and request["client_id"] == AGENT_CLIENT
                    ),
                    None,
                )

            auth_req_id = await wait_for(pending, timeout=60, what="the user's approval request to reach the OP")
            (op.approve if approve else op.deny)(auth_req_id)
            stdout, stderr = await asyncio.wait_for(asyncio.shield(finished), timeout=60)
        finally:
            if starter.returncode is None and not finished.done():
                starter.kill()
                await finished
        assert starter.returncode == 0, stderr.decode()
        result = stdout.decode().strip()
        if approve:
            assert result == f"account {account_id} reset, approved by {APPROVER}"
        else:
            assert result.startswith("not reset: denied"), result


def _normalised(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines()) + "\n"


@pytest.mark.parametrize("path", ["workflows/reset_account.py", "activities/accounts.py", "worker.py", "starter.py"])
def test_readme_shows_the_user_project_as_it_is(path: str) -> None:
    readme = _normalised((ROOT / "README.md").read_text())
    code = _normalised((ROOT / path).read_text())
    assert f"```python\n{code}```" in readme, f"README.md has no ```python block with the text of {path}"
    # The getting-started page includes the file itself (pymdownx.snippets).
    assert f'--8<-- "{path}"' in (ROOT / "docs" / "getting-started.md").read_text(), path
