"""HTTP client of one SGLang server (or router): JSON in, JSON out, bounded waits, bounded retries.

Only the standard library: requests are a few large JSON bodies, and a thread per in-flight request
(see ``SGLangEngine``) is plenty at the concurrency a rollout needs.
"""
from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from typing import Optional

from harness.rollout.base import RolloutError

# Errors after which the same request may succeed: the server is restarting, overloaded or the
# connection dropped. A 4xx is the caller's mistake and is never retried.
TRANSIENT = (ConnectionError, http.client.RemoteDisconnected, http.client.IncompleteRead,
             socket.timeout, TimeoutError, urllib.error.URLError)


class SGLangHTTPError(RolloutError):
    """The server answered with an error status; ``message`` is SGLang's own text."""

    def __init__(self, url: str, status: int, message: str):
        super().__init__(f"{url} answered {status}: {message}")
        self.url, self.status, self.message = url, status, message


class SGLangUnreachable(RolloutError):
    """The server did not answer (refused, reset, timed out) after the allowed retries."""


class SGLangClient:
    def __init__(self, url: str, timeout_s: float = 600.0, max_retries: int = 3, backoff_s: float = 0.5):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    def get(self, path: str, timeout_s: Optional[float] = None, retry: bool = True) -> dict:
        return self._request("GET", path, None, timeout_s, retry)

    def post(self, path: str, payload: Optional[dict] = None, timeout_s: Optional[float] = None,
             retry: bool = False) -> dict:
        """``retry`` only for idempotent requests (generation is; a weight update is not)."""
        return self._request("POST", path, payload or {}, timeout_s, retry)

    def _request(self, method, path, payload, timeout_s, retry) -> dict:
        attempts = 1 + (self.max_retries if retry else 0)
        last_error = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                return self._once(method, path, payload, timeout_s or self.timeout_s)
            except SGLangHTTPError as error:
                if error.status < 500:
                    raise
                last_error = error
            except TRANSIENT as error:
                last_error = error
        raise SGLangUnreachable(f"{method} {self.url}{path} failed after {attempts} attempt(s): "
                                f"{type(last_error).__name__}: {last_error}")

    def _once(self, method, path, payload, timeout_s) -> dict:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise SGLangHTTPError(self.url + path, error.code, _error_text(error.read())) from None
        if not body:
            return {}
        try:
            return json.loads(body)
        except json.JSONDecodeError:
            return {"text": body.decode(errors="replace")}

    def ok(self, path: str, payload: Optional[dict] = None, timeout_s: Optional[float] = None) -> dict:
        """POST and require success: SGLang reports some failures as 200 with ``success: false``."""
        answer = self.post(path, payload, timeout_s)
        if isinstance(answer, dict) and answer.get("success") is False:
            raise SGLangHTTPError(self.url + path, 200, str(answer.get("message", answer)))
        return answer


def _error_text(body: bytes) -> str:
    text = body.decode(errors="replace")
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()[:2000]
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, dict):
            return str(error.get("message", error))
        return str(parsed.get("message", error))
    return str(parsed)
