"""A browser's sign-in to the codec server at an OP whose sign-in page offers its accounts
(examples/demo/op), played with httpx: the redirects, the cookies and the account's button."""

from __future__ import annotations

import re

import httpx


async def sign_in(http: httpx.AsyncClient, codec_url: str, account: str) -> httpx.Response:
    """GET /login, pick `account` on the OP's page; the response of the codec server's /callback.

    `http` keeps the cookies (the codec server's and the OP's) and follows no redirects itself:
    each hop is followed here, so the last one (the callback's answer) is returned as it is."""
    response = await http.get(codec_url + "/login")
    while response.status_code in (302, 303) and "/callback" not in str(response.url):
        response = await http.get(response.url.join(response.headers["location"]))
    if response.status_code == 200 and "/interaction/" in str(response.url):
        action = re.search(r'action="([^"]+)"', response.text)
        assert action is not None, response.text
        response = await http.post(response.url.join(action.group(1)), data={"account": account})
        while response.status_code in (302, 303) and "/callback" not in str(response.url):
            response = await http.get(response.url.join(response.headers["location"]))
    return response
