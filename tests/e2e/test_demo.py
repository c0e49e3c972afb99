"""The one-command demo, as a newcomer runs it: the approver page in a real browser, the agent
resuming after the click, Ctrl-C stopping everything, and a second run working."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import httpx
from playwright.async_api import Browser, Page, expect
from temporalio.client import Client

from temporal_ciba._programs.connect import connect
from temporal_ciba_examples.payment_agent.workflows import PaymentAgentWorkflow
from tests.support.browser import chromium
from tests.support.temporal import free_port_run, ports_bindable, venv_tool, wait_for
from tests.support.temporal_ui import everything_shown, use_codec_with_credentials

REPOSITORY = Path(__file__).resolve().parents[2]


class Demo:
    def __init__(self, directory: Path, base: int) -> None:
        self.directory, self.base = directory, base
        self.process: asyncio.subprocess.Process | None = None
        self.output: list[str] = []

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "temporal_ciba_examples",
            "demo",
            "--dir",
            str(self.directory),
            "--port-base",
            str(self.base),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def line_with(self, text: str, timeout: float = 90.0) -> str:
        assert self.process is not None and self.process.stdout is not None

        async def read() -> str:
            assert self.process is not None and self.process.stdout is not None
            while True:
                line = (await self.process.stdout.readline()).decode()
                if not line:
                    raise AssertionError("the demo ended early:\n" + "".join(self.output))
                self.output.append(line)
                if text in line:
                    return line

        return await asyncio.wait_for(read(), timeout)

    def kill(self) -> None:
        """After a failure: stop the demo and, through it, its services."""
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()

    async def interrupt(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        assert self.process.stdout is not None
        try:
            rest = await asyncio.wait_for(self.process.stdout.read(), 60)
        except TimeoutError:
            raise AssertionError("the demo did not stop on Ctrl-C:\n" + "".join(self.output)) from None
        self.output.append(rest.decode())
        return await asyncio.wait_for(self.process.wait(), 30)


def printed_commands(output: list[str]) -> list[str]:
    """The indented lines the demo prints after "paste these lines", up to the blank line."""
    lines = "".join(output).splitlines()
    start = next(i for i, line in enumerate(lines) if "paste these lines" in line) + 1
    while not lines[start].startswith("  "):
        start += 1
    commands = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        commands.append(line.strip())
    return commands


async def test_demo_runs_end_to_end_twice(tmp_path: Path) -> None:
    base = free_port_run()
    first, again = Demo(tmp_path / "demo", base), Demo(tmp_path / "demo", base)
    try:
        await run_and_approve(first, again, tmp_path, base)
    finally:
        first.kill()
        again.kill()


async def run_and_approve(demo: Demo, again: Demo, tmp_path: Path, base: int) -> None:
    await demo.start()
    approver_url = (await demo.line_with("Approver page")).split()[-1]
    ui_url = (await demo.line_with("Temporal UI")).split()[-1]
    signin_url = (await demo.line_with("Sign in to decode")).split()[-1]
    workflow_id = (await demo.line_with("Agent workflow id")).split()[-1]
    assert approver_url == f"http://127.0.0.1:{base + 2}/approver" and workflow_id in ui_url
    assert signin_url == f"http://localhost:{base + 5}/login?{urlencode({'next': ui_url})}"

    state = json.loads((tmp_path / "demo" / "state.json").read_text())
    client = await connect(base64.b64decode(state["payload_key"]), target_host=f"127.0.0.1:{base}")
    approval_id = await wait_for(lambda: pending_child(client, workflow_id), what="the approval to start")
    # `temporal workflow metadata` through the codec server (it encodes its empty input first).
    through_codec = [
        "--codec-endpoint",
        f"http://127.0.0.1:{base + 5}",
        "--codec-auth",
        f"Bearer {state['codec_token']}",
    ]

    async def metadata_says_pending() -> bool:
        metadata = await asyncio.to_thread(
            subprocess.run,
            [
                venv_tool("temporal"),
                "workflow",
                "metadata",
                "--address",
                f"127.0.0.1:{base}",
                "-w",
                approval_id,
                *through_codec,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert metadata.returncode == 0, metadata.stderr
        return "CIBA approval: pending" in metadata.stdout

    # The approval starts as `requesting`; it is pending once the OP has answered the request.
    await wait_for(metadata_says_pending, interval=0.5, what="the metadata, decoded, to say the approval is pending")

    async with chromium() as browser:
        screenshot = Path(os.environ.get("CIBA_TEST_SCREENSHOTS") or tmp_path) / "temporal-ui-decoded.png"
        await the_ui_decodes_only_for_a_signed_in_operator(browser, base, approval_id, screenshot)
        page = await browser.new_page()
        await page.goto(approver_url)
        card = (
            page.locator(".request").filter(has_text="Pay EUR 120.00 to IBAN ").filter(has_text=" of ACME GmbH, code ")
        )
        await expect(card).to_be_visible(timeout=30_000)
        await card.locator("button.approve").click()
        await expect(card.locator(".decided")).to_have_text("Approved")
    resumed = await demo.line_with("Agent resumed")
    assert "approved by alice" in resumed and "payment pay_" in resumed

    # The agent's workflow, read back from the demo's Temporal with the demo's key.
    result = await client.get_workflow_handle_for(PaymentAgentWorkflow.run, workflow_id).result()
    assert result.outcome.status == "approved" and result.receipt is not None
    # The Temporal UI is up; the CLI decodes history through the codec server with the demo's
    # operator token, and without it gets nothing.
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.get(f"http://127.0.0.1:{base + 1}/")).status_code == 200
    show = [venv_tool("temporal"), "workflow", "show", "--address", f"127.0.0.1:{base}", "-w", workflow_id]
    codec = ["--codec-endpoint", f"http://127.0.0.1:{base + 5}"]
    decoded = subprocess.run(
        [*show, *codec, "--codec-auth", f"Bearer {state['codec_token']}"], capture_output=True, text=True, check=False
    )
    assert decoded.returncode == 0 and "ACME GmbH" in decoded.stdout, decoded.stderr
    refused = subprocess.run([*show, *codec], capture_output=True, text=True, check=False)
    assert "ACME GmbH" not in refused.stdout

    # The commands the demo printed work as pasted into a bare shell: no venv on PATH, no
    # settings but those its env file exports.
    pasted = printed_commands(demo.output)
    assert pasted[0].startswith("source ") and len(pasted) == 4
    shell = subprocess.run(
        ["/bin/bash", "-c", "set -e\n" + "\n".join(pasted)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert shell.returncode == 0, shell.stderr
    assert f"{workflow_id}.approval-" in shell.stdout and "\tapproved\t" in shell.stdout  # temporal-ciba list
    assert "ACME GmbH" in shell.stdout  # the history, decoded through the codec server

    assert await demo.interrupt() == 0
    # Every service the demo started lets go of its port; one that outlives Ctrl-C times this out.
    await wait_for(lambda: ports_bindable(base, 6), timeout=10, what="every demo port to be free after Ctrl-C")

    await again.start()
    assert (await again.line_with("Agent workflow id")).split()[-1] != workflow_id
    assert await again.interrupt() == 0


async def pending_child(client: Client, workflow_id: str) -> str | None:
    """The id of the approval child `workflow_id` waits on, once it has started."""
    children = (await client.get_workflow_handle(workflow_id).describe()).raw_description.pending_children
    return children[0].workflow_id if children else None


# What the binding message and the current details hold, and none of it may show signed out.
PLAINTEXT = ("Pay EUR 120.00 to IBAN DE02100100109307118603 of ACME GmbH", "ACME GmbH", "DE02100100109307118603")


async def user_metadata(page: Page) -> None:
    """The workflow page's User Metadata tab: the summary, the details and the current details."""
    await (
        page.get_by_role("link", name="User Metadata").or_(page.get_by_role("tab", name="User Metadata")).first.click()
    )
    await page.wait_for_url("**/user-metadata")


