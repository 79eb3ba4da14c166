"""`main_ppo` on a real two-node Ray cluster (127.0.0.2 and 127.0.0.3, one CPU each, one training rank
per node): a rollout worker on each node launches that node's engine, generation runs on both, and
the weights reach both after every step.

- embedded engine, fp32: each node's engine is fed by the training rank on its node (rank 0 relays
  the tensors to rank 1); both steps are exactly on-policy, so the second node's engine got exactly
  the trained weights;
- real SGLang servers on CPU, one per node, each listening on its node's address, `distributed`
  transport (one gloo group spanning both servers, meeting at rank 0's node): both answer the
  trainer's requests; after each sync both serve the new `weight_version` and compute the same
  log-probs of a probe, unlike the weights they started with; the first step is on-policy; no server
  outlives the run.
"""
import json
import re
import subprocess
import time
import urllib.request

import pytest

from tests.rollout.sglang_support import requires_sglang
from tests.support.two_node_ray import HEAD_IP, WORKER_IP, TwoNodeRay
from tests.trainer.ppo_runs import ENV, ROOT, make_assets, metrics, ppo_command

SERVER = "sglang.launch_server"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """bf16 weights: SGLang serves them as they are; the embedded engine and the trainer read them in fp32."""
    return make_assets(tmp_path_factory.mktemp("two_node_assets"), dtype="bfloat16")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    nodes = TwoNodeRay(tmp_path_factory.mktemp("two_node_ray"), cpus_per_node=1)
    yield nodes
    nodes.stop()


def two_node_command(assets, run_dir, cluster, *extra):
    return ppo_command(assets, run_dir, "trainer.nnodes=2", "trainer.n_gpus_per_node=1",
                       f"ray_init.address={cluster.address}", "trainer.save_freq=-1", "trainer.test_freq=-1",
                       "trainer.val_before_train=false", *extra)


@pytest.mark.timeout(300)
def test_embedded_engines_on_both_nodes_are_fed_from_their_own_node(cluster, assets, tmp_path):
    run_dir = tmp_path / "run"
    result = subprocess.run(two_node_command(assets, run_dir, cluster, "trainer.total_training_steps=2"),
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-4000:]
    assert f"rollout: {HEAD_IP}: embedded, {WORKER_IP}: embedded" in result.stderr \
        or f"rollout: {WORKER_IP}: embedded, {HEAD_IP}: embedded" in result.stderr, result.stderr[-4000:]
    # Each node's engine is fed by the rank on that node (rank 0 relays to rank 1).
    routes = re.findall(r"rank (\d) \((127\.0\.0\.\d)\) feeds the embedded engine\(s\) on (127\.0\.0\.\d) ",
                        result.stderr)
    assert sorted(rank for rank, _, _ in routes) == ["0", "1"], result.stderr[-4000:]
    assert all(rank_ip == engine_ip for _, rank_ip, engine_ip in routes), routes
    assert {rank_ip for _, rank_ip, _ in routes} == {HEAD_IP, WORKER_IP}, routes
    steps = metrics(run_dir)[0]
    assert sorted(steps) == [1, 2]
    assert steps[1]["actor/ppo_kl"] == 0.0 and steps[1]["actor/pg_clipfrac"] == 0.0
    for step in steps.values():
        # Half the prompts were answered on each node: fp32 on both, so any stale or wrong weight shows.
        assert step["mismatch/abs_log_prob_diff_max"] < 1e-4, step["mismatch/abs_log_prob_diff_max"]
        assert step["batch/samples"] == 32


def _server_url(process) -> str:
    args = process.cmdline()
    return f"http://{args[args.index('--host') + 1]}:{args[args.index('--port') + 1]}"


def _leaders(processes):
    """The `launch_server` processes whose parent is not one (its scheduler processes share the name)."""
    pids = {p.pid for p in processes}
    return [p for p in processes if p.ppid() not in pids]


def _read(url: str, path: str, body=None, timeout_s: float = 5):
    data = None if body is None else json.dumps(body).encode()
    try:
        request = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout_s) as reply:
            return reply.read().decode()
    except OSError:
        return None


