"""``facegen edit``: send a photo to the editing service, write the edited face.

    facegen edit photo.jpg --set Smiling=1.5 --set Eyeglasses=-1 --keep Male -o out.png --scores

Standard library only (no Ray, no torch imported), so it runs anywhere Python does. It posts
``{"image": base64, "edits": {name: strength}, "keep": [...], "method": ...}`` as JSON to ``URL/v1/edit``
and writes the returned PNG atomically. A 503 (a model replica lost: the service answers it while Serve
replaces the replica) or a dropped connection is retried with backoff within ``--timeout``. Anything that goes
wrong (no server, a refused request, an unreadable file) is a :class:`FacegenError`: one ``error: ...`` line
and exit status 2.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import http.client
import json
import math
import os
import socket
import struct
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from facegen.errors import FacegenError

DEFAULT_URL = "http://127.0.0.1:8000"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RETRY_STATUSES = frozenset({502, 503, 504})  # "not now": a replica lost, the service overloaded, a gateway
RETRIES = 3
BACKOFF_S = 0.5
MAX_BACKOFF_S = 5.0  # a long Retry-After is cut to this (the timeout still bounds the whole call)


def parse_edit(text: str) -> tuple[str, float]:
    """``"Smiling=1.5"`` -> ``("Smiling", 1.5)``; anything else is a FacegenError naming ``--set``."""
    name, sep, value = text.partition("=")
    try:
        strength = float(value)
    except ValueError:
        strength = math.nan
    if not sep or not name.strip() or not math.isfinite(strength):
        raise FacegenError(f"--set {text!r}: expected NAME=NUMBER, e.g. --set Smiling=1.5")
    return name.strip(), strength


def build_request(image: bytes, edits: dict[str, float], keep: list[str], method: str | None,
                  align: bool | None = None, residual: bool = False) -> dict:
    """The JSON body of ``POST /v1/edit`` (``method`` and ``align`` left out when None: the server's default;
    ``align=False`` sends a face already framed like the model's training faces as it is; ``residual`` asks for
    the photo's own pixels plus what the edit changed)."""
    body = {"image": base64.b64encode(image).decode("ascii"), "edits": edits, "keep": keep}
    if method:
        body["method"] = method
    if align is not None:
        body["align"] = align
    if residual:
        body["residual"] = True
    return body


def _server_error(exc: urllib.error.HTTPError) -> str:
    """One line from an HTTP error: our ``{"error": {code, message}}``, FastAPI's ``{"detail": ...}``, or
    the first line of whatever else came back."""
    raw = exc.read(64 * 1024).decode("utf-8", "replace")
    try:
        body = json.loads(raw)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        return f"{error.get('message', raw)} ({error.get('code', 'error')}, HTTP {exc.code})"
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}, ...]
            detail = "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}"
                               for d in detail if isinstance(d, dict))
        return f"{detail} (HTTP {exc.code})"
    first = raw.strip().splitlines()[0][:200] if raw.strip() else exc.reason
    return f"HTTP {exc.code}: {first}"


class _Retryable(Exception):
    """One attempt's failure that another attempt may not meet: ``message`` is the one line to report if none
    is left, ``reason`` a short name for it, ``delay_s`` the server's ``Retry-After`` when it gave one."""

    def __init__(self, message: str, reason: str, delay_s: float | None = None) -> None:
        super().__init__(message)
        self.message, self.reason, self.delay_s = message, reason, delay_s


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    try:
        return max(0.0, float(exc.headers.get("Retry-After", "")))
    except (TypeError, ValueError):  # absent, or an HTTP date (not worth parsing for a bounded wait)
        return None


def _attempt(url: str, data: bytes, timeout: float) -> bytes:
    """One POST; the raw answer, a FacegenError, or a _Retryable for a 502/503/504 or a lost connection."""
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        message = f"{url}: {_server_error(exc)}"
        if exc.code in RETRY_STATUSES:
            raise _Retryable(message, f"HTTP {exc.code}", _retry_after(exc)) from None
        raise FacegenError(message) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):  # connecting took the whole remaining time
            raise TimeoutError from None
        reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
        message = f"cannot reach {url} ({reason}); is the facegen server running?"
        if isinstance(exc.reason, ConnectionError):  # refused or reset: a proxy or node may be restarting
            raise _Retryable(message, type(exc.reason).__name__) from None
        raise FacegenError(message) from None
    except (ConnectionError, http.client.HTTPException) as exc:  # reset, closed mid-answer
        raise _Retryable(f"{url}: connection failed ({type(exc).__name__}: {exc})", type(exc).__name__) from None


def post_json(url: str, body: dict, timeout: float, retries: int = RETRIES,
              on_retry: Callable[[str], None] | None = None) -> dict:
    """POST ``body`` as JSON, return the parsed JSON answer; every failure is a one-line FacegenError.

    ``timeout`` bounds the whole call, retries included. A 502/503/504 (a replica lost or the service
    overloaded: the app answers 503 then) or a refused/reset connection is retried up to ``retries`` times
    after 0.5, 1, 2 s (or the server's ``Retry-After``), never past the timeout. Only for idempotent routes:
    every facegen route is one (an answer is a function of the request). ``on_retry(reason)`` is told of each
    retry (the load benchmarks count them)."""
    data = json.dumps(body).encode()
    deadline = time.monotonic() + timeout
    for attempt in range(retries + 1):
        try:
            raw = _attempt(url, data, max(0.001, deadline - time.monotonic()))
            break
        except (TimeoutError, socket.timeout):
            raise FacegenError(f"{url}: no answer within {timeout:g} s (--timeout)") from None
        except _Retryable as exc:
            pause = min(exc.delay_s if exc.delay_s is not None else BACKOFF_S * 2 ** attempt, MAX_BACKOFF_S)
            if attempt == retries or time.monotonic() + pause >= deadline:
                tries = f" (after {attempt + 1} attempts)" if attempt else ""
                raise FacegenError(exc.message + tries) from None
            if on_retry is not None:
                on_retry(exc.reason)
            time.sleep(pause)
    try:
        answer = json.loads(raw)
    except ValueError:
        raise FacegenError(f"{url}: the answer is not JSON ({raw[:80]!r})") from None
    if not isinstance(answer, dict):
        raise FacegenError(f"{url}: expected a JSON object, got {type(answer).__name__}")
    return answer


