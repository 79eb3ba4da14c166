"""The committed Kubernetes manifests: what the generator writes now, strictly valid (built-in kinds
with kubernetes-validate, KubeRay kinds against the v1.7 CRD schemas), with the 32B numbers where
the config puts them; NeMo-Run's KubeRay executor, built from the same numbers, gives the same
cluster."""
import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from launchers.k8s import render
from launchers.k8s.validate import validate_file, validate_object
from tests.launchers.local_pods import ROOT

RENDERED = sorted((ROOT / "launchers" / "k8s" / "rendered").glob("*.yaml"))
GRPO_32B = ROOT / "launchers" / "k8s" / "rendered" / "grpo_qwen2.5_32b.rayjob.yaml"
SFT_32B = ROOT / "launchers" / "k8s" / "rendered" / "sft_qwen2.5_32b.job.yaml"


def _docs(path):
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]


def _pods(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    return [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]


def test_committed_manifests_are_what_the_generator_writes():
    expected = render.shipped()
    assert sorted(expected) == RENDERED, "rendered/ holds a file the generator does not write, or lacks one"
    for path, text in expected.items():
        assert path.read_text() == text, f"{path.name} is stale: python launchers/k8s/render.py --shipped"


@pytest.mark.parametrize("path", RENDERED, ids=lambda p: p.name)
def test_committed_manifests_validate_strictly(path):
    errors, warnings = validate_file(path)
    assert errors == [] and warnings == []


@pytest.mark.parametrize("break_it, expected", [
    (lambda o: _pods(o)[0]["template"]["spec"]["containers"][0].update(imagePullPolicyy="Always"), "imagePullPolicyy"),
    (lambda o: o["spec"].update(shutdownAfterJobFinish=True), "shutdownAfterJobFinish"),
    (lambda o: _pods(o)[1].update(replicas="3"), "is not of type 'integer'"),
    (lambda o: _pods(o)[1]["template"]["spec"]["containers"][0]["resources"]["limits"].update(cpu="lots"),
     "does not match"),
    (lambda o: _pods(o)[1].update(minReplicas=5), "minReplicas <= replicas <= maxReplicas"),
    (lambda o: o["metadata"].update(name="a" * 48), "at most 47"),
], ids=["unknown-container-field", "unknown-spec-field", "string-replicas", "bad-quantity", "replica-bounds",
        "long-name"])
def test_the_rayjob_validation_refuses_what_kubernetes_or_kuberay_would(break_it, expected):
    rayjob = _docs(GRPO_32B)[0]
    assert validate_object(rayjob) == ([], [])
    broken = copy.deepcopy(rayjob)
    break_it(broken)
    errors, _ = validate_object(broken)
    assert any(expected in error for error in errors), errors


def test_the_job_validation_refuses_unknown_fields_and_wrong_types():
    job = _docs(SFT_32B)[1]
    for break_it, expected in [(lambda o: o["spec"].update(completionz=4), "completionz"),
                               (lambda o: o["spec"]["template"]["spec"]["containers"][0]["env"][0].update(valu="1"),
                                "valu"),
                               (lambda o: o["spec"].update(parallelism="4"), "is not of type")]:
        broken = copy.deepcopy(job)
        break_it(broken)
        errors, _ = validate_object(broken)
        assert any(expected in e for e in errors), errors


def test_the_32b_rayjob_carries_the_configs_numbers():
    (rayjob,) = _docs(GRPO_32B)
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] > 0
    head, workers = _pods(rayjob)
    assert workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"] == 3  # + the head: 4 nodes
    for group in (head, workers):
        pod = group["template"]["spec"]
        (container,) = pod["containers"]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"] and resources["limits"]["nvidia.com/gpu"] == "8"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert "persistentVolumeClaim" in volumes["shared"]
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/shared", "/dev/shm"}
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["NCCL_SOCKET_IFNAME"] == "eth0" and env["CUDA_DEVICE_MAX_CONNECTIONS"] == "1"
        # KubeRay keeps a container command with `ray start` in it (pod.go, BuildPod) instead of its own.
        assert "ray start" in container["args"][0] and "--num-gpus=8" in container["args"][0]
    entry = spec["entrypoint"]
    assert entry.startswith("python -m harness.main_ppo --config configs/grpo_qwen2.5_32b.yaml ")
    assert "trainer.nnodes=4 trainer.n_gpus_per_node=8" in entry and "ray_init.address=auto" in entry