async def nothing_decoded(page: Page, workflow_page: str) -> None:
    """The workflow page, as the UI shows it when the codec server refuses: ciphertext only."""
    refused = page.locator("#content").get_by_text("Codec Server could not connect")
    await page.goto(workflow_page)
    await expect(refused).to_be_visible(timeout=30_000)
    await user_metadata(page)
    # What the tab shows once the UI has tried to decode them and could not.
    current_details = page.frame_locator("#user-metadata-current-details").locator("body")
    await expect(current_details).to_contain_text("No Current Details", timeout=30_000)
    await expect(page.locator("#content").get_by_text("No summary available")).to_be_visible()
    shown = await everything_shown(page)
    assert not [text for text in PLAINTEXT if text in shown]


async def the_ui_decodes_only_for_a_signed_in_operator(
    browser: Browser, base: int, approval_id: str, screenshot: Path
) -> None:
    """The demo's Temporal UI with its codec endpoint and credentials: signed out it shows no
    plaintext anywhere; after the sign-in (as alice, at the demo OP) the binding message in the
    input and the current details are decoded; signed out again, nothing."""
    ui, codec = f"http://localhost:{base + 1}", f"http://localhost:{base + 5}"
    workflow_page = f"{ui}/namespaces/default/workflows/{approval_id}"
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        await use_codec_with_credentials(page, ui, codec)
        await nothing_decoded(page, workflow_page)

        await page.goto(f"{codec}/login?{urlencode({'next': workflow_page})}")
        await page.locator('button[value="alice"]').click()  # the demo OP's sign-in page
        await page.wait_for_url(f"{workflow_page}/**", timeout=30_000)
        await expect(page.locator("main")).to_contain_text(PLAINTEXT[0], timeout=30_000)  # the input
        await user_metadata(page)
        details = page.frame_locator("#user-metadata-current-details").locator("body")
        await expect(details).to_contain_text("CIBA approval: pending", timeout=30_000)
        await expect(details).to_contain_text(PLAINTEXT[0])
        # docs/getting-started.md shows it (docs/temporal-ui-decoded.png): the page without the UI's menu.
        await page.screenshot(path=str(screenshot), clip={"x": 256, "y": 48, "width": 1024, "height": 852})
        assert screenshot.stat().st_size > 0

        await page.goto(codec + "/")
        await page.locator("#signout").click()
        await expect(page.locator("#status")).to_have_text("Signed out.")
        await nothing_decoded(page, workflow_page)
    finally:
        await context.close()


