"""The rendered manifests' own commands, run as local processes: a RayJob's head and worker pods
(127.0.0.2 and 127.0.0.3) form a two-node Ray cluster, KubeRay's submitter command submits the
RayJob's entrypoint to it, and the entrypoint finishes a GRPO step with its ranks on both nodes.
What stands in for the cluster is listed in tests/launchers/local_pods.py."""
import json
import os
import signal
import subprocess
import sys
import uuid
import urllib.request

import pytest

from tests.launchers.tiny_runs import tiny_grpo_overrides
from tests.launchers.local_pods import ROOT, VENV_BIN, LocalPod, free_port_block, load_manifest, wait_for

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
PORT_VARS = ("RAY_PORT", "RAY_DASHBOARD_PORT", "RAY_CLIENT_PORT", "RAY_DASHBOARD_AGENT_PORT", "RAY_METRICS_PORT")
WORKER_PORTS = 40  # Ray worker processes per node: a small range of its own for each "pod"


def _ports(port_base: int) -> dict:
    ports = {var: str(port_base + i) for i, var in enumerate(PORT_VARS)}
    first = port_base + len(PORT_VARS)
    ports.update(RAY_MIN_WORKER_PORT=str(first), RAY_MAX_WORKER_PORT=str(first + WORKER_PORTS - 1))
    return ports


def _submitter_command(spec: dict, dashboard: str, job_id: str) -> str:
    """The submitter pod's command as KubeRay v1.7 builds it for K8sJobMode (BuildJobSubmitCommand):
    wait for the dashboard's GCS health, submit the entrypoint unless the job exists, follow its logs."""
    health = (f"python -c \"import urllib.request; r=urllib.request.urlopen('{dashboard}/api/gcs_healthz', "
              "timeout=10); exit(0 if b'success' in r.read() else 1)\"")
    return (f"until {health} >/dev/null 2>&1 ; do echo \"Waiting for Ray Dashboard GCS\" ; sleep 2 ; done ; "
            f"if ! ray job status --address {dashboard} {job_id} >/dev/null 2>&1 ; then "
            f"ray job submit --address {dashboard} --no-wait --submission-id {job_id} -- {spec['entrypoint'].strip()} ; "
            f"fi ; ray job logs --address {dashboard} --follow {job_id}")


def _healthy(*urls: str) -> bool:
    """KubeRay's readiness probes, as HTTP GETs: each answer must say `success`."""
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if b"success" not in reply.read():
                    return False
        except OSError:
            return False
    return True


def _probes(ip: str, ports: dict, head: bool) -> list:
    """What KubeRay v1.7 probes (pod.go, initLivenessAndReadinessProbe): the raylet through the dashboard
    agent on every pod, and the GCS through the dashboard on the head."""
    urls = [f"http://{ip}:{ports['RAY_DASHBOARD_AGENT_PORT']}/api/local_raylet_healthz"]
    return urls + ([f"http://{ip}:{ports['RAY_DASHBOARD_PORT']}/api/gcs_healthz"] if head else [])


@pytest.mark.timeout(600)
def test_rayjob_commands_run_a_grpo_step_on_two_local_nodes(tiny_assets, tmp_path):
    run_dir = tmp_path / "shared" / "run"
    manifest = tmp_path / "grpo.rayjob.yaml"
    render = [
        sys.executable, "launchers/k8s/render.py", "--config", "configs/grpo_tiny_cpu.yaml", "--nodes", "2",
        "--gpus-per-node", "1", "--device", "cpu", "--cpus-per-node", "1", "--memory-per-node", "3Gi",
        "--shm-size", "512Mi", "--mount-path", str(tmp_path / "shared"), "--out", str(manifest),
        *tiny_grpo_overrides(tiny_assets, run_dir),
    ]
    subprocess.run(render, cwd=ROOT, check=True, capture_output=True, timeout=120)
    (rayjob,) = load_manifest(manifest)
    cluster = rayjob["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    (workers,) = cluster["workerGroupSpecs"]
    assert workers["replicas"] == 1  # two nodes: the head trains too
    worker = workers["template"]["spec"]["containers"][0]

    head_ports, worker_ports = _ports(free_port_block(60)), _ports(free_port_block(60))
    dashboard = f"http://{HEAD_IP}:{head_ports['RAY_DASHBOARD_PORT']}"
    pods, submitter = [], None
    try:
        pods.append(LocalPod("head", head, {"POD_IP": HEAD_IP, **head_ports}, tmp_path))
        # Worker pods start once the GCS answers (KubeRay's injected init container waits for it) ...
        wait_for(lambda: _healthy(*_probes(HEAD_IP, head_ports, head=True)), 240, "the head's readiness", pods)
        pods.append(LocalPod("worker", worker, {"POD_IP": WORKER_IP, "FQ_RAY_IP": HEAD_IP, **worker_ports,
                                                "RAY_PORT": head_ports["RAY_PORT"]}, tmp_path))
        # ... and the submitter once the cluster is ready: every pod's readiness probe passes.
        wait_for(lambda: _healthy(*_probes(WORKER_IP, worker_ports, head=False)), 240, "the worker's readiness", pods)
        job_id = f"rayjob-{uuid.uuid4().hex[:8]}"
        submitter_log = tmp_path / "submitter.log"
        with open(submitter_log, "w") as out:
            submitter = subprocess.Popen(
                ["/bin/bash", "-ce", "--", _submitter_command(rayjob["spec"], dashboard, job_id)], cwd=ROOT,
                env={"PATH": f"{VENV_BIN}:/usr/bin:/bin", "RAY_AUTH_MODE": "disabled", "HOME": str(tmp_path)},
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        from ray.job_submission import JobSubmissionClient
        from ray.util.state import list_actors, list_nodes

        # Where the training ranks run, seen while they are alive (once the job ends they may be gone
        # from the state API).
        def rank_nodes():
            alive = list_actors(address=dashboard, filters=[("class_name", "=", "PolicyWorker"), ("state", "=", "ALIVE")],
                                detail=True, raise_on_missing_output=False)
            if len(alive) == 2:
                return [a.node_id for a in alive]
            if submitter.poll() is not None:
                raise AssertionError(f"the job ended before two ranks ran:\n{submitter_log.read_text()[-4000:]}")
            return None

        ranks_on = wait_for(rank_nodes, 300, "two live training ranks", pods)
        submitter.wait(timeout=330)
        output = submitter_log.read_text()
        client = JobSubmissionClient(dashboard)
        status = client.get_job_status(job_id)
        assert status.value == "SUCCEEDED", (f"{status}\n{output[-4000:]}\n"
                                             + "\n".join(f"--- {p.name}:\n{p.tail()}" for p in pods))
        assert "ppo finished" in client.get_job_logs(job_id)
        nodes = {node.node_id: node.node_ip for node in list_nodes(address=dashboard)}
        assert sorted(nodes.values()) == [HEAD_IP, WORKER_IP]
        assert sorted(nodes[node] for node in ranks_on) == [HEAD_IP, WORKER_IP], "the two ranks share a node"
    finally:
        if submitter is not None and submitter.poll() is None:
            os.killpg(submitter.pid, signal.SIGKILL)  # its own session: the group id is its pid
            submitter.wait(timeout=10)
        for pod in reversed(pods):
            pod.stop(grace_s=5)

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if "actor/pg_loss" in r)
    assert first["step"] == 1 and first["actor/ppo_kl"] == 0.0  # the first step is on-policy
    assert first["batch/samples"] == 16