def test_the_32b_sft_job_is_an_indexed_job_with_a_headless_service():
    service, job = _docs(SFT_32B)
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": job["metadata"]["name"]}
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"] == 4
    pod = spec["template"]["spec"]
    assert pod["subdomain"] == service["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    command = container["args"][0]
    assert "torchrun --nnodes=4 --nproc-per-node=8 --node-rank=${JOB_COMPLETION_INDEX}" in command
    assert "-m harness.main_sft --config configs/sft_qwen2.5_32b.yaml" in command
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["MASTER_ADDR"] == f"{job['metadata']['name']}-0.{service['metadata']['name']}"


@pytest.fixture(scope="module")
def nemo_run_rayjob(tmp_path_factory):
    """`grpo.py --executor kuberay --dryrun` with the 32B manifest's arguments (a kubeconfig that names
    an unreachable server: NeMo-Run's KubeRayJob loads one, nothing connects)."""
    tmp = tmp_path_factory.mktemp("kuberay")
    (tmp / "kubeconfig").write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "offline"}}],
        "users": [{"name": "offline", "user": {"token": "offline"}}]}))
    import os

    argv = ["--config", "configs/grpo_qwen2.5_32b.yaml", *render.SHIPPED["grpo_qwen2.5_32b"]]
    result = subprocess.run([sys.executable, "launchers/nemo_run/grpo.py", "--executor", "kuberay", "--dryrun", *argv],
                            cwd=ROOT, env={**os.environ, "KUBECONFIG": str(tmp / "kubeconfig")}, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return yaml.safe_load(result.stdout)


def test_nemo_run_kuberay_rayjob_validates_and_matches_the_rendered_manifest(nemo_run_rayjob):
    assert validate_object(nemo_run_rayjob) == ([], [])
    (rendered,) = _docs(GRPO_32B)
    assert nemo_run_rayjob["spec"]["entrypoint"] == rendered["spec"]["entrypoint"]
    assert nemo_run_rayjob["spec"]["ttlSecondsAfterFinished"] == rendered["spec"]["ttlSecondsAfterFinished"]
    for theirs, ours in zip(_pods(nemo_run_rayjob), _pods(rendered), strict=True):
        for key in ("replicas", "minReplicas", "maxReplicas"):
            assert theirs.get(key) == ours.get(key), key
        (a,), (b,) = theirs["template"]["spec"]["containers"], ours["template"]["spec"]["containers"]
        assert {k: str(v) for k, v in a["resources"]["limits"].items()} == b["resources"]["limits"]
        assert a["resources"]["requests"] == a["resources"]["limits"]
        assert a["volumeMounts"] == b["volumeMounts"] and a["workingDir"] == b["workingDir"]
        assert theirs["template"]["spec"]["volumes"] == ours["template"]["spec"]["volumes"]
        literal = {e["name"]: e["value"] for e in b["env"] if "value" in e}
        assert {e["name"]: e["value"] for e in a["env"]} == literal
        # NeMo-Run leaves the command to KubeRay, which builds `ray start` from these parameters.
        assert f"--num-gpus={theirs['rayStartParams']['num-gpus']}" in b["args"][0]
        assert f"--num-cpus={theirs['rayStartParams']['num-cpus']}" in b["args"][0]


def test_nemo_run_raycluster_body_is_the_deprecated_v1alpha1(tmp_path):
    """NeMo-Run 0.11.1 emits RayCluster bodies as ray.io/v1alpha1: KubeRay v1.7 still serves it, deprecated
    (gone in 1.9). The same spec is valid as v1. (The RayJob path nests only the spec: no v1alpha1 there.)"""
    sys.path.insert(0, str(ROOT))
    from launchers.k8s.layout import plan
    from launchers.nemo_run.grpo import kuberay_executor

    deployment = plan("configs/grpo_qwen2.5_32b.yaml", render.SHIPPED["grpo_qwen2.5_32b"][4:], nodes=4)
    body = kuberay_executor(deployment).get_cluster_body("harness-grpo")
    assert body["apiVersion"] == "ray.io/v1alpha1"
    errors, warnings = validate_object(body)
    assert errors == [] and len(warnings) == 1 and "deprecated" in warnings[0]
    assert validate_object({**body, "apiVersion": "ray.io/v1"}) == ([], [])