def test_demo_port_base_out_of_range() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "temporal_ciba_examples", "demo", "--port-base", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "--port-base 70000" in result.stderr and "Traceback" not in result.stderr


def test_demo_sh_checks_the_ports_before_the_set_up(tmp_path: Path) -> None:
    """A port in use is said at once, before the set-up (which needs Node.js: absent here, so a
    set-up that ran first would stop on that instead)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    (bin_dir / "dirname").symlink_to(shutil.which("dirname") or "/usr/bin/dirname")
    base = free_port_run()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 2))
        busy.listen()
        result = subprocess.run(
            ["/bin/bash", str(REPOSITORY / "scripts" / "demo.sh"), "--port-base", str(base)],
            env={"PATH": str(bin_dir), "HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (
        f"temporal-ciba-examples demo: ports in use (op {base + 2}): stop what uses them or pass --port-base\n"
    )


def test_the_set_up_installs_the_samples_without_setuptools_notices() -> None:
    """The editable install as scripts/setup.sh runs it prints no warning (setuptools' "Editable
    installation" notice is dozens of lines)."""
    exports = [
        line for line in (REPOSITORY / "scripts" / "setup.sh").read_text().splitlines() if "PYTHONWARNINGS" in line
    ]
    assert exports, "scripts/setup.sh sets no warnings filter"
    script = "\n".join(
        [
            *exports,
            f"{shlex.quote(sys.executable)} -m pip install --quiet --disable-pip-version-check --no-deps -e examples",
        ]
    )
    env = {name: value for name, value in os.environ.items() if name != "PYTHONWARNINGS"}
    result = subprocess.run(
        ["/bin/bash", "-c", script], cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Editable installation" not in result.stderr and "BuildBackendWarning" not in result.stderr, result.stderr
