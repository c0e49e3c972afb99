"""The payment agent's worker (`temporal-ciba-examples payment-worker`) as a process a test can kill."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from tests.support.stack import examples_command


class WorkerProcess:
    """The payment agent's worker as a separate process that a test can SIGKILL and start again.

    It runs the approval workflow and the payment agent (`temporal-ciba-examples payment-worker`).
    """

    def __init__(self, env: dict[str, str], log_path: Path, command: list[str] | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.command = command or examples_command("payment-worker")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=log)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:  # a worker too busy to finish its shutdown in time
                self.process.kill()
                self.process.wait(timeout=10)