def png_from_answer(answer: dict, field: str, url: str) -> bytes:
    """Decode the base64 PNG in ``answer[field]``, checking it really is a PNG."""
    try:
        png = base64.b64decode(answer[field], validate=True)
    except (KeyError, TypeError, binascii.Error, ValueError):
        raise FacegenError(f"{url}: the answer has no valid base64 {field!r}") from None
    if not png.startswith(PNG_SIGNATURE) or len(png) < 24:
        raise FacegenError(f"{url}: {field!r} is not a PNG image")
    return png


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk that follows the PNG signature."""
    return struct.unpack(">II", png[16:24])


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise FacegenError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise FacegenError(f"{path}: cannot write ({exc.strerror or exc})") from None


def _score(scores: dict, name: str) -> str:
    value = scores.get(name) if isinstance(scores, dict) else None
    return f"{value:.2f}" if isinstance(value, (int, float)) else "n/a"


def summary(out: Path, png: bytes, edits: dict[str, float], answer: dict) -> str:
    """``wrote out.png (64x64, model vae_celeba64, mean_diff): Smiling 0.12 -> 0.93, Eyeglasses 0.80 -> 0.10``
    (target attributes' classifier scores before -> after; ``n/a`` where the server has no classifier)."""
    before, after = answer.get("scores_before"), answer.get("scores_after")
    changes = ", ".join(f"{name} {_score(before, name)} -> {_score(after, name)}" for name in edits)
    width, height = png_size(png)
    details = [f"{width}x{height}"]
    if isinstance(answer.get("model"), str):
        details.append(f"model {answer['model']}")
    if isinstance(answer.get("method"), str):
        details.append(answer["method"] + (" + residual" if answer.get("residual") else ""))
    return f"wrote {out} ({', '.join(details)}): {changes or 'no edits'}"


def score_table(answer: dict) -> str:
    """Every classifier attribute's score before and after, one per line."""
    before, after = answer.get("scores_before") or {}, answer.get("scores_after") or {}
    names = sorted(set(before) | set(after))
    width = max((len(n) for n in names), default=9)
    lines = [f"{'attribute':<{width}}  before  after"]
    lines += [f"{n:<{width}}  {_score(before, n):>6}  {_score(after, n):>5}" for n in names]
    return "\n".join(lines)


def add_edit_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="the photo to edit (JPEG, PNG, WebP, BMP or GIF)")
    parser.add_argument("--set", dest="edits", action="append", default=[], metavar="NAME=STRENGTH",
                        help="move attribute NAME by STRENGTH (repeatable), e.g. --set Smiling=1.5")
    parser.add_argument("--keep", action="append", default=[], metavar="NAME",
                        help="attribute to hold fixed while editing (repeatable)")
    parser.add_argument("--method", default=None,
                        help="edit method: guided (when the service has a guide), mean_diff, boundary or conditional "
                             "(default: the service's, the first of GET /v1/attributes' methods)")
    parser.add_argument("--no-align", dest="align", action="store_false", default=None,
                        help="send the photo as it is framed (its centre square), without the server's face "
                             "detection and alignment; for faces already cropped like the model's training faces")
    parser.add_argument("--residual", action="store_true",
                        help="keep the photo's own pixels and add only what the edit changed in the model's "
                             "decode (sharper, and the face stays the same person; the edit itself is as the "
                             "model draws it)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the editing service (default {DEFAULT_URL})")
    parser.add_argument("-o", "--out", type=Path, default=None,
                        help="where to write the edited PNG (default: IMAGE's name + '-edited.png', here)")
    parser.add_argument("--scores", action="store_true", help="also print every classifier score before/after")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="seconds to wait in all, retries included (default 120)")


def run_edit(args: argparse.Namespace) -> int:
    edits: dict[str, float] = {}
    for text in args.edits:
        name, strength = parse_edit(text)
        if name in edits:
            raise FacegenError(f"--set {name}: given twice")
        edits[name] = strength
    if not edits:  # the service refuses an empty edit; say so before uploading anything
        raise FacegenError("nothing to edit: give at least one --set NAME=STRENGTH, e.g. --set Smiling=1.5")
    if not args.timeout > 0:
        raise FacegenError(f"--timeout {args.timeout:g}: must be a positive number of seconds")
    if not args.url.startswith(("http://", "https://")):
        raise FacegenError(f"--url {args.url!r}: expected http://HOST:PORT")
    try:
        image = args.image.read_bytes()
    except OSError as exc:
        raise FacegenError(f"{args.image}: cannot read ({exc.strerror or exc})") from None
    url = args.url.rstrip("/") + "/v1/edit"
    answer = post_json(url, build_request(image, edits, list(args.keep), args.method, args.align, args.residual),
                       args.timeout)
    png = png_from_answer(answer, "image", url)
    out = args.out or Path(f"{args.image.stem}-edited.png")
    write_atomic(out, png)
    print(summary(out, png, edits, answer))
    if args.scores:
        print(score_table(answer))
    return 0
