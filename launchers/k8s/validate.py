"""Strict offline validation of Kubernetes manifests (no API server needed):

    python launchers/k8s/validate.py launchers/k8s/rendered/*.yaml

- Built-in kinds (Job, Service, ...) against Kubernetes' own schemas with kubernetes-validate, strict
  (unknown fields refused), for `K8S_VERSION`.
- KubeRay kinds (RayJob, RayCluster) against the CRD's `openAPIV3Schema` for the object's apiVersion,
  made strict: `additionalProperties: false` wherever a schema lists properties and does not preserve
  unknown fields (the API server would prune such fields silently, which hides typos); `nullable`
  honoured. Their metadata and embedded pod templates also go through kubernetes-validate, and a few
  of KubeRay v1.7's own admission rules are checked (name length, replica bounds, TTL needs
  shutdownAfterJobFinishes). A deprecated CRD version validates, with a warning.

The CRDs are read from $HARNESS_CRD_DIR, by default ../shared/k8s/crds beside the checkout (KubeRay
v1.7.0's ray.io_rayjobs / ray.io_rayclusters CRD files). Exit codes: 0 valid, 1 invalid, 2 bad input.
"""
from __future__ import annotations

import copy
import functools
import os
import re
import sys
from pathlib import Path
from typing import Iterable, List, Tuple

import yaml

K8S_VERSION = "1.34.0"
REPO = Path(__file__).resolve().parents[2]
KUBERAY_KINDS = {"RayJob": "rayjobs", "RayCluster": "rayclusters"}
MAX_RAYJOB_NAME = 47
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")


class ManifestError(ValueError):
    """A manifest (or the CRD files) cannot be read."""


def crd_dir() -> Path:
    return Path(os.environ.get("HARNESS_CRD_DIR", REPO.parent / "shared" / "k8s" / "crds"))


@functools.lru_cache(maxsize=None)
def _crd(kind: str) -> dict:
    directory = crd_dir()
    files = sorted(directory.glob(f"ray.io_{KUBERAY_KINDS[kind]}*.yaml"))
    if not files:
        raise ManifestError(f"no {kind} CRD (ray.io_{KUBERAY_KINDS[kind]}*.yaml) in {directory}; "
                            "set HARNESS_CRD_DIR to a folder with KubeRay's CRD files")
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the CRDs are ~8,000 lines each
    return yaml.load(files[-1].read_text(), Loader=loader)


def crd_version(kind: str, api_version: str) -> dict:
    """The CRD's entry for `api_version` (ray.io/v1 -> v1); refused if the CRD does not serve it."""
    group, _, version = api_version.partition("/")
    crd = _crd(kind)
    for entry in crd["spec"]["versions"]:
        if group == crd["spec"]["group"] and entry["name"] == version and entry.get("served"):
            return entry
    served = [f"{crd['spec']['group']}/{v['name']}" for v in crd["spec"]["versions"] if v.get("served")]
    raise ManifestError(f"{kind}: apiVersion {api_version!r} is not served by the CRD (served: {served})")


