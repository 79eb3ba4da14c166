"""A remote HTTP reward service: POST ``{"items": [...]}`` -> ``{"scores": [...]}``, stdlib only.

Every wait is bounded: one request takes at most about ``timeout_s`` (connect, and the whole reply
read against a deadline), and only connection errors and 5xx replies are retried, ``max_retries``
times with a short backoff. A timed-out request is not retried: the service may still be working on
it, and retrying would multiply the bound.
"""
from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.request
from typing import Any

_BACKOFF_S = 0.2  # doubled per retry
_READ_BYTES = 1 << 16


class RemoteRewardError(RuntimeError):
    """A request that got no usable scores; the message names the url and the problem."""


class _Retryable(Exception):
    """A connection error or a 5xx reply: worth another try."""


def post_scores(url: str, items: list[dict], timeout_s: float, max_retries: int) -> list[float]:
    """One score per item from the service at ``url``, or ``RemoteRewardError``."""
    body = json.dumps({"items": items}, default=_jsonable).encode()
    for attempt in range(max_retries + 1):
        try:
            reply = _post(url, body, timeout_s)
            break
        except _Retryable as error:
            if attempt == max_retries:
                raise RemoteRewardError(f"{url}: unreachable after {attempt + 1} tries: {error}") from None
            time.sleep(_BACKOFF_S * 2 ** attempt)
    return _parse(url, reply, len(items))


def _post(url: str, body: bytes, timeout_s: float) -> bytes:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
    deadline = time.monotonic() + timeout_s
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return _read_until(url, response, deadline, timeout_s)
    except urllib.error.HTTPError as error:  # before URLError: it is one
        error.close()
        if error.code >= 500:
            raise _Retryable(f"HTTP {error.code} {error.reason}") from None
        raise RemoteRewardError(f"{url}: HTTP {error.code} {error.reason}") from None
    except TimeoutError:
        raise RemoteRewardError(f"{url}: no reply within {float(timeout_s)} s") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise RemoteRewardError(f"{url}: no connection within {float(timeout_s)} s") from None
        raise _Retryable(str(error.reason)) from None
    except ConnectionError as error:  # reset or closed mid-reply
        raise _Retryable(f"{type(error).__name__}: {error}") from None


def _read_until(url: str, response, deadline: float, timeout_s: float) -> bytes:
    """The reply body; the socket timeout bounds each read, the deadline the whole (a trickling server)."""
    parts = []
    while part := response.read(_READ_BYTES):
        parts.append(part)
        if time.monotonic() > deadline:
            raise RemoteRewardError(f"{url}: reply not complete within {float(timeout_s)} s")
    return b"".join(parts)


def _parse(url: str, raw: bytes, n_items: int) -> list[float]:
    try:
        reply = json.loads(raw)
    except ValueError:
        raise RemoteRewardError(f"{url}: reply is not JSON: {raw[:80]!r}") from None
    scores = reply.get("scores") if isinstance(reply, dict) else None
    if not isinstance(scores, list):
        raise RemoteRewardError(f"{url}: reply has no 'scores' list: {raw[:80]!r}")
    if len(scores) != n_items:
        raise RemoteRewardError(f"{url}: reply has {len(scores)} scores for {n_items} items")
    for position, value in enumerate(scores):
        # bool is an int in Python, but true/false from a service is a bug, not a score
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise RemoteRewardError(f"{url}: score {position} is {value!r}, not a finite number")
    return [float(value) for value in scores]


def _jsonable(value: Any) -> Any:
    """extra_info read from parquet holds numpy arrays and scalars, which json cannot write."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
