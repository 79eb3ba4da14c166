"""RewardManager: rule and custom scorers in real worker processes, inline, and a real HTTP service."""
import json
import socket
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from harness.config.rl import CustomRewardFunctionConfig, RewardModelConfig
from harness.reward.manager import RewardItem, RewardManager

# One custom scorer whose behaviour the ground truth picks; the normal case is an exact match.
SCORERS = textwrap.dedent("""
    import math, os, time

    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        if ground_truth == "raise":
            raise ValueError("boom")
        if ground_truth == "hang":
            time.sleep(1000)
        if ground_truth == "nan":
            return math.nan
        if ground_truth == "text":
            return "high"
        if ground_truth == "dict":
            return {"score": 0.5}
        if ground_truth == "dict-without-score":
            return {"acc": 1.0}
        if ground_truth == "crash":
            os._exit(3)
        return float(solution_str == ground_truth)

    def always_one(data_source, solution_str, ground_truth, extra_info=None):
        return 1
""")


def item(ground_truth: str, solution: str = "x", data_source: str = "custom") -> RewardItem:
    return RewardItem(data_source=data_source, solution_str=solution, ground_truth=ground_truth)


def children() -> set[int]:
    return {child.pid for child in psutil.Process().children(recursive=True)}


@pytest.fixture(scope="module")
def scorer_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("scorers") / "my_scorers.py"
    path.write_text(SCORERS)
    return str(path)


@pytest.fixture(scope="module")
def custom_manager(scorer_file):
    """Two workers, a 1 s limit per sample, shared by the tests below (starting processes takes time)."""
    with RewardManager(RewardModelConfig(timeout_s=1.0, num_workers=2),
                       CustomRewardFunctionConfig(path=scorer_file)) as manager:
        yield manager


@pytest.fixture(scope="module")
def rule_manager():
    with RewardManager(RewardModelConfig(num_workers=2), CustomRewardFunctionConfig()) as manager:
        yield manager


def test_rule_scorer_char_count(rule_manager):
    result = rule_manager.score([item("3", "3", "char_count"), item("3", " 3\n", "char_count"),
                                 item("3", "4", "char_count"), item("3", "3 letters", "char_count")])
    assert result.scores == [1.0, 1.0, 0.0, 0.0]
    assert result.failed == [False] * 4 and result.errors == []
    assert result.metrics() == {"reward/failed": 0, "reward/timed_out": 0, "reward/failed_fraction": 0.0}


def test_unknown_data_source_fails_that_sample(rule_manager, caplog):
    result = rule_manager.score([item("3", "3", "char_count"), item("3", "3", "no_such_source")])
    assert result.scores == [1.0, 0.0] and result.failed == [False, True]
    assert result.errors[0].startswith("sample 1 (data_source no_such_source): UnknownScorerError: no rule scorer")
    assert "no_such_source" in caplog.text  # logged


def test_raise_fails_only_that_sample(custom_manager):
    result = custom_manager.score([item("a", "a"), item("raise"), item("b", "b")])
    assert result.scores == [1.0, 0.0, 1.0] and result.failed == [False, True, False]
    assert result.errors == ["sample 1 (data_source custom): ValueError: boom"]
    assert result.metrics()["reward/failed_fraction"] == pytest.approx(1 / 3)


def test_bad_results_fail(custom_manager):
    result = custom_manager.score([item("nan"), item("text"), item("dict-without-score"), item("dict")])
    assert result.failed == [True, True, True, False]
    assert result.scores == [0.0, 0.0, 0.0, 0.5]
    assert "returned nan, not a finite number" in result.errors[0]
    assert "returned 'high'" in result.errors[1]
    assert "returned {'acc': 1.0}" in result.errors[2]


def test_hang_is_killed_and_the_worker_replaced(custom_manager):
    before = children()
    items = [item(str(n), str(n)) for n in range(10)]
    items[3] = item("hang")
    start = time.monotonic()
    result = custom_manager.score(items)
    assert time.monotonic() - start < 5
    assert result.failed == [n == 3 for n in range(10)]
    assert result.scores == [0.0 if n == 3 else 1.0 for n in range(10)]
    assert result.errors == ["sample 3 (data_source custom): no result within 1.0 s (scorer killed)"]
    assert result.timed_out == 1 and result.metrics()["reward/timed_out"] == 1
    after = children()
    assert len(after) == len(before) and len(before - after) == 1  # the hung worker is gone, a new one took its place
    assert custom_manager.score([item("a", "a"), item("b", "b")]).scores == [1.0, 1.0]


def test_crashed_worker_fails_its_sample_and_is_replaced(custom_manager):
    items = [item(str(n), str(n)) for n in range(6)]
    items[2] = item("crash")
    result = custom_manager.score(items)
    assert result.failed == [n == 2 for n in range(6)]
    assert "scorer process died (exit code 3)" in result.errors[0] and result.timed_out == 0
    assert custom_manager.score([item("a", "a")]).scores == [1.0]


def test_custom_function_name_and_module_import(scorer_file, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(scorer_file).parent))
    for path in (scorer_file, "my_scorers"):  # a file, and an importable module name
        with RewardManager(RewardModelConfig(num_workers=0),
                           CustomRewardFunctionConfig(path=path, name="always_one")) as manager:
            assert manager.score([item("x", "y")]).scores == [1.0]


