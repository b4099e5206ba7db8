"""Kubernetes manifests validate against the Kubernetes schemas; the Dockerfile passes hadolint."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonpatch
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_manifests_cover_deployment_service_and_autoscaler() -> None:
    kinds = {doc["kind"] for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text())}
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler", "Secret"}


def test_keys_and_tls_come_from_secrets_and_probes_speak_https() -> None:
    (deployment,) = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    secrets = {volume["name"]: volume["secret"]["secretName"] for volume in pod["volumes"]}
    declared = {
        doc["metadata"]["name"] for doc in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "secrets.yaml").read_text())
    }
    assert env["PULSE_API_KEYS_FILE"].startswith(mounts["api-keys"] + "/")
    assert env["PULSE_TLS_CERT"].startswith(mounts["tls"] + "/") and env["PULSE_TLS_KEY"].startswith(
        mounts["tls"] + "/"
    )
    assert set(secrets.values()) == declared
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["scheme"] == "HTTPS"


def test_kustomize_lists_every_manifest() -> None:
    base = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(base["resources"]) == sorted(path.name for path in MANIFESTS)
    mesh = yaml.safe_load((K8S / "mesh" / "kustomization.yaml").read_text())
    assert mesh["resources"] == [".."] and [patch["path"] for patch in mesh["patches"]] == ["grpc-probes.yaml"]


def _mesh_deployment() -> dict[str, Any]:
    """deploy/k8s/mesh's Deployment: the base with the overlay's RFC 6902 patch applied, as kustomize does."""
    (deployment,) = yaml.safe_load_all((K8S / "deployment.yaml").read_text())
    operations = yaml.safe_load((K8S / "mesh" / "grpc-probes.yaml").read_text())
    patched: dict[str, Any] = jsonpatch.apply_patch(deployment, operations)
    return patched


def test_behind_a_mesh_the_probes_ask_the_grpc_health_service_in_plaintext() -> None:
    from server.config.settings import Settings

    deployment = _mesh_deployment()
    kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {item["name"]: item["value"] for item in container["env"]}
    settings = Settings.from_env(env)
    assert settings.tls_cert is None and settings.tls_key is None and settings.api_keys_file is not None
    assert container["readinessProbe"]["grpc"] == {
        "port": settings.grpc_port,
        "service": "inference.GRPCInferenceService",
    }
    assert container["livenessProbe"]["grpc"] == {"port": settings.grpc_port}
    assert [volume["name"] for volume in pod["volumes"]] == [mount["name"] for mount in container["volumeMounts"]]
    assert [volume["name"] for volume in pod["volumes"]] == ["api-keys"]


def test_deployment_probes_and_limits() -> None:
    (deployment,) = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["resources"]["limits"]["cpu"] == container["resources"]["requests"]["cpu"] == "1"
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    assert env["PULSE_WORKERS"] == "1"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_pod_outlives_drain_and_graceful_shutdown() -> None:
    """Kubernetes sends SIGKILL after terminationGracePeriodSeconds: it must cover the drain, then the
    graceful shutdown, plus a margin for the process to exit."""
    from server.config.settings import Settings

    (deployment,) = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    env = {item["name"]: item["value"] for item in pod["containers"][0]["env"] if "value" in item}
    settings = Settings.from_env(env)
    margin = 5
    assert pod["terminationGracePeriodSeconds"] >= settings.drain_seconds + settings.graceful_timeout_seconds + margin


def test_a_broken_manifest_is_caught() -> None:
    (deployment,) = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)


def test_dockerfile_passes_hadolint_at_error_level() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run(
        [str(hadolint), "--failure-threshold", "error", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
