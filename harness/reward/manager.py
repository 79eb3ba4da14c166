"""The RL trainer's reward computation: every sample scored, bounded in time, failures counted.

Three ways to score, picked by the config (verl's keys):

* ``reward_model.url`` set: a remote HTTP service (``harness.reward.remote``), chunks of 256 items.
* ``reward_model.num_workers > 0`` (the default): scorers run in that many worker processes, started
  once ("spawn": the trainer is multi-threaded, so no fork) and reused. Items go out in chunks; a
  worker sends each result back as it finishes, so each sample is held to ``reward_model.timeout_s``:
  a worker that runs over is killed by its pid and replaced, and the chunk's unscored rest is sent
  again. A worker that dies fails the sample it was on, the same way.
* ``reward_model.num_workers == 0``: scorers run inline in the calling process: exceptions are
  caught and counted, but nothing bounds a scorer that hangs (no timeout is possible).

The scorer is ``custom_reward_function.path``/``.name`` when a path is given, else the rule scorer of
each item's ``data_source`` (``harness.reward.rule_scorers``). Worker processes see the scorers that
importing ``rule_scorers`` registers, not ones registered at run time in the trainer process.

A failed sample scores 0.0, is logged and is counted in ``RewardResult.metrics()``; scoring goes on.
"""
from __future__ import annotations

import importlib
import importlib.util
import logging
import math
import multiprocessing
import numbers
import os
import signal
import sys
import threading
import time
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence

from harness.reward.remote import RemoteRewardError, post_scores
from harness.reward.rule_scorers import get_scorer

if TYPE_CHECKING:  # the config module imports omegaconf; workers import this module, keep it light
    from harness.config.rl import CustomRewardFunctionConfig, RewardModelConfig

logger = logging.getLogger(__name__)

_START_TIMEOUT_S = 120.0  # a worker re-imports the trainer's __main__ module under spawn: seconds with torch
_STOP_TIMEOUT_S = 2.0  # a polite stop, before the kill
_MAX_CHUNK = 64  # items per worker message: large enough to amortise IPC, small enough to balance load
_REMOTE_CHUNK = 256  # items per HTTP request
_REMOTE_THREADS = 4  # requests in flight at once
_LOGGED_FAILURES = 5  # failure lines logged per call; the rest are counted

# (score, None) or (0.0, "ExceptionType: message")
Outcome = tuple[float, Optional[str]]
CustomSpec = Optional[tuple[str, str]]  # (custom_reward_function.path, .name)


@dataclass
class RewardItem:
    data_source: str
    solution_str: str
    ground_truth: str
    extra_info: dict | None = None


@dataclass
class RewardResult:
    scores: list[float]  # one per item; a failed item scores 0.0
    failed: list[bool]
    errors: list[str] = field(default_factory=list)  # one line per failed item
    timed_out: int = 0

    def metrics(self) -> dict:
        n_failed = sum(self.failed)
        return {"reward/failed": n_failed, "reward/timed_out": self.timed_out,
                "reward/failed_fraction": n_failed / len(self.failed) if self.failed else 0.0}


def load_custom_scorer(path: str, name: str) -> Callable[..., Any]:
    """The function ``name`` of ``path`` (a .py file or a module name); ValueError naming the key."""
    key = f"custom_reward_function.path={path!r}"
    if _is_file_path(path):
        if not os.path.isfile(path):
            raise ValueError(f"{key}: no such file")
        module_name = "custom_reward_" + os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # dataclasses and pickle look modules up there
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            del sys.modules[module_name]
            raise ValueError(f"{key}: loading the file raised {_describe(error)}") from error
    else:
        try:
            module = importlib.import_module(path)
        except Exception as error:
            raise ValueError(f"{key}: cannot import the module: {_describe(error)}") from error
    function = getattr(module, name, None)
    if not callable(function):
        defined = sorted(attr for attr, value in vars(module).items()
                         if callable(value) and not attr.startswith("_"))
        what = "is not a function" if hasattr(module, name) else "is not defined"
        raise ValueError(f"custom_reward_function.name={name!r}: {what} in {path} "
                         f"(its functions: {', '.join(defined) or 'none'})")
    return function


def _is_file_path(path: str) -> bool:
    return path.endswith(".py") or os.sep in path


