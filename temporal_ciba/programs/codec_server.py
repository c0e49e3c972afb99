"""A remote codec server, so the Temporal UI and CLI can show payloads to an operator who holds
the key (Temporal's remote codec protocol: POST /encode and /decode with `{"payloads": [...]}`).

    temporal-ciba codec-server     (CIBA_PAYLOAD_KEY, CIBA_CODEC_*; point the UI's codec endpoint here)

Run it where the operator is (it listens on loopback by default): the UI calls it from the
operator's browser, so it must allow the UI's origin (CORS). Tokens stay sealed even in
decoded payloads (temporal_ciba.crypto.sealing); only the activities open them.
"""

from __future__ import annotations

from google.protobuf import json_format
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

from temporal_ciba.crypto.codec import PayloadDecryptionError

MAX_BODY_BYTES = 4 * 1024 * 1024


def create_codec_app(codec: PayloadCodec, *, cors_origins: list[str]) -> Starlette:
    async def convert(request: Request, decode: bool) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return JSONResponse({"error": "body too large"}, status_code=413)
        payloads = Payloads()
        try:
            json_format.Parse(body, payloads)
        except (json_format.ParseError, UnicodeDecodeError):
            return JSONResponse({"error": 'the body must be {"payloads": [...]} in protobuf JSON'}, status_code=400)
        try:
            converted = await (codec.decode if decode else codec.encode)(payloads.payloads)
        except PayloadDecryptionError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(json_format.MessageToDict(Payloads(payloads=converted)))

    async def decode(request: Request) -> Response:
        return await convert(request, decode=True)

    async def encode(request: Request) -> Response:
        return await convert(request, decode=False)

    return Starlette(
        routes=[Route("/decode", decode, methods=["POST"]), Route("/encode", encode, methods=["POST"])],
        middleware=[
            Middleware(
                CORSMiddleware,
                allow_origins=cors_origins,
                allow_methods=["POST"],
                allow_headers=["content-type", "x-namespace", "authorization"],
                allow_credentials=True,
            )
        ],
    )
