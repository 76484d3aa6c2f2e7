"""HTTP request parsing and error bodies for the editing API.

Every user mistake becomes an :class:`ApiError`, answered as ``{"error": {"code": ..., "message": ...}}``
with a 4xx status; only a bug may produce a 500. Bodies are read through a byte cap enforced while
streaming (and up front from ``Content-Length``), so an oversized upload is refused before it is held whole.
An image arrives either as a multipart file field ``image`` (other fields as form values, ``edits`` and
``keep`` JSON-encoded) or as a JSON body with the image base64-encoded under ``"image"``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from serve.images import (MAX_BYTES, MAX_PIXELS, BadImage, base64_limit, decode_base64_image, decode_image,
                          read_limited)

_INTEGER = re.compile(r"-?[0-9]{1,30}")


class ApiError(Exception):
    """A request the API refuses: HTTP ``status`` (4xx, or 503 when a model replica is unavailable)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.message)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def bad_image_error(exc: BadImage) -> ApiError:
    return ApiError(getattr(exc, "status", 400), exc.code, str(exc))


@dataclass
class ParsedRequest:
    """fields: the request's parameters (JSON values); image: the uploaded file's bytes (multipart) or the
    base64 text (JSON), None if absent."""

    fields: dict[str, Any]
    image: bytes | str | None


async def parse_request(request: Request, max_bytes: int = MAX_BYTES) -> ParsedRequest:
    """Read a JSON or multipart body under the size cap; malformed bodies are ApiErrors."""
    try:
        body = await read_limited(request, base64_limit(max_bytes))  # room for base64 or multipart framing
    except BadImage as exc:
        raise bad_image_error(exc) from None
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        return await _parse_multipart(request, body)
    if not body:
        raise ApiError(400, "empty_body", "the request body is empty: send JSON or a multipart form")
    try:
        fields = json.loads(body)
    except (ValueError, RecursionError) as exc:  # + numbers over Python's 4300 digits, nesting past the stack
        raise ApiError(400, "bad_json", f"the body is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(fields, dict):
        raise ApiError(400, "bad_json", "the JSON body must be an object")
    image = fields.pop("image", None)
    if image is not None and not isinstance(image, str):
        raise ApiError(400, "bad_field", "'image' must be a base64 string")
    return ParsedRequest(fields=fields, image=image)


async def _parse_multipart(request: Request, body: bytes) -> ParsedRequest:
    request._body = body  # Starlette re-reads a cached body: the form parser sees the capped bytes
    try:
        form = await request.form()
    except Exception as exc:  # the multipart parser raises several types for malformed framing
        raise ApiError(400, "bad_multipart", f"malformed multipart body ({exc})") from None
    fields: dict[str, Any] = {}
    image: bytes | None = None
    for key, value in form.multi_items():
        if hasattr(value, "read"):  # an uploaded file
            if key != "image":
                raise ApiError(400, "bad_field", f"unexpected file field {key!r}; send the photo as 'image'")
            image = await value.read()
        elif key in ("edits", "keep", "range", "attributes"):
            try:
                fields[key] = json.loads(value)
            except (ValueError, RecursionError):
                raise ApiError(400, "bad_json", f"form field {key!r} must be JSON, got {value[:80]!r}") from None
        else:
            fields[key] = value
    return ParsedRequest(fields=fields, image=image)


def image_from(parsed: ParsedRequest, resolution: int, crop, max_bytes: int = MAX_BYTES,
               max_pixels: int = MAX_PIXELS, frame=None):
    """The request's image as a model input (3, R, R) in [-1, 1], its face aligned to ``frame`` (a
    ``facegen.align.Frame``) when one is given; a missing or bad image (no face included) is an ApiError."""
    if parsed.image is None:
        raise ApiError(400, "missing_image", "no image: send a file field 'image' or a JSON 'image' (base64)")
    limits = {"max_bytes": max_bytes, "max_pixels": max_pixels, "frame": frame}
    try:
        if isinstance(parsed.image, str):
            return decode_base64_image(parsed.image, resolution, crop, **limits)
        return decode_image(parsed.image, resolution, crop, **limits)
    except BadImage as exc:
        raise bad_image_error(exc) from None


# --- typed field readers: each names the field and what it needed ---

def get_str(fields: dict, key: str, default: str | None = None, choices: tuple[str, ...] | None = None) -> str:
    value = fields.get(key, default)
    if not isinstance(value, str):
        raise ApiError(400, "bad_field", f"{key!r} must be a string")
    if choices is not None and value not in choices:
        raise ApiError(400, "bad_field", f"{key!r} must be one of {', '.join(choices)}; got {value!r}")
    return value


def get_bool(fields: dict, key: str, default: bool) -> bool:
    """A JSON boolean, or a form value "true"/"false" (also 1/0, yes/no, on/off)."""
    value = fields.get(key, default)
    if isinstance(value, str) and value.strip().lower() in _BOOLEANS:
        value = _BOOLEANS[value.strip().lower()]
    if not isinstance(value, bool):
        raise ApiError(400, "bad_field", f"{key!r} must be true or false, got {_short(value)}")
    return value


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}


def get_int(fields: dict, key: str, default: int | None, lo: int, hi: int) -> int:
    value = fields.get(key, default)
    if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):  # ASCII only: "²".isdigit() but int() fails
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, "bad_field", f"{key!r} must be an integer")
    if not lo <= value <= hi:
        raise ApiError(400, "out_of_range", f"{key!r} must be in {lo}..{hi}; got {value}")
    return value


def get_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ApiError(400, "bad_field", f"{what} must be a number, got {_short(value)}")
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: a JSON integer beyond a float's range
        raise ApiError(400, "bad_field", f"{what} must be a finite number, got {_short(value)}") from None
    if not math.isfinite(number):
        raise ApiError(400, "bad_field", f"{what} must be a finite number, got {_short(value)}")
    return number


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def get_number_map(fields: dict, key: str) -> dict[str, float]:
    value = fields.get(key, {})
    if not isinstance(value, dict):
        raise ApiError(400, "bad_field", f"{key!r} must be an object of name: number")
    return {str(name): get_float(v, f"{key}[{name!r}]") for name, v in value.items()}


def get_str_list(fields: dict, key: str) -> list[str]:
    value = fields.get(key, [])
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, "bad_field", f"{key!r} must be a list of attribute names")
    return value
