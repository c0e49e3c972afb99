"""The approver page in a real browser (Debian's Chromium).

The person sees what is asked and decides, and the agent's workflow follows."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect
from temporalio.client import Client

from temporal_ciba._models import ApprovalRequest
from temporal_ciba._settings import WorkerSettings
from temporal_ciba_examples.payment_agent.models import action_digest, short_code
from tests.support.browser import chromium
from tests.support.flows import INVOICE, approval_handle, pending_auth_req_id, start_agent, start_approval
from tests.support.op import TestOP


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as running:
        yield running


@pytest.fixture
async def page(browser: Browser, op: TestOP) -> AsyncIterator[Page]:
    page = await browser.new_page(viewport={"width": 600, "height": 900})
    await page.goto(op.issuer + "/approver")
    yield page
    await page.close()


async def test_approve_in_the_browser(
    page: Page, temporal_client: Client, ping_worker: WorkerSettings, payment_api: str, tmp_path: Path
) -> None:
    agent = await start_agent(temporal_client, ping_worker)
    auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, agent))
    card = page.locator(f'[data-auth-req-id="{auth_req_id}"]')
    await expect(card).to_be_visible(timeout=10_000)
    # What a person needs to judge: the message, the code, the amount and who gets paid.
    await expect(card.locator(".message")).to_have_text(
        f"Pay EUR 120.00 to IBAN DE02100100109307118603 of ACME GmbH, code {short_code(action_digest(INVOICE))}"
    )
    await expect(card.locator(".code")).to_have_text(short_code(action_digest(INVOICE)))
    # Shown generically, field by field: the page knows no payment fields.
    await expect(card.locator("dd.type")).to_have_text("payment_initiation")
    await expect(card.locator("dd.field", has_text="120.00")).to_have_count(1)
    await expect(card.locator("dd.field", has_text="EUR")).to_have_count(1)
    await expect(card).to_contain_text("ACME GmbH")
    await expect(card).to_contain_text(INVOICE.creditor_iban)
    await expect(card).to_contain_text(INVOICE.reference)
    screenshot = Path(os.environ.get("CIBA_TEST_SCREENSHOTS") or tmp_path) / "approver-page.png"
    await page.screenshot(path=str(screenshot))
    assert screenshot.stat().st_size > 0
    await card.locator("button.approve").click()
    await expect(card.locator(".decided")).to_have_text("Approved")
    result = await agent.result()
    assert result.outcome.status == "approved" and result.receipt is not None


async def test_deny_in_the_browser(page: Page, temporal_client: Client, ping_worker: WorkerSettings) -> None:
    agent = await start_agent(temporal_client, ping_worker)
    auth_req_id = await pending_auth_req_id(approval_handle(temporal_client, agent))
    card = page.locator(f'[data-auth-req-id="{auth_req_id}"]')
    await card.locator("button.deny").click()
    await expect(card.locator(".decided")).to_have_text("Denied")
    result = await agent.result()
    assert result.outcome.status == "denied" and result.receipt is None


async def test_markup_in_a_binding_message_is_shown_as_text(
    page: Page, temporal_client: Client, ping_worker: WorkerSettings
) -> None:
    message = '<img src=x onerror="document.title=1">Pay <b>now</b>'
    handle = await start_approval(
        temporal_client, ping_worker.task_queue, ApprovalRequest(login_hint="alice", binding_message=message)
    )
    auth_req_id = await pending_auth_req_id(handle)
    card = page.locator(f'[data-auth-req-id="{auth_req_id}"]')
    await expect(card.locator(".message")).to_have_text(message)
    assert await card.locator("img, b").count() == 0
    assert await page.title() != "1"
    await handle.cancel()


async def test_the_page_loads_without_a_missing_resource(browser: Browser, op: TestOP) -> None:
    """No 404 in the browser's console.

    The page declares its (empty) icon inline, so no /favicon.ico is requested."""
    page = await browser.new_page()
    failed: list[str] = []
    page.on("response", lambda response: failed.append(response.url) if response.status >= 400 else None)
    page.on("requestfailed", lambda request: failed.append(request.url))
    try:
        await page.goto(op.issuer + "/approver", wait_until="load")
        await expect(page.locator('link[rel="icon"]')).to_have_attribute("href", "data:,")
    finally:
        await page.close()
    assert failed == []
