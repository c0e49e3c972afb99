"""The getting-started path, followed as a newcomer follows it.

The commands come from the pages themselves (docs/getting-started.md and the README, "Run it
against the demo"), so the test follows a page when it changes. The package is the wheel built from this checkout,
installed into a fresh virtual environment; the project is the quickstart's files, copied as
the page says; the demo runs beside it. The shell has that environment's bin first on PATH (the
page's "your virtual environment active") and nothing of this checkout."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx
import pytest

from tests.support.stack import clean_env
from tests.support.temporal import free_port_run, wait_for

ROOT = Path(__file__).resolve().parents[2]
PROJECT_FILES = ("workflows", "activities", "worker.py", "starter.py")
DEMO_DIR_ON_PAGE = "/path/to/temporal-ciba/.demo"
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".venv", "node_modules", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", "site"
)


# Where each page tells the reader to run the quickstart against the demo: the first ```sh
# block after this text.
PATHS = {
    "docs/getting-started.md": "### Run it against the demo",
    "README.md": "Run it against the demo",
}


def page_commands(page: str) -> str:
    """The shell block that follows the page's "Run it against the demo"."""
    section = (ROOT / page).read_text().split(PATHS[page], 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert block, f"{page}: no ```sh block after {PATHS[page]!r}"
    return block.group(1)


def run(command: list[str | Path], cwd: Path, timeout: float = 300) -> None:
    result = subprocess.run(
        [str(part) for part in command], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def fresh_environment(base: Path) -> Path:
    """A virtual environment with only the wheel of this checkout; the test venv's dependencies
    through a .pth file, so nothing is downloaded. Returns its bin directory."""
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", base / "dist", source],
        cwd=base,
    )
    (wheel,) = (base / "dist").glob("temporal_ciba-*.whl")
    venv = base / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=base)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "test-venv-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel], cwd=base)
    return venv / "bin"


async def read_until(stream: asyncio.StreamReader, text: str, output: list[str], timeout: float) -> None:
    async def read() -> None:
        while True:
            line = (await stream.readline()).decode()
            if not line:
                raise AssertionError("ended before printing " + repr(text) + ":\n" + "".join(output))
            output.append(line)
            if text in line:
                return

    await asyncio.wait_for(read(), timeout)


@pytest.mark.parametrize("page", sorted(PATHS))
async def test_the_quickstart_runs_against_the_demo_as_the_page_says(page: str, tmp_path: Path) -> None:
    commands = page_commands(page)
    bin_dir = fresh_environment(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    for name in PROJECT_FILES:  # "Copy them to start"
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, project / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, project / name)

    demo_dir, base = tmp_path / "demo", free_port_run()
    # The README's lines run in the checkout: its .venv and the demo's .demo/ beside the files.
    (project / ".venv").symlink_to(bin_dir.parent)
    (project / ".demo").symlink_to(demo_dir, target_is_directory=True)
    demo = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "temporal_ciba_examples", "demo", "--dir", str(demo_dir), "--port-base", str(base)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=clean_env(),
    )
    demo_output: list[str] = []
    shell: asyncio.subprocess.Process | None = None
    try:
        assert demo.stdout is not None
        await read_until(demo.stdout, "Agent workflow id", demo_output, timeout=120)
        env = {
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "VIRTUAL_ENV": str(bin_dir.parent),
        }
        output, errors = tmp_path / "shell.out", tmp_path / "shell.err"
        # Files, not pipes: the page's `python worker.py &` outlives the shell and would hold a
        # pipe open; it is stopped with the shell's process group.
        with output.open("wb") as out, errors.open("wb") as err:
            shell = await asyncio.create_subprocess_exec(
                "/bin/bash",
                "-c",
                "set -e\n" + commands.replace(DEMO_DIR_ON_PAGE, str(demo_dir)),
                cwd=project,
                env=env,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )

        op = f"http://127.0.0.1:{base + 2}"
        async with httpx.AsyncClient(timeout=10) as http:

            async def reset_request() -> str | None:
                pending = (await http.get(f"{op}/admin/requests")).json()
                return next(
                    (
                        r["auth_req_id"]
                        for r in pending
                        if r["status"] == "pending" and r["binding_message"] == "Reset account acct-1042"
                    ),
                    None,
                )

            auth_req_id = await wait_for(reset_request, timeout=90, interval=0.5, what="the starter to ask alice")
            # alice approves on the approver page (its Approve button posts this).
            approved = await http.post(f"{op}/admin/requests/{auth_req_id}/approve", json={})
            assert approved.status_code == 200, approved.text

        assert await asyncio.wait_for(shell.wait(), timeout=90) == 0, errors.read_text()[-3000:]
        assert "account acct-1042 reset, approved by alice" in output.read_text().splitlines(), errors.read_text()
    finally:
        if shell is not None:
            try:
                os.killpg(shell.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if demo.returncode is None:
            demo.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(demo.wait(), 60)
            except TimeoutError:
                demo.kill()
