"""skaffold.yaml (no skaffold binary is installable here): the current v4beta schema's structure,
every path it names exists, each profile builds every image its manifests use. And the images it
builds: pinned bases, non-root, no secrets, kfp inside (components install nothing at run time)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from kubectl import kubectl

from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE, DEFAULT_GPU_IMAGE

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



def _render(path: str) -> list[dict]:
    out = subprocess.run([kubectl(), "kustomize", str(ROOT / path)], capture_output=True, text=True, check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _pod_images(docs: list[dict]) -> set[str]:
    images = set()
    for doc in docs:
        spec = doc.get("spec", {}).get("template", {}).get("spec") or doc.get("spec", {}).get("jobTemplate", {}).get(
            "spec", {}
        ).get("template", {}).get("spec")
        for c in (spec or {}).get("containers", []) + (spec or {}).get("initContainers", []):
            images.add(c["image"])
    return images


def _repo(ref: str) -> str:
    """The image reference without its tag or digest."""
    from mpa.orchestrate.kubeflow.settings import image_repository

    return image_repository(ref)


@pytest.mark.parametrize("profile", [None, "dev", "gpu"])
def test_each_profile_builds_the_images_its_manifests_use(profile):
    """After kustomize, every mpa image is `<skaffold artifact>:<tag>`: skaffold replaces exactly those
    names with what it built, and a plain `kubectl apply -k` pulls the released tag; no bare
    `mpa-cpu` / `mpa-gpu` (unresolvable) is left."""
    cfg = _effective(profile)
    built = {a["image"] for a in cfg["build"]["artifacts"]}
    used = set()
    for path in cfg["manifests"]["kustomize"]["paths"]:
        images = _pod_images(_render(path))
        assert not {i for i in images if re.fullmatch(r"mpa-[a-z]+(:.*)?", i)}, (path, images)
        used |= {_repo(i) for i in images if _repo(i).rsplit("/", 1)[-1].startswith("mpa-")}
        assert all(":" in i.rsplit("/", 1)[-1] for i in images), (path, images)  # every image tagged
    assert used and used <= built, (profile, used, built)
    if profile == "gpu":
        assert built == {_repo(DEFAULT_CPU_IMAGE), _repo(DEFAULT_GPU_IMAGE)} and cfg["build"]["local"]["push"] is True


def test_pipeline_images_are_the_ones_skaffold_builds():
    """The compiled spec, the pipeline defaults and the overlays' `images:` entries name the skaffold
    artifacts, tagged with the package version."""
    from mpa import __version__

    built = {a["image"] for a in _effective("gpu")["build"]["artifacts"]}
    for image in (DEFAULT_CPU_IMAGE, DEFAULT_GPU_IMAGE):
        assert _repo(image) in built and image.endswith(f":{__version__}")
    spec = next(yaml.safe_load_all(_compiled_spec().read_text()))
    in_spec = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert {_repo(i) for i in in_spec} <= built, in_spec
    for overlay in sorted((ROOT / "manifests" / "overlays").iterdir()):
        entries = yaml.safe_load((overlay / "kustomization.yaml").read_text()).get("images", [])
        by_name = {e["name"]: (e["newName"], str(e["newTag"])) for e in entries}
        assert by_name == {
            "mpa-cpu": (_repo(DEFAULT_CPU_IMAGE), __version__),
            "mpa-gpu": (_repo(DEFAULT_GPU_IMAGE), __version__),
        }, overlay.name


def test_private_registry_pull_secret_on_every_service_account():
    docs = _render("manifests/overlays/gpu")
    accounts = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert accounts and all(a.get("imagePullSecrets") == [{"name": "mpa-registry"}] for a in accounts)
    template = yaml.safe_load((ROOT / "manifests" / "secrets" / "mpa-registry.yaml").read_text())
    assert template["type"] == "kubernetes.io/dockerconfigjson" and set(template["stringData"]) == {".dockerconfigjson"}


def _compiled_spec() -> Path:
    for path in (
        ROOT / "pipelines" / "training" / "mpa" / "pipeline.yaml",
        ROOT / "pipelines" / "compiled" / "mpa.yaml",
    ):
        if path.is_file():
            return path
    raise FileNotFoundError("no compiled pipeline")


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
    assert "transformers==5.19.0" in text or "ARG TRANSFORMERS_VERSION=5.19.0" in text
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", text, flags=re.M)
    for srcs in copied:
        for src in srcs.split():
            assert (ROOT / src).exists(), src


def _stages(text: str) -> list[str]:
    """The Dockerfile's stages, each from its FROM line on."""
    parts = re.split(r"^(?=FROM )", text, flags=re.M)
    return [p for p in parts if p.startswith("FROM ")]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_image_is_a_build_argument(dockerfile):
    """Where no registry is reachable the base is built locally and passed in (scripts/images.sh)."""
    text = dockerfile.read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+$", text, flags=re.M)
    assert all(s.splitlines()[0].split()[1] == "${BASE_IMAGE}" for s in _stages(text))


def test_gpu_image_final_stage_can_compile_triton_kernels_and_pins_versions():
    """The GPU image cannot be built here (no CUDA): this is its static check. Triton compiles
    kernels at run time, so the final stage needs a C compiler and the Python headers; vllm, torch
    and transformers are pinned to exact versions; the final stage runs as a non-root user."""
    text = (ROOT / "images" / "gpu.Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text, flags=re.M))
    final = _stages(text)[-1]
    installs = " ".join(re.findall(r"apt-get install[^&]*", final))
    assert re.search(r"\b(gcc|build-essential|clang)\b", installs), installs
    assert re.search(r"\bpython3(\.\d+)?-dev\b", installs), installs
    assert re.search(r"\blibc6-dev\b|\bbuild-essential\b", installs), installs  # the compiler's C headers
    for pkg in ("vllm", "torch", "transformers"):
        pins = re.findall(rf'"{pkg}==([^"]+)"', text)
        assert pins, f"{pkg} is not pinned"
        for pin in pins:
            version = args.get(pin[2:-1]) if pin.startswith("${") else pin
            assert version and re.fullmatch(r"\d+(\.\d+)+", version), (pkg, pin, version)
    assert not re.search(r"(vllm|torch|transformers)\s*(>=|~=|<)", text)
    user = re.findall(r"^USER (\S+)", final, flags=re.M)[-1]
    assert user.split(":")[0] not in ("root", "0")
    assert "nvidia/cuda:" in args["BASE_IMAGE"]
    skaffold_vllm = next(
        a["docker"]["buildArgs"]["VLLM_VERSION"] for a in _effective("gpu")["build"]["artifacts"] if "gpu" in a["image"]
    )
    assert skaffold_vllm == args["VLLM_VERSION"]


def test_cpu_image_has_cpu_torch_and_group_zero_writable_dirs():
    text = (ROOT / "images" / "cpu.Dockerfile").read_text()
    assert "download.pytorch.org/whl/cpu" in text and '"torch==2.13.0+cpu"' in text and "psycopg2" in text
    final = _stages(text)[-1]
    for dockerfile_text in (final, _stages((ROOT / "images" / "gpu.Dockerfile").read_text())[-1]):
        assert "--gid 0" in dockerfile_text and "chmod -R g+rwX /cache /home/mpa" in dockerfile_text
        assert re.search(r"^USER 10001:0$", dockerfile_text, flags=re.M)
    assert "build-essential" not in final and "gcc" not in final  # nothing to compile at run time


def test_dockerignore_sends_only_what_the_images_copy():
    lines = [
        ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "**"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)
    assert not any(ln.startswith("!") and (".env" in ln or "secret" in ln.lower()) for ln in lines)
