"""The demo's secrets (OP client secrets in op.json, keys in state.json) are owner-only from the
first byte on, in an owner-only directory."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from temporal_ciba_examples.demo import supervisor as demo
from temporal_ciba_examples.demo.supervisor import (
    Ports,
    cli_commands,
    load_state,
    private_directory,
    write_cli_env,
    write_op_config,
    write_private,
)

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def permissive_umask() -> object:
    """A umask that would leave new files world-readable, as many systems have (022) or worse."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
def test_demo_directory_and_secret_files_are_owner_only(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    private_directory(directory)
    assert mode(directory) == 0o700
    state = load_state(directory)
    assert mode(directory / "state.json") == 0o600
    config = write_op_config(directory, Ports(), state)
    assert config == directory / "op.json" and mode(config) == 0o600
    secrets = {client["client_secret"] for client in json.loads(config.read_text())["clients"]}
    assert secrets == {state["agent_secret"], state["payment_api_secret"], state["codec_signin_secret"]}
    assert sorted(p.name for p in directory.iterdir()) == ["op.json", "state.json"]  # no temporary left


@pytest.mark.usefixtures("permissive_umask")
def test_an_existing_world_readable_directory_and_file_are_tightened(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    directory.mkdir(mode=0o755)
    private_directory(directory)
    assert mode(directory) == 0o700
    old = directory / "op.json"
    old.write_text("old")
    old.chmod(0o644)
    write_private(old, "secret")
    assert mode(old) == 0o600 and old.read_text() == "secret"


@pytest.mark.usefixtures("permissive_umask")
def test_no_moment_when_the_secret_is_in_a_readable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every write of the content happens to a file that is already 0600."""
    modes_at_write: list[int] = []
    real_fdopen = os.fdopen

    def spying_fdopen(fd: int, *args: object, **kwargs: object) -> object:
        modes_at_write.append(stat.S_IMODE(os.fstat(fd).st_mode))
        return real_fdopen(fd, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(demo.os, "fdopen", spying_fdopen)
    write_private(tmp_path / "op.json", "secret")
    assert modes_at_write == [0o600]


def test_a_planted_symlink_is_replaced_not_written_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("untouched")
    (tmp_path / "op.json").symlink_to(target)
    write_private(tmp_path / "op.json", "secret")
    assert target.read_text() == "untouched"
    assert not (tmp_path / "op.json").is_symlink() and mode(tmp_path / "op.json") == 0o600


@pytest.mark.usefixtures("permissive_umask")
def test_the_cli_environment_is_owner_only_and_sources_in_a_bare_shell(tmp_path: Path) -> None:
    directory = tmp_path / "demo dir"  # a space, as home directories may have
    private_directory(directory)
    state = load_state(directory)
    env_file = write_cli_env(directory, Ports.from_base(20000), state)
    assert mode(env_file) == 0o600
    script = f"source {shlex.quote(str(env_file))}; echo $TEMPORAL_ADDRESS $CIBA_PAYLOAD_KEY $DEMO_CODEC_TOKEN"
    shown = subprocess.run(
        ["/bin/bash", "-c", script], env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True
    )
    assert shown.stdout.split() == ["127.0.0.1:20000", state["payload_key"], state["codec_token"]]


def test_the_printed_commands_name_the_venvs_tools_by_absolute_path(tmp_path: Path) -> None:
    commands = cli_commands(tmp_path / "cli.env", Ports(), "demo-payment-inv-1")
    assert commands[0] == f"source {shlex.quote(str(tmp_path / 'cli.env'))}"
    for command in commands[1:]:
        program = shlex.split(command)[0]
        assert Path(program).is_absolute() and os.access(program, os.X_OK), command
    assert "-w demo-payment-inv-1" in commands[-1] and '"Bearer $DEMO_CODEC_TOKEN"' in commands[-1]


def sourced(path: Path) -> dict[str, str]:
    """The variables a shell has after `source path`."""
    script = f"set -a; source {shlex.quote(str(path))}; env -0"
    output = subprocess.run(["/bin/bash", "-c", script], env={}, capture_output=True, check=True).stdout
    return dict(item.split("=", 1) for item in output.decode().split("\0") if "=" in item)


def test_the_demo_runs_on_a_task_queue_of_its_own(tmp_path: Path) -> None:
    """A worker of your own beside the demo (the quickstart's, on the library's default queue) never
    takes the demo's approvals, nor the demo's worker yours: the demo's queue is not the default."""
    from temporal_ciba._settings import TemporalSettings

    default = TemporalSettings.model_fields["task_queue"].default
    quickstart = (Path(__file__).resolve().parents[2] / "worker.py").read_text()
    assert f'os.environ.get("CIBA_TASK_QUEUE", "{default}")' in quickstart
    state = load_state(tmp_path)
    assert sourced(write_cli_env(tmp_path, Ports(), state))["CIBA_TASK_QUEUE"] == demo.TASK_QUEUE != default
    # worker.env (sourced before running your own worker) leaves the queue to that worker.
    assert "CIBA_TASK_QUEUE" not in sourced(demo.write_worker_env(tmp_path, Ports(), state))