def _describe(error: BaseException) -> str:
    """One readable line: "ExceptionType: message"."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__


def _score_one(custom: Callable[..., Any] | None, item: RewardItem) -> Outcome:
    """Score one item, turning every failure into a message (also used inline)."""
    try:
        scorer = custom or get_scorer(item.data_source)
        result = scorer(item.data_source, item.solution_str, item.ground_truth, item.extra_info)
        value = result["score"] if isinstance(result, dict) and "score" in result else result
        if hasattr(value, "item") and not isinstance(value, numbers.Real):  # a 0-d tensor or array
            value = value.item()
    except Exception as error:
        return 0.0, _describe(error)
    if not isinstance(value, numbers.Real) or not math.isfinite(value):
        return 0.0, f"scorer returned {repr(result)[:100]}, not a finite number"
    return float(value), None


def _worker_main(conn: Connection, custom_spec: CustomSpec) -> None:
    """A scorer process: load the scorer, then score chunks, sending each result as it finishes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the process group; the trainer stops us
    try:
        custom = load_custom_scorer(*custom_spec) if custom_spec else None
    except ValueError as error:
        conn.send(("load_error", str(error)))
        return
    conn.send(("ready", None))
    while True:
        try:
            chunk = conn.recv()
        except EOFError:  # the trainer is gone
            return
        if chunk is None:
            return
        for index, item in chunk:
            conn.send((index, *_score_one(custom, item)))


class _Worker:
    """One scorer process and its pipe; ``todo`` holds the indices it has been sent and not answered."""

    def __init__(self, context: multiprocessing.context.BaseContext, custom_spec: CustomSpec):
        self.conn, child_conn = context.Pipe()
        # Not a daemon: a scorer may start processes of its own, which daemons may not.
        self.process = context.Process(target=_worker_main, args=(child_conn, custom_spec),
                                       name="reward-scorer")
        self.process.start()
        child_conn.close()  # only the child holds it now: the child sees EOF if we die
        self.ready = False
        self.todo: deque[int] = deque()
        self.since = time.monotonic()  # start of the current wait: the start-up, or the item in hand

    def kill(self) -> None:
        """SIGKILL by its own pid (a hung scorer ignores everything else), then reap it."""
        if self.process.exitcode is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.join(_STOP_TIMEOUT_S)

    def stop(self, deadline: float) -> None:
        """Let it exit by ``deadline`` (``_stop_all`` asked it to), kill it if it has not, close the pipe."""
        self.process.join(max(0.0, deadline - time.monotonic()))
        self.kill()
        self.conn.close()


def _stop_all(workers: list[_Worker]) -> None:
    """Stop every worker process, within about ``_STOP_TIMEOUT_S`` for them all."""
    for worker in workers:  # ask all first, so that they exit together
        try:
            worker.conn.send(None)
        except OSError:  # already gone
            pass
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    for worker in workers:
        worker.stop(deadline)
    workers.clear()


