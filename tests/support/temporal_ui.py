"""The Temporal Web UI in a browser (Playwright): its codec settings, a workflow's pages, and
everything a page shows, frames included.

The dev server's UI takes its codec endpoint from `--ui-codec-endpoint` but has no flag for
"include cross-origin credentials": the operator sets it in the UI's Codec Server dialog, which
keeps it in the browser's local storage.
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from playwright.async_api import Page


async def use_codec_with_credentials(page: Page, ui_url: str, codec_url: str) -> None:
    """What an operator does once in the UI's Codec Server dialog (the glasses icon at the top):
    "Use my browser setting and ignore Cluster-level setting", the endpoint, "Include
    cross-origin credentials", Apply. The UI keeps the three in the browser's local storage."""
    await page.goto(ui_url + "/namespaces/default/workflows")
    await page.locator('[data-testid^="data-encoder-status"]').first.click()
    await page.get_by_text("Use my browser setting and ignore Cluster-level setting.").click()
    await page.locator("#data-encoder-endpoint-input").fill(codec_url)
    # The checkbox itself is styled away; its label takes the click, as a person's would.
    await page.get_by_text("Include cross-origin credentials", exact=True).click()
    await page.get_by_role("button", name="Apply").click()
    keys = ["overrideRemoteCodecConfiguration", "endpoint", "includeCredentials"]
    kept = await page.evaluate("(keys) => keys.map((key) => localStorage.getItem(key))", keys)
    assert kept == ["true", json.dumps(codec_url), "true"], kept


async def everything_shown(page: Page) -> str:
    """All a page holds, for a search for plaintext: its HTML (attributes, such as a frame's URL,
    percent-decoded), the text of every shadow root and form field, and each frame's own."""
    deep = """() => {
        const found = [unescape(document.documentElement.outerHTML)];
        const walk = (root) => root.querySelectorAll('*').forEach((element) => {
            if (element.shadowRoot) { found.push(element.shadowRoot.innerHTML); walk(element.shadowRoot); }
            if (typeof element.value === 'string') found.push(element.value);
        });
        walk(document);
        return found.join('\\n');
    }"""
    parts = [await page.evaluate(deep)]
    for frame in page.frames:
        parts.append(unquote(frame.url))
        if frame is not page.main_frame:
            parts.append(await frame.evaluate("() => document.documentElement.outerHTML"))
    return "\n".join(parts)