@pytest.mark.parametrize("path, name, key, problem", [
    ("/no/such/scorers.py", "compute_score", "custom_reward_function.path='/no/such/scorers.py'", "no such file"),
    ("no_such_module_xyz", "compute_score", "custom_reward_function.path='no_such_module_xyz'",
     "cannot import the module"),
    (None, "no_such_function", "custom_reward_function.name='no_such_function'", "is not defined"),
])
def test_bad_custom_scorer_raises_at_construction(scorer_file, path, name, key, problem):
    before = children()
    with pytest.raises(ValueError) as error:
        RewardManager(RewardModelConfig(num_workers=1), CustomRewardFunctionConfig(path=path or scorer_file,
                                                                                   name=name))
    assert key in str(error.value) and problem in str(error.value)
    assert children() == before  # no worker started


def test_inline_scoring(scorer_file):
    before = children()
    manager = RewardManager(RewardModelConfig(num_workers=0), CustomRewardFunctionConfig(path=scorer_file))
    result = manager.score([item("a", "a"), item("raise"), item("nan"), item("dict")])
    assert result.scores == [1.0, 0.0, 0.0, 0.5] and result.failed == [False, True, True, False]
    assert result.errors[0] == "sample 1 (data_source custom): ValueError: boom"
    assert children() == before
    manager.close()


def test_close_stops_every_worker():
    before = children()
    manager = RewardManager(RewardModelConfig(num_workers=3), CustomRewardFunctionConfig())
    assert manager.score([item("1", "1", "char_count")]).scores == [1.0]
    assert len(children() - before) == 3
    manager.close()
    manager.close()  # idempotent
    assert children() == before
    with pytest.raises(RuntimeError, match="after close"):
        manager.score([item("1", "1", "char_count")])


def test_throughput(rule_manager):
    items = [item(str(n % 7), str(n % 5), "char_count") for n in range(512)]
    rule_manager.score(items)  # the workers are warm after this
    start = time.monotonic()
    result = rule_manager.score(items)
    elapsed = time.monotonic() - start
    assert result.scores == [float(n % 7 == n % 5) for n in range(512)] and not any(result.failed)
    assert elapsed < 2.0, f"512 trivial items took {elapsed:.2f} s"


class RewardHandler(BaseHTTPRequestHandler):
    """/good: one score per item; /short: one too few; /notjson; /flaky: 500 on the first request;
    /slow: answers after 1 s."""

    requests: dict[str, int] = {}

    def do_POST(self):
        items = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["items"]
        count = self.requests[self.path] = self.requests.get(self.path, 0) + 1
        if self.path == "/flaky" and count == 1:
            self.send_error(500)
            return
        if self.path == "/slow":
            time.sleep(1.0)
        scores = [float(entry["solution_str"] == entry["ground_truth"]) for entry in items]
        body = {"/short": json.dumps({"scores": scores[:-1]}), "/notjson": "<html>oops</html>"}.get(
            self.path, json.dumps({"scores": scores})).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except BrokenPipeError:  # /slow: the client gave up, as it should
            pass

    def log_message(self, *args):  # keep test output clean
        pass


@pytest.fixture(scope="module")
def server_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), RewardHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def remote(url: str, timeout_s: float = 2.0) -> RewardManager:
    return RewardManager(RewardModelConfig(url=url, timeout_s=timeout_s, max_retries=2), CustomRewardFunctionConfig())


def test_remote_good_in_chunks(server_url):
    items = [item(str(n % 3), "0") for n in range(300)]  # two requests: 256 + 44
    RewardHandler.requests.clear()
    result = remote(f"{server_url}/good").score(items)
    assert result.scores == [float(n % 3 == 0) for n in range(300)] and not any(result.failed)
    assert RewardHandler.requests["/good"] == 2


@pytest.mark.parametrize("path, problem", [("/short", "reply has 3 scores for 4 items"),
                                           ("/notjson", "reply is not JSON")])
def test_remote_bad_reply_fails_the_request(server_url, path, problem):
    result = remote(server_url + path).score([item("a", "a")] * 4)
    assert result.failed == [True] * 4 and result.scores == [0.0] * 4
    assert result.errors[0].startswith(f"sample 0 (data_source custom): {server_url}{path}: {problem}")


def test_remote_retries_a_5xx(server_url):
    RewardHandler.requests.clear()
    result = remote(f"{server_url}/flaky").score([item("a", "a"), item("a", "b")])
    assert result.scores == [1.0, 0.0] and not any(result.failed)
    assert RewardHandler.requests["/flaky"] == 2


def test_remote_unreachable_fails_within_the_bound():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/score"
    start = time.monotonic()
    result = remote(url).score([item("a", "a"), item("b", "b")])
    assert time.monotonic() - start < 5
    assert result.failed == [True, True]
    assert f"{url}: unreachable after 3 tries" in result.errors[0] and "refused" in result.errors[0]


def test_remote_timeout_is_not_retried(server_url):
    RewardHandler.requests.clear()
    start = time.monotonic()
    result = remote(f"{server_url}/slow", timeout_s=0.3).score([item("a", "a")])
    assert time.monotonic() - start < 0.9
    assert result.failed == [True] and result.errors[0].endswith(f"{server_url}/slow: no reply within 0.3 s")
    assert RewardHandler.requests["/slow"] == 1