PROBE = {"input_ids": list(range(3, 19)), "sampling_params": {"max_new_tokens": 1, "temperature": 0.0},
         "return_logprob": True, "logprob_start_len": 0}  # teacher-forced log-probs: what the weights compute


def _version(url: str):
    """The served weight_version as text ("None" before any update names one); None: no answer."""
    info = _read(url, "/model_info")
    return str(json.loads(info).get("weight_version")) if info else None


def _probe(url: str, version, seen: dict) -> bool:
    """Records the probe's log-probs under `version` when the server kept that version throughout;
    True when a request was sent."""
    if version is None or version in seen:
        return False
    reply = _read(url, "/generate", PROBE, timeout_s=60)  # it queues behind the trainer's requests
    if reply and _version(url) == version:
        seen[version] = [entry[0] for entry in json.loads(reply)["meta_info"]["input_token_logprobs"]]
    return True


@requires_sglang
@pytest.mark.timeout(360)
def test_sglang_servers_on_both_nodes_generate_and_get_the_same_weights(cluster, assets, tmp_path):
    run_dir = tmp_path / "run"
    command = two_node_command(
        assets, run_dir, cluster, "actor_rollout_ref.rollout.name=sglang", "actor_rollout_ref.rollout.dtype=bfloat16",
        "actor_rollout_ref.rollout.weight_transport=distributed", "actor_rollout_ref.rollout.sglang.enable_metrics=true",
        "trainer.total_training_steps=2")
    log = tmp_path / "run.log"
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    servers, logprobs, requests, probes = {}, {}, {}, {}  # per node: URL, {version: probe}, the trainer's, ours
    try:
        deadline = time.monotonic() + 340
        while process.poll() is None:
            assert time.monotonic() < deadline, "the run did not finish within 340 s"
            for ip, found in cluster.processes(SERVER).items():
                for leader in _leaders(found):
                    servers.setdefault(ip, _server_url(leader))
            for ip, url in servers.items():
                probes[ip] = probes.get(ip, 0) + _probe(url, _version(url), logprobs.setdefault(ip, {}))
                counts = re.findall(r"^sglang:num_requests_total\{.*\} ([0-9.]+)$", _read(url, "/metrics") or "", re.M)
                if counts:  # the trainer's requests: the server's count less every probe sent so far
                    requests[ip] = max(requests.get(ip, 0.0), float(counts[0]) - probes[ip])
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=60)
    text = log.read_text()
    assert process.returncode == 0, text[-4000:]
    # One server per node, listening on its node's address.
    assert set(servers) == {HEAD_IP, WORKER_IP}, servers
    assert servers[HEAD_IP].startswith(f"http://{HEAD_IP}:") and servers[WORKER_IP].startswith(f"http://{WORKER_IP}:")
    # Both generated: each node got half of a step's 32 samples at least (the servers' own counters).
    assert requests.get(HEAD_IP, 0) >= 16 and requests.get(WORKER_IP, 0) >= 16, requests
    # Both served the trained weights: after a sync the two nodes' servers compute the same log-probs,
    # and not those of the weights they started with.
    synced = logprobs[HEAD_IP].keys() & logprobs[WORKER_IP].keys() & {"1", "2"}
    assert synced, logprobs
    initial = [probe for version, probe in logprobs[WORKER_IP].items() if version not in ("1", "2")]
    assert initial, logprobs[WORKER_IP]
    for version in synced:
        assert logprobs[WORKER_IP][version] == logprobs[HEAD_IP][version], (version, logprobs)
        assert logprobs[WORKER_IP][version] != initial[0], (version, logprobs)
    steps = metrics(run_dir)[0]
    assert sorted(steps) == [1, 2]
    first = steps[1]
    assert first["actor/ppo_kl"] == 0.0 and first["actor/pg_clipfrac"] == 0.0
    assert all(s["mismatch/abs_log_prob_diff_mean"] < 0.05 for s in steps.values()), steps
    assert all(s["batch/samples"] == 32 for s in steps.values())
    # Shutdown stopped every server by pid, on both nodes.
    assert not any(cluster.processes(SERVER).values()), cluster.processes(SERVER)