def strict_schema(schema):
    """A copy of an OpenAPI v3 structural schema that refuses unknown fields and allows declared nulls."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: strict_schema(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(out.get(key), dict):
            out[key] = strict_schema(out[key])
    for key in SCHEMA_LISTS:
        if key in out:
            out[key] = [strict_schema(sub) for sub in out[key]]
    if out.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@functools.lru_cache(maxsize=None)
def _validator(kind: str, api_version: str):
    import jsonschema

    schema = strict_schema(copy.deepcopy(crd_version(kind, api_version)["schema"]["openAPIV3Schema"]))
    return jsonschema.Draft7Validator(schema)


def _path(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "(top)"


def _builtin_errors(obj: dict, version: str) -> List[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{_path(error)}: {error.message}"]
    except kubernetes_validate.SchemaNotFoundError as error:
        return [error.message]
    return []


def _pod_templates(kind: str, spec: dict) -> Iterable[Tuple[str, dict]]:
    cluster = spec.get("rayClusterSpec", {}) if kind == "RayJob" else spec
    if "headGroupSpec" in cluster:
        yield "headGroupSpec.template", cluster["headGroupSpec"].get("template", {})
    for i, group in enumerate(cluster.get("workerGroupSpecs", [])):
        yield f"workerGroupSpecs.{i}.template", group.get("template", {})
    if kind == "RayJob" and "submitterPodTemplate" in spec:
        yield "submitterPodTemplate", spec["submitterPodTemplate"]


def _kuberay_rules(kind: str, obj: dict) -> List[str]:
    """Some of KubeRay v1.7's admission checks (ray-operator/controllers/ray/utils/validation.go)."""
    errors, spec, name = [], obj.get("spec", {}), obj.get("metadata", {}).get("name", "")
    if kind == "RayJob":
        if len(name) > MAX_RAYJOB_NAME or not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name):
            errors.append(f"metadata.name {name!r}: a RayJob name is a DNS-1035 label of at most {MAX_RAYJOB_NAME}")
        if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
            errors.append("spec.ttlSecondsAfterFinished needs spec.shutdownAfterJobFinishes: true")
    cluster = spec.get("rayClusterSpec", {}) if kind == "RayJob" else spec
    if not cluster.get("headGroupSpec", {}).get("template", {}).get("spec", {}).get("containers"):
        errors.append("headGroupSpec: at least one container")
    for group in cluster.get("workerGroupSpecs", []):
        low, replicas, high = group.get("minReplicas"), group.get("replicas"), group.get("maxReplicas")
        if not cluster.get("enableInTreeAutoscaling") and (low is None or high is None):
            errors.append(f"worker group {group.get('groupName')}: minReplicas and maxReplicas are required")
        elif low is not None and high is not None and not low <= (replicas if replicas is not None else low) <= high:
            errors.append(f"worker group {group.get('groupName')}: needs minReplicas <= replicas <= maxReplicas")
    return errors


def validate_object(obj: dict, version: str = K8S_VERSION) -> Tuple[List[str], List[str]]:
    """(errors, warnings) of one manifest object."""
    if not isinstance(obj, dict) or "kind" not in obj or "apiVersion" not in obj:
        return ["not a Kubernetes object (no kind / apiVersion)"], []
    kind = obj["kind"]
    if kind not in KUBERAY_KINDS:
        return _builtin_errors(obj, version), []
    entry = crd_version(kind, obj["apiVersion"])
    warnings = [entry.get("deprecationWarning", f"{obj['apiVersion']} {kind} is deprecated")] if entry.get("deprecated") else []
    errors = [f"{_path(e)}: {e.message}" for e in _validator(kind, obj["apiVersion"]).iter_errors(obj)]
    errors += [f"metadata: {e}" for e in _builtin_errors({"apiVersion": "v1", "kind": "ConfigMap",
                                                         "metadata": obj.get("metadata", {})}, version)]
    for where, template in _pod_templates(kind, obj.get("spec", {})):
        wrapped = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "template"}, "template": template}
        errors += [f"spec.{where}: {e}" for e in _builtin_errors(wrapped, version)]
    # KubeRay's own rules assume a well-typed object: they run once the schemas pass.
    return errors or _kuberay_rules(kind, obj), warnings


def load_documents(path: Path) -> List[dict]:
    try:
        return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    except (OSError, yaml.YAMLError) as error:
        raise ManifestError(f"{path}: {str(error).splitlines()[0]}") from None


def validate_file(path: Path, version: str = K8S_VERSION) -> Tuple[List[str], List[str]]:
    """(errors, warnings) of every object in a YAML file, each naming the file, object and field."""
    errors, warnings = [], []
    for doc in load_documents(path):
        label = f"{path}: {doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"
        doc_errors, doc_warnings = validate_object(doc, version)
        errors += [f"{label}: {e}" for e in doc_errors]
        warnings += [f"{label}: {w}" for w in doc_warnings]
    return errors, warnings


def main(argv=None) -> int:
    paths = sys.argv[1:] if argv is None else list(argv)
    if not paths:
        print("usage: python launchers/k8s/validate.py MANIFEST.yaml ...", file=sys.stderr)
        return 2
    failed = False
    try:
        for path in map(Path, paths):
            errors, warnings = validate_file(path)
            for line in warnings:
                print(f"warning: {line}", file=sys.stderr)
            for line in errors:
                print(line, file=sys.stderr)
            failed |= bool(errors)
            if not errors:
                print(f"{path}: valid (Kubernetes {K8S_VERSION}, KubeRay CRDs from {crd_dir()})")
    except ManifestError as error:
        print(f"validate: {error}", file=sys.stderr)
        return 2
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
