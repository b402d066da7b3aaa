"""Request bodies of the realtime routes: their models, and the limits applied before any parsing.

A body is read at most `limit` bytes far and refused (413) beyond it, JSON nesting is bounded (400) before the
parser recurses into it, and a validation failure never echoes the input back (FastAPI's 422 would, API key
included).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, SecretStr, ValidationError
from starlette.requests import ClientDisconnect

from workbench.realtime.openai_config import RealtimeConfig

# Request bodies are read up to these sizes and refused (413) beyond them, before any parsing:
# an offer is an SDP (at most 200,000 characters, see OfferRequest) plus a few settings.
OFFER_BODY_LIMIT = 256 * 1024  # bytes
TEXT_BODY_LIMIT = 16 * 1024  # bytes; a typed message is at most 4,000 characters
MAX_JSON_DEPTH = 16  # our bodies nest 3 deep; deeper JSON is refused before the parser recurses into it


class BodyError(Exception):
    """A request body refused before or while parsing it: too large (413) or not acceptable JSON (400/422)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in `text` (brackets inside strings do not count); no recursion."""
    depth = deepest = 0
    for ch in _NOT_BRACKET.sub("", _JSON_STRING.sub('""', text)):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


async def read_json(request: Request, limit: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The request's JSON body, read at most `limit` bytes far: a larger body is refused (413) before it is
    parsed or held in full, and JSON nested deeper than `max_depth` is refused (400) before the parser runs."""
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind and kind != "application/json" and not kind.endswith("+json"):
        # text/plain and form bodies are what another site's page can post here without asking (CORS)
        raise BodyError(415, "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyError(413, f"request body too large ({int(declared)} bytes; the limit is {limit})")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise BodyError(413, f"request body too large (over {limit} bytes)")
    except ClientDisconnect:
        # the client went away mid-body: nobody to answer, and nothing for the server log to trace
        raise BodyError(400, "the client disconnected while sending the body") from None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(400, "the request body is not UTF-8 JSON") from None
    if json_depth(text) > max_depth:
        raise BodyError(400, f"the JSON body nests deeper than {max_depth} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise BodyError(400, "the request body is not valid JSON") from None


def parse_body(model: type[BaseModel], data: Any) -> Any:
    """Validate without echoing the input back (FastAPI's 422 would, API key included)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        detail = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors(include_input=False)]
        raise HTTPException(422, detail) from None


def body_error_response(exc: BodyError) -> JSONResponse:
    return JSONResponse({"detail": exc.message}, status_code=exc.status)


class OfferRequest(BaseModel):
    sdp: str = Field(max_length=200_000)
    type: Literal["offer"] = "offer"
    avatar_id: str | None = Field(default=None, max_length=200)  # only with open_avatars
    grant: str | None = Field(default=None, max_length=100)  # a token from RealtimeManager.grant
    ticket: str | None = Field(default=None, max_length=100)  # a place in the waiting line, from a busy answer
    mode: Literal["echo", "faq", "openai"] = "echo"
    api_key: SecretStr | None = None  # the user's own key; held by the session, never echoed
    realtime: RealtimeConfig | None = None


class TextRequest(BaseModel):
    text: str = Field(max_length=4000)
