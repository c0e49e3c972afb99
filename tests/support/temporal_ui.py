"""The Temporal Web UI in a browser (Playwright): its codec settings, a workflow's pages, and
everything a page shows, frames included.

The dev server's UI takes its codec endpoint from `--ui-codec-endpoint` but has no flag for
"include cross-origin credentials": the UI keeps that choice in the browser's local storage, as
its Codec Server dialog does when the operator checks "Use my browser setting and ignore
Cluster-level setting", enters the endpoint and checks "Include cross-origin credentials".
"""

from __future__ import annotations

import json
from urllib.parse import unquote

from playwright.async_api import Page

# The UI's local storage keys (its persisted stores): the dialog's three fields.
CODEC_SETTINGS = ("overrideRemoteCodecConfiguration", "endpoint", "includeCredentials")


async def use_codec_with_credentials(page: Page, ui_url: str, codec_url: str) -> None:
    """What the UI's Codec Server dialog saves: this endpoint, with cross-origin credentials."""
    await page.goto(ui_url + "/")
    values = {"overrideRemoteCodecConfiguration": True, "endpoint": codec_url, "includeCredentials": True}
    await page.evaluate(
        "(values) => { for (const [name, value] of Object.entries(values)) localStorage.setItem(name, value); }",
        {name: json.dumps(value) for name, value in values.items()},
    )


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