class RewardManager:
    """Scores ``RewardItem`` lists; see the module docstring. Close it (or use ``with``) to stop workers."""

    def __init__(self, config: RewardModelConfig, custom: CustomRewardFunctionConfig):
        self.url = config.url
        self.timeout_s = float(config.timeout_s)
        self.max_retries = config.max_retries
        self.num_workers = config.num_workers
        self._custom_spec: CustomSpec = None
        self._custom: Callable[..., Any] | None = None
        if custom.path and not self.url:
            # absolute: the workers load it again, wherever they start
            path = os.path.abspath(custom.path) if _is_file_path(custom.path) else custom.path
            self._custom = load_custom_scorer(path, custom.name)  # fail here, not in a worker
            self._custom_spec = (path, custom.name)
        self._lock = threading.Lock()  # one score call at a time: the workers are shared state
        self._workers: list[_Worker] = []
        if not self.url and self.num_workers > 0:
            self._context = multiprocessing.get_context("spawn")
            self._workers = [_Worker(self._context, self._custom_spec) for _ in range(self.num_workers)]
        # Stop the workers even when close() is never called (before multiprocessing's exit hook joins them).
        self._finalizer = weakref.finalize(self, _stop_all, self._workers)

    def score(self, items: Sequence[RewardItem]) -> RewardResult:
        """One score per item, never raising for a sample. Bounded: in workers, by about
        ``len(items) / num_workers * timeout_s`` (plus a worker start-up); remote, by the requests' limits."""
        with self._lock:
            if self.url:
                outcomes, timed_out = self._score_remote(items), 0
            elif self.num_workers > 0:
                if not self._finalizer.alive:
                    raise RuntimeError("RewardManager.score after close()")
                outcomes, timed_out = self._score_in_workers(items)
            else:
                outcomes, timed_out = [_score_one(self._custom, item) for item in items], 0
        return self._result(items, outcomes, timed_out)

    def close(self) -> None:
        self._finalizer()  # runs once: later calls do nothing

    def __enter__(self) -> RewardManager:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _result(self, items: Sequence[RewardItem], outcomes: list[Outcome], timed_out: int) -> RewardResult:
        errors = [f"sample {index} (data_source {items[index].data_source}): {error}"
                  for index, (_, error) in enumerate(outcomes) if error is not None]
        for line in errors[:_LOGGED_FAILURES]:
            logger.warning("reward failed: %s", line)
        if len(errors) > _LOGGED_FAILURES:
            logger.warning("reward failed for %d more of %d samples", len(errors) - _LOGGED_FAILURES, len(items))
        return RewardResult(scores=[score for score, _ in outcomes],
                            failed=[error is not None for _, error in outcomes],
                            errors=errors, timed_out=timed_out)

    def _score_remote(self, items: Sequence[RewardItem]) -> list[Outcome]:
        chunks = [items[start:start + _REMOTE_CHUNK] for start in range(0, len(items), _REMOTE_CHUNK)]

        def request(chunk: Sequence[RewardItem]) -> list[Outcome]:
            payload = [{"data_source": item.data_source, "solution_str": item.solution_str,
                        "ground_truth": item.ground_truth, "extra_info": item.extra_info} for item in chunk]
            try:
                return [(score, None) for score in
                        post_scores(self.url, payload, self.timeout_s, self.max_retries)]
            except RemoteRewardError as error:
                return [(0.0, str(error))] * len(chunk)

        with ThreadPoolExecutor(max_workers=_REMOTE_THREADS) as pool:
            return [outcome for chunk_outcomes in pool.map(request, chunks) for outcome in chunk_outcomes]

    def _score_in_workers(self, items: Sequence[RewardItem]) -> tuple[list[Outcome], int]:
        outcomes: list[Outcome | None] = [None] * len(items)
        # Several chunks per worker, so that a slow chunk does not leave the others idle at the end.
        size = max(1, min(_MAX_CHUNK, -(-len(items) // (4 * self.num_workers))))
        pending = deque(list(range(start, min(start + size, len(items))))
                        for start in range(0, len(items), size))
        left, timed_out = len(items), 0
        while left:
            for worker in self._workers:
                if worker.ready and not worker.todo and pending:
                    self._send(worker, pending, items)
            now = time.monotonic()
            deadline = min((worker.since + (self.timeout_s if worker.ready else _START_TIMEOUT_S)
                            for worker in self._workers if worker.todo or not worker.ready), default=now)
            wait([worker.conn for worker in self._workers] + [worker.process.sentinel for worker in self._workers],
                 timeout=max(0.0, deadline - now))
            for position, worker in enumerate(self._workers):
                left -= self._collect(worker, outcomes)
                failure = self._failure(worker)
                if failure is None:
                    continue
                message, is_timeout = failure
                in_hand = worker.todo[0] if worker.todo else None
                worker.kill()
                left -= self._collect(worker, outcomes)  # what it sent before it went
                worker.conn.close()
                if in_hand is not None and outcomes[in_hand] is None:
                    outcomes[in_hand] = (0.0, message)
                    left -= 1
                    timed_out += is_timeout
                rest = [index for index in worker.todo if index != in_hand]
                if rest:  # the chunk's unscored rest goes out again, first
                    pending.appendleft(rest)
                self._workers[position] = _Worker(self._context, self._custom_spec)
        return outcomes, timed_out

    def _send(self, worker: _Worker, pending: deque[list[int]], items: Sequence[RewardItem]) -> None:
        chunk = pending.popleft()
        try:
            worker.conn.send([(index, items[index]) for index in chunk])
        except OSError:  # it died while idle: _failure sees it and replaces it; the chunk waits
            pending.appendleft(chunk)
            return
        worker.todo.extend(chunk)
        worker.since = time.monotonic()

    def _collect(self, worker: _Worker, outcomes: list[Outcome | None]) -> int:
        """Take the worker's waiting messages; the number of samples it finished."""
        finished = 0
        try:
            while worker.conn.poll():
                kind_or_index, *payload = worker.conn.recv()
                if kind_or_index == "ready":
                    worker.ready = True
                elif kind_or_index == "load_error":
                    raise RuntimeError(f"reward scorer process could not load its scorer: {payload[0]}")
                else:
                    worker.todo.popleft()  # results come in the order sent
                    outcomes[kind_or_index] = tuple(payload)
                    finished += 1
                worker.since = time.monotonic()
        except (EOFError, OSError):  # it died; _failure says how
            pass
        return finished

    def _failure(self, worker: _Worker) -> tuple[str, bool] | None:
        """Why the worker must be replaced (its sample in hand fails) and whether it timed out; None: fine."""
        waited = time.monotonic() - worker.since
        if worker.process.exitcode is not None:
            if not worker.ready:
                raise RuntimeError(f"reward scorer process exited with code {worker.process.exitcode} before it was "
                               "ready: see its stderr (a spawned process re-imports the main module, whose entry "
                               "point must sit under `if __name__ == '__main__':`)")
            return f"scorer process died (exit code {worker.process.exitcode})", False
        if not worker.ready and waited > _START_TIMEOUT_S:
            raise RuntimeError(f"reward scorer process not ready within {_START_TIMEOUT_S} s")
        if worker.todo and waited > self.timeout_s:
            return f"no result within {self.timeout_s} s (scorer killed)", True
        return None
