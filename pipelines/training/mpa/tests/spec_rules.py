"""Rules a compiled KFP pipeline spec must satisfy before a Kubeflow Pipelines backend (the Argo
driver and launcher, >= 2.15) runs it as intended — checked here as strictly as the backend would,
because ``kfp.local`` checks none of them. Each rule returns a list of problems (empty: fine), so a
test can show every problem at once and the same rules can be run against an older spec.

Input: the two YAML documents of a compiled pipeline (the pipeline spec and the Kubernetes
platform spec).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

CONDITION_REF = re.compile(r"inputs\.parameter_values\['([^']+)'\]")
EXIT_STRATEGY = "ALL_UPSTREAM_TASKS_COMPLETED"  # how an exit handler's task compiles: it runs after failures too
RUN_ID = "{{$.pipeline_job_uuid}}"  # dsl.PIPELINE_JOB_ID_PLACEHOLDER, resolved by the driver


def platform_executors(platform: dict) -> dict[str, dict]:
    return platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def dags(spec: dict) -> Iterator[tuple[str, dict, dict]]:
    """``(name, component, dag)`` for the root and every DAG component."""
    yield "root", spec["root"], spec["root"]["dag"]
    for name, comp in spec.get("components", {}).items():
        if "dag" in comp:
            yield name, comp, comp["dag"]


def _params(comp: dict, side: str) -> dict:
    return comp.get(f"{side}Definitions", {}).get("parameters", {})


def _artifacts(comp: dict, side: str) -> dict:
    return comp.get(f"{side}Definitions", {}).get("artifacts", {})


CONSTANT_TYPES = {str: "STRING", bool: "BOOLEAN", dict: "STRUCT", list: "LIST"}


def _constant_type(value: Any) -> set[str]:
    if isinstance(value, bool):
        return {"BOOLEAN"}
    if isinstance(value, int):
        return {"NUMBER_INTEGER", "NUMBER_DOUBLE"}
    if isinstance(value, float):
        return {"NUMBER_DOUBLE"} | ({"NUMBER_INTEGER"} if value.is_integer() else set())
    return {CONSTANT_TYPES.get(type(value), "?")}


def _producer_output(tasks: dict, comps: dict, ref: dict, key: str, outputs_of: Callable, where: str,
                     dag_name: str) -> tuple[dict | None, str | None]:
    """The output a ``taskOutput*`` reference names, or the problem with the reference."""
    producer = tasks.get(ref["producerTask"])
    if producer is None:
        return None, f"{where}: producer task {ref['producerTask']!r} is not in {dag_name}"
    outputs = outputs_of(comps[producer["componentRef"]["name"]], "output")
    if ref[key] not in outputs:
        return None, f"{where}: {ref['producerTask']} has no output {ref[key]!r}"
    return outputs[ref[key]], None


def type_problems(spec: dict) -> list[str]:
    """Parameter and artifact types agree along every edge: pipeline/DAG inputs → task inputs, loop
    items → task inputs, task outputs → task inputs, constants → task inputs, DAG outputs → their
    producers; every required input is bound; every named output is declared."""
    comps = spec.get("components", {})
    out: list[str] = []
    for dag_name, dag_comp, dag in dags(spec):
        tasks = dag.get("tasks", {})
        for task_name, task in tasks.items():
            where = f"{dag_name}/{task_name}"
            comp = comps.get(task["componentRef"]["name"])
            if comp is None:
                out.append(f"{where}: component {task['componentRef']['name']} is not defined")
                continue
            declared_p, declared_a = _params(comp, "input"), _artifacts(comp, "input")
            bound_p = task.get("inputs", {}).get("parameters", {})
            bound_a = task.get("inputs", {}).get("artifacts", {})
            for name, binding in bound_p.items():
                want = declared_p.get(name, {}).get("parameterType")
                if want is None:
                    out.append(f"{where}: binds parameter {name!r} the component does not declare")
                    continue
                if "componentInputParameter" in binding:
                    src = binding["componentInputParameter"]
                    have = _params(dag_comp, "input").get(src, {}).get("parameterType")
                    if have is None:
                        out.append(f"{where}.{name}: {dag_name} has no input parameter {src!r}")
                    elif have != want:
                        out.append(f"{where}.{name}: declared {want}, gets {have} from {dag_name} input {src!r}")
                elif "taskOutputParameter" in binding:
                    ref = binding["taskOutputParameter"]
                    output, problem = _producer_output(tasks, comps, ref, "outputParameterKey", _params,
                                                       f"{where}.{name}", dag_name)
                    if problem:
                        out.append(problem)
                    elif output["parameterType"] != want:
                        out.append(f"{where}.{name}: declared {want}, gets {output['parameterType']} "
                                   f"from {ref['producerTask']}")
                elif "runtimeValue" in binding:
                    value = binding["runtimeValue"].get("constant")
                    if want not in _constant_type(value):
                        out.append(f"{where}.{name}: declared {want}, gets the constant {value!r}")
            item = task.get("parameterIterator", {}).get("itemInput")  # bound by the loop itself
            for name, spec_p in declared_p.items():
                required = not spec_p.get("isOptional") and "defaultValue" not in spec_p
                if required and name not in bound_p and name != item:
                    out.append(f"{where}: required parameter {name!r} is not bound")
            for name, binding in bound_a.items():
                want_a = declared_a.get(name)
                if want_a is None:
                    out.append(f"{where}: binds artifact {name!r} the component does not declare")
                    continue
                if "taskOutputArtifact" in binding:
                    have_a, problem = _producer_output(tasks, comps, binding["taskOutputArtifact"],
                                                       "outputArtifactKey", _artifacts, f"{where}.{name}", dag_name)
                    if problem:
                        out.append(problem)
                        continue
                    if have_a["artifactType"]["schemaTitle"] != want_a["artifactType"]["schemaTitle"]:
                        out.append(f"{where}.{name}: {want_a['artifactType']['schemaTitle']} gets "
                                   f"{have_a['artifactType']['schemaTitle']}")
                    if bool(have_a.get("isArtifactList")) != bool(want_a.get("isArtifactList")):
                        out.append(f"{where}.{name}: a list of artifacts on one side only")
                elif "componentInputArtifact" in binding:
                    have_a = _artifacts(dag_comp, "input").get(binding["componentInputArtifact"])
                    if have_a is None:
                        out.append(f"{where}.{name}: {dag_name} has no input artifact "
                                   f"{binding['componentInputArtifact']!r}")
                    elif have_a["artifactType"]["schemaTitle"] != want_a["artifactType"]["schemaTitle"]:
                        out.append(f"{where}.{name}: {want_a['artifactType']['schemaTitle']} gets "
                                   f"{have_a['artifactType']['schemaTitle']}")
            for name, spec_a in declared_a.items():
                if name not in bound_a and not spec_a.get("isOptional"):
                    out.append(f"{where}: required artifact {name!r} is not bound")
            iterator = task.get("parameterIterator")
            if iterator:
                items = iterator["items"].get("inputParameter")
                loop_in = _params(comp, "input")
                if loop_in.get(items, {}).get("parameterType") != "LIST":
                    out.append(f"{where}: loop items {items!r} are not a LIST input of the loop")
                if iterator.get("itemInput") not in loop_in:
                    out.append(f"{where}: loop item {iterator.get('itemInput')!r} is not an input of the loop")
        for key, sel in dag.get("outputs", {}).get("artifacts", {}).items():
            for s in sel.get("artifactSelectors", []):
                producer = tasks.get(s["producerSubtask"])
                if producer is None:
                    out.append(f"{dag_name} output {key!r}: producer {s['producerSubtask']!r} is not in the DAG")
                    continue
                if s["outputArtifactKey"] not in _artifacts(comps[producer["componentRef"]["name"]], "output"):
                    out.append(f"{dag_name} output {key!r}: {s['producerSubtask']} has no {s['outputArtifactKey']!r}")
    return out


def reference_problems(spec: dict) -> list[str]:
    """Every Collected output and If condition resolves to an existing producer and output. A task
    whose outputs are collected out of a loop must keep its display name equal to its task name:
    the driver looks the producer of a collected output up by display name, so
    ``ParallelFor(name=...)`` next to ``dsl.Collected`` fails at run time."""
    comps = spec.get("components", {})
    out: list[str] = []
    for dag_name, _, dag in dags(spec):
        tasks = dag.get("tasks", {})
        for task_name, task in tasks.items():
            for name, binding in task.get("inputs", {}).get("artifacts", {}).items():
                ref = binding.get("taskOutputArtifact")
                if not ref or ref["producerTask"] not in tasks:
                    continue
                producer = tasks[ref["producerTask"]]
                pcomp = comps[producer["componentRef"]["name"]]
                if "dag" not in pcomp:
                    continue  # a plain task output, checked with the types
                display = producer.get("taskInfo", {}).get("name")
                if display != ref["producerTask"]:
                    out.append(f"{dag_name}/{task_name}.{name} collects from {ref['producerTask']!r}, whose display "
                               f"name is {display!r}: the driver finds no producer of that name")
                if ref["outputArtifactKey"] not in pcomp.get("dag", {}).get("outputs", {}).get("artifacts", {}):
                    out.append(f"{dag_name}/{task_name}.{name}: the loop does not output {ref['outputArtifactKey']!r}")
            condition = task.get("triggerPolicy", {}).get("condition")
            if condition:
                refs = CONDITION_REF.findall(condition)
                if not refs:
                    out.append(f"{dag_name}/{task_name}: condition {condition!r} names no input")
                bound = task.get("inputs", {}).get("parameters", {})
                for r in refs:
                    ref = bound.get(r, {}).get("taskOutputParameter")
                    if r not in bound:
                        out.append(f"{dag_name}/{task_name}: condition reads {r!r}, which the task does not bind")
                    elif ref and ref["producerTask"] not in tasks:
                        out.append(f"{dag_name}/{task_name}: condition input {r!r} comes from missing task "
                                   f"{ref['producerTask']!r}")
    return out


def _executor_of(spec: dict, task: dict) -> str | None:
    comp = spec.get("components", {}).get(task["componentRef"]["name"], {})
    return comp.get("executorLabel")


def _seconds(duration: str | None) -> float:
    return float(str(duration).rstrip("s")) if duration else 0.0


def retry_problems(spec: dict, platform: dict) -> list[str]:
    """Every task has a deadline (``activeDeadlineSeconds``), and no retry policy caps a task: Argo
    applies ``backoffMaxDuration`` from the first attempt on as the pod's deadline, so it must cover
    every attempt at its full timeout plus the backoffs between them."""
    executors = platform_executors(platform)
    out: list[str] = []
    for dag_name, _, dag in dags(spec):
        for task_name, task in dag.get("tasks", {}).items():
            label = _executor_of(spec, task)
            if label is None:
                continue  # a DAG (loop, condition)
            timeout = executors.get(label, {}).get("activeDeadlineSeconds")
            if not timeout:
                out.append(f"{dag_name}/{task_name}: no timeout (activeDeadlineSeconds)")
            policy = task.get("retryPolicy")
            if not policy:
                continue
            n = int(policy.get("maxRetryCount", 0))
            backoff, factor = _seconds(policy.get("backoffDuration")), float(policy.get("backoffFactor", 2.0))
            window = (n + 1) * float(timeout or 0) + sum(backoff * factor**i for i in range(n))
            cap = _seconds(policy.get("backoffMaxDuration"))
            if not timeout:
                out.append(f"{dag_name}/{task_name}: backoffMaxDuration {cap:.0f}s is the deadline of {n + 1} attempts "
                           "that have no timeout of their own: a long attempt is killed and never retried")
            elif cap < window:
                out.append(f"{dag_name}/{task_name}: backoffMaxDuration {cap:.0f}s caps {n + 1} attempts of "
                           f"{timeout} s each (needs >= {window:.0f}s)")
    return out


def named_resources(platform: dict, spec: dict | None = None) -> dict[str, dict[str, set[str]]]:
    """What the spec expects in the namespace: ``{"Secret": {name: keys}, "ConfigMap": ..., "PVC": ...}``,
    with ``spec`` also what each per-run teacher server's Deployment names (Secrets, PVC, ServiceAccount)."""
    found: dict[str, dict[str, set[str]]] = {"Secret": {}, "ConfigMap": {}, "PersistentVolumeClaim": {},
                                             "ServiceAccount": {}}
    for server in teacher_servers(spec) if spec is not None else []:
        for key, secret_key in (("hf_token_secret", "HF_TOKEN"), ("api_key_secret", "OPENAI_API_KEY")):
            if server.get(key):
                found["Secret"].setdefault(server[key], set()).add(secret_key)
        if server.get("model_cache_pvc"):
            found["PersistentVolumeClaim"].setdefault(server["model_cache_pvc"], set())
        if server.get("service_account"):
            found["ServiceAccount"].setdefault(server["service_account"], set())
    for ex in platform_executors(platform).values():
        for s in ex.get("secretAsEnv", []):
            found["Secret"].setdefault(s["secretName"], set()).update(k["secretKey"] for k in s.get("keyToEnv", []))
        for s in ex.get("secretAsVolume", []):
            found["Secret"].setdefault(s["secretName"], set())
        for s in ex.get("imagePullSecret", []):
            found["Secret"].setdefault(s["secretName"], set())
        for c in ex.get("configMapAsEnv", []):
            found["ConfigMap"].setdefault(c["configMapName"], set()).update(
                k["configMapKey"] for k in c.get("keyToEnv", []))
        for c in ex.get("configMapAsVolume", []):
            found["ConfigMap"].setdefault(c["configMapName"], set())
        for p in ex.get("pvcMount", []):
            name = p.get("constant") or p.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant")
            if name:
                found["PersistentVolumeClaim"].setdefault(name, set())
    return found


def resource_problems(platform: dict, available: dict[str, dict[str, set[str]]], where: str,
                      spec: dict | None = None) -> list[str]:
    """Every Secret, ConfigMap, PVC and ServiceAccount the spec names (with every key it reads) exists in
    ``available`` (with ``spec``: also what a per-run teacher server names)."""
    out = []
    for kind, names in named_resources(platform, spec).items():
        for name, keys in names.items():
            if name not in available.get(kind, {}):
                out.append(f"{kind} {name} is not in {where}")
            elif kind in ("Secret", "ConfigMap") and keys - available[kind][name]:
                out.append(f"{kind} {name} in {where} lacks keys {sorted(keys - available[kind][name])}")
    return out


def image_repository(image: str) -> str:
    """``ghcr.io/org/mpa-cpu:1.0`` / ``...@sha256:...`` / ``ghcr.io/org/mpa-cpu`` → ``mpa-cpu``: the name a
    compile's image and a skaffold artifact share whatever registry either names."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def image_problems(spec: dict, built: set[str]) -> list[str]:
    """Every image the spec runs (and every per-run teacher server's) is one that skaffold builds (matched
    by repository name)."""
    executors = spec["deploymentSpec"]["executors"]
    images = [(label, ex.get("container", {}).get("image", "")) for label, ex in executors.items()]
    images += [("the teacher server", server.get("image", "")) for server in teacher_servers(spec)]
    repositories = {image_repository(b) for b in built}  # skaffold's names may carry a registry (--default-repo)
    return [f"{label} runs {image}, which skaffold.yaml does not build ({', '.join(sorted(built))})"
            for label, image in images if image_repository(image) not in repositories]


def gpu_problems(spec: dict, platform: dict, runs_model: Callable[[str], bool]) -> list[str]:
    """GPUs are requested only where a model runs in the pod (the stage from the ``mpa/stage`` label)."""
    executors = platform_executors(platform)
    out = []
    for label, ex in spec["deploymentSpec"]["executors"].items():
        acc = ex.get("container", {}).get("resources", {}).get("accelerator", {})
        count = int(acc.get("resourceCount", acc.get("count", 0)) or 0)
        if not count:
            continue
        stage = executors.get(label, {}).get("podMetadata", {}).get("labels", {}).get("mpa/stage")
        if stage is None or not runs_model(stage):
            out.append(f"{label} ({stage}) requests {count} GPU(s) but runs no model in its pod")
    return out


# --- exit handlers and the per-run teacher server -------------------------------------------------


def _stage(spec: dict, platform: dict, task: dict) -> str | None:
    label = _executor_of(spec, task)
    return platform_executors(platform).get(label or "", {}).get("podMetadata", {}).get("labels", {}).get("mpa/stage")


def _constant(task: dict, name: str) -> Any:
    return task.get("inputs", {}).get("parameters", {}).get(name, {}).get("runtimeValue", {}).get("constant")


def _server_tasks(spec: dict) -> Iterator[tuple[str, dict, str, dict]]:
    """``(dag name, dag, task name, task)`` of every task that starts a per-run teacher server."""
    for dag_name, _, dag in dags(spec):
        for name, task in dag.get("tasks", {}).items():
            if task["componentRef"]["name"].startswith("comp-teacher-server"):
                yield dag_name, dag, name, task


def teacher_servers(spec: dict) -> list[dict]:
    """The settings (``TeacherServerSettings`` as the compiled JSON constant) of every per-run teacher server."""
    out = []
    for _, _, _, task in _server_tasks(spec):
        value = _constant(task, "server")
        out.append(json.loads(value) if isinstance(value, str) else {})
    return out


def exit_handler_problems(spec: dict) -> list[str]:
    """Every exit task (``ALL_UPSTREAM_TASKS_COMPLETED``) is a container task waiting for exit-handler groups
    (DAG tasks) of its own DAG, so the backend runs it once the group ends, whether it succeeded or not."""
    comps = spec.get("components", {})
    out = []
    for dag_name, _, dag in dags(spec):
        tasks = dag.get("tasks", {})
        for name, task in tasks.items():
            if task.get("triggerPolicy", {}).get("strategy") != EXIT_STRATEGY:
                continue
            where = f"{dag_name}/{name}"
            if "dag" in comps.get(task["componentRef"]["name"], {}):
                out.append(f"{where}: an exit task must be a container task, not a DAG")
            deps = task.get("dependentTasks", [])
            if not deps:
                out.append(f"{where}: an exit task that waits for nothing runs at once")
            for dep in deps:
                if dep not in tasks:
                    out.append(f"{where}: waits for {dep!r}, which is not in {dag_name}")
                elif "dag" not in comps.get(tasks[dep]["componentRef"]["name"], {}):
                    out.append(f"{where}: waits for {dep!r}, a plain task, not an exit-handler group")
    return out


def _task_named(spec: dict, component: str) -> list[tuple[str, dict, str, dict]]:
    """``(dag name, dag, task name, task)`` of every task running ``component``."""
    return [(dag_name, dag, name, task) for dag_name, _, dag in dags(spec)
            for name, task in dag.get("tasks", {}).items() if task["componentRef"]["name"] == component]


def _retry_problems(platform: dict, where: str, loop_tasks: dict, server: Any) -> list[str]:
    """A KFP Retry re-runs a failed PA/PI but keeps the succeeded exit handler, which deleted the server: PA and
    PI get the server's settings (the same JSON as the server task) and model, so they find it or create it
    again, and the run's id from the pod's ``pipeline/runid`` label as ``MPA_RUN_ID`` (an environment
    variable, in no cache key), so the server is marked for this run and its cleanups delete it."""
    out = []
    executors = platform_executors(platform)
    for name in ("annotate", "identify"):
        task = loop_tasks.get(name, {})
        bound = task.get("inputs", {}).get("parameters", {})
        if _constant(task, "teacher_server") != server:
            out.append(f"{where}: {name} does not get the server's settings as teacher_server: a retried {name} "
                       "cannot create the server the failed attempt's exit handler deleted")
        if "teacher_model" not in bound:
            out.append(f"{where}: {name} does not get teacher_model: a retried {name} cannot create the server again")
        env = {e.get("name"): e.get("fieldPath") for e in executors.get(f"exec-{name}", {}).get("fieldPathAsEnv", [])}
        if env.get("MPA_RUN_ID") != "metadata.labels['pipeline/runid']":
            out.append(f"{where}: exec-{name} has no MPA_RUN_ID from the pod's pipeline/runid label: a server it "
                       "creates again is not marked for the run, and no cleanup of the run deletes it")
    return out


def teacher_server_problems(spec: dict, platform: dict) -> list[str]:
    """Every per-run teacher server is deleted as soon as merge is done and whatever happens, and only PA/PI
    call it: its task sits in an exit-handler group whose exit task runs ``teacher_cleanup`` for the same run
    id (the run's own, resolved by the driver), and a ``teacher_cleanup`` task in the same group waits for
    merge; neither is ever served from the cache (a cached URL names a server an earlier run deleted);
    annotate and identify take the server's URL (``teacher_url``) and no other task does; prepare takes
    ``teacher_backend`` openai, the server's served name and ``teacher_openai_allow_plain_http`` (the URL is
    plain http inside the cluster) but not the URL (the run spec, read by every later task, stays the same
    from run to run)."""
    parents = {t["componentRef"]["name"]: (dag_name, dag, name)
               for dag_name, _, dag in dags(spec) for name, t in dag.get("tasks", {}).items()}
    comps = spec.get("components", {})
    out = []
    for dag_name, dag, name, task in _server_tasks(spec):
        where = f"{dag_name}/{name}"
        run_id = _constant(task, "run_id")
        if run_id != RUN_ID:
            out.append(f"{where}: run_id is {run_id!r}, not the run's id {RUN_ID}")
        if task.get("cachingOptions", {}).get("enableCache"):
            out.append(f"{where}: served from the cache, it would hand out a deleted server's URL")
        group = parents.get(dag_name)
        exits = [] if group is None else [
            t for t in group[1].get("tasks", {}).values()
            if t.get("triggerPolicy", {}).get("strategy") == EXIT_STRATEGY and group[2] in t.get("dependentTasks", [])]
        cleanups = [t for t in exits if _stage(spec, platform, t) == "teacher_cleanup"]
        if not cleanups:
            out.append(f"{where}: not inside an exit handler whose exit task runs teacher_cleanup: a failed run "
                       "leaves the GPU Deployment running")
        tasks = dag.get("tasks", {})
        early = [t for t in tasks.values() if _stage(spec, platform, t) == "teacher_cleanup"
                 and t.get("triggerPolicy", {}).get("strategy") != EXIT_STRATEGY]
        merges = [n for n, t in tasks.items() if t["componentRef"]["name"] == "comp-merge"]
        if not merges or not any(set(merges) <= set(t.get("dependentTasks", [])) for t in early):
            out.append(f"{where}: no teacher_cleanup task waits for merge in {dag_name}: the teacher's GPU idles "
                       "through PL, evaluation and the rounds until the exit handler deletes it")
        for cleanup in cleanups + early:
            if _constant(cleanup, "run_id") != run_id:
                out.append(f"{where}: teacher_cleanup deletes run {_constant(cleanup, 'run_id')!r}, the server is "
                           f"labelled {run_id!r}")
            if cleanup.get("cachingOptions", {}).get("enableCache"):
                out.append(f"{where}: its teacher_cleanup may be served from the cache and delete nothing")
        url = {"producerTask": name, "outputParameterKey": "Output"}
        callers = []
        for other, t in tasks.items():
            bound = t.get("inputs", {}).get("parameters", {})
            takes = [k for k, b in bound.items() if b.get("taskOutputParameter") == url]
            if not takes:
                continue
            body = comps[t["componentRef"]["name"]].get("dag", {}).get("tasks", {})
            inner = {n: b.get("teacher_url", {}).get("componentInputParameter")
                     for n, b in ((n, x.get("inputs", {}).get("parameters", {})) for n, x in body.items())}
            if "parameterIterator" in t and {"annotate", "identify"} <= set(inner) and \
                    {inner["annotate"], inner["identify"]} <= set(takes):
                callers.append(other)
                out += _retry_problems(platform, where, body, _constant(task, "server"))
            else:
                out.append(f"{where}: {other} takes the server's URL: only PA/PI may call the teacher, which is "
                           "deleted once merge is done")
        if not callers:
            out.append(f"{where}: annotate and identify (in the shard loop) do not take the server's URL "
                       "as teacher_url")
        served = json.loads(_constant(task, "server") or "{}")
        prepares = _task_named(spec, "comp-prepare")
        if len(prepares) != 1:
            out.append(f"{where}: {len(prepares)} prepare tasks")
            continue
        prepare = prepares[0][3]
        if "teacher_openai_base_url" in prepare.get("inputs", {}).get("parameters", {}):
            out.append(f"{where}: prepare takes teacher_openai_base_url: a per-run URL in the run spec changes every "
                       "later cache key, and a retried run reads a URL of a deleted server")
        if _constant(prepare, "teacher_backend") != "openai":
            out.append(f"{where}: prepare's teacher_backend is {_constant(prepare, 'teacher_backend')!r}, not openai")
        if _constant(prepare, "teacher_openai_allow_plain_http") is not True:
            out.append(f"{where}: prepare does not allow the API key to the server's in-cluster http:// URL "
                       "(teacher_openai_allow_plain_http): PA refuses to send it")
        if _constant(prepare, "teacher_served_name") != served.get("served_name", "teacher"):
            out.append(f"{where}: prepare's teacher_served_name {_constant(prepare, 'teacher_served_name')!r} is not "
                       f"the server's --served-model-name {served.get('served_name', 'teacher')!r}")
    return out


# --- what happens after the spec is accepted: volumes, rounds, nulls, the teacher, cache keys, images -----


def _executor_env(spec: dict, label: str) -> dict[str, str]:
    env = spec["deploymentSpec"]["executors"].get(label, {}).get("container", {}).get("env", [])
    return {e["name"]: e.get("value", "") for e in env}


def volume_problems(spec: dict, platform: dict, prepared: dict[str, str]) -> list[str]:
    """Every volume a pod writes is writable by the pod's non-root user on a fresh disk: no generic ephemeral
    volume (a fresh claim is ``root:root 0755`` and KFP cannot set fsGroup); every emptyDir has a size limit;
    a PVC only where it has a prepare path — ``prepared`` maps its name to the environment variable through
    which the pod's code finds it (and falls back, with one log line, when it is not writable)."""
    out = []
    for label, ex in platform_executors(platform).items():
        for vol in ex.get("genericEphemeralVolume", []):
            out.append(f"{label}: generic ephemeral volume {vol.get('volumeName')!r} at {vol.get('mountPath')}: "
                       "a fresh claim is root-owned and KFP cannot set fsGroup, so uid 10001 cannot write it "
                       "(use an emptyDir)")
        for vol in ex.get("emptyDirMounts", []):
            if not vol.get("sizeLimit"):
                out.append(f"{label}: emptyDir {vol.get('volumeName')!r} has no size limit")
        env = _executor_env(spec, label)
        for pvc in ex.get("pvcMount", []):
            name = pvc.get("constant") or pvc.get("pvcNameParameter", {}).get("runtimeValue", {}).get("constant")
            var = prepared.get(name or "")
            if var is None:
                out.append(f"{label}: PVC {name!r} at {pvc.get('mountPath')} has no prepare path: a fresh volume is "
                           "root-owned")
            elif env.get(var) != pvc.get("mountPath"):
                out.append(f"{label}: PVC {name!r} is mounted at {pvc.get('mountPath')} but {var} does not name it: "
                           "the code's fallback for an unwritable volume never sees it")
    return out


_CEL_PARAM = re.compile(r"int\(inputs\.parameter_values\['([^']+)'\]\)|inputs\.parameter_values\['([^']+)'\]")


def _eval_condition(condition: str, values: dict[str, Any]) -> bool | None:
    """A compiled ``dsl.If`` condition (the CEL subset the KFP compiler writes) evaluated with ``values``;
    None when it reads an input not in ``values`` (decided only at run time)."""
    names = [a or b for a, b in _CEL_PARAM.findall(condition)]
    if any(n not in values for n in names):
        return None
    expr = _CEL_PARAM.sub(lambda m: repr(values[m.group(1) or m.group(2)]), condition)
    expr = expr.replace("&&", " and ").replace("||", " or ").replace("!(", " not (")
    expr = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", expr))
    return bool(eval(expr, {"__builtins__": {}}, {"int": int}))  # noqa: S307 — the compiler's own expression


def _reachable(spec: dict, values_of: Callable[[str], Any]) -> Iterator[tuple[str, str, dict, bool]]:
    """``(dag name, task name, task, surely)`` of every container task that may run, where each condition
    input named ``pipelinechannel--<x>`` takes ``values_of(x)`` (None: unknown at compile time; a condition
    on it may go either way, ``surely`` becomes False)."""
    comps = spec.get("components", {})

    def walk(dag_name: str, dag: dict, surely: bool) -> Iterator[tuple[str, str, dict, bool]]:
        for name, task in dag.get("tasks", {}).items():
            condition = task.get("triggerPolicy", {}).get("condition")
            here = surely
            if condition:
                values = {n: values_of(n.removeprefix("pipelinechannel--"))
                          for a, b in _CEL_PARAM.findall(condition) for n in [a or b]}
                decided = _eval_condition(condition, {k: v for k, v in values.items() if v is not None})
                if decided is False:
                    continue
                here = surely and decided is True
            comp = comps[task["componentRef"]["name"]]
            if "dag" in comp:
                yield from walk(task["componentRef"]["name"], comp["dag"], here)
            else:
                yield dag_name, name, task, here

    yield from walk("root", spec["root"]["dag"], True)


def compiled_max_rounds(spec: dict) -> int:
    return int(_executor_env(spec, "exec-prepare").get("MPA_MAX_ROUNDS", "1"))


def round_problems(spec: dict) -> list[str]:
    """A round nobody asked for starts no pod: for every ``rounds`` R the run may ask for (1..the compiled
    max_rounds), round task r runs iff r <= R — decided by ``dsl.If`` conditions on prepare's resolved
    ``rounds`` (an output, never null) — and exactly one gate runs, on the score of round R's student."""
    out = []
    for asked in range(1, compiled_max_rounds(spec) + 1):
        def value(name: str, asked: int = asked) -> Any:
            return asked if name == "prepare-resolved_rounds" else None

        runs = list(_reachable(spec, value))
        rounds = {int(_constant(t, "round_number")): (n, sure) for _, n, t, sure in runs
                  if t["componentRef"]["name"].startswith("comp-mpa-round")}
        for r, (name, sure) in sorted(rounds.items()):
            if r > asked:
                out.append(f"{name} (round {r}) starts a GPU pod when the run asks for rounds={asked}")
            elif not sure:
                out.append(f"{name} (round {r}) may not run when the run asks for rounds={asked}")
        for r in range(2, asked + 1):
            if r not in rounds:
                out.append(f"no round-{r} task runs when the run asks for rounds={asked}")
        gates = [(n, t) for _, n, t, sure in runs if t["componentRef"]["name"].startswith("comp-gate") and sure]
        if len(gates) != 1:
            out.append(f"rounds={asked}: {len(gates)} gate tasks run (want exactly one)")
            continue
        src = gates[0][1]["inputs"]["parameters"]["score_after"]
        producer = src.get("taskOutputParameter", {}).get("producerTask") or \
            src.get("componentInputParameter", "").removeprefix("pipelinechannel--").rsplit("-", 1)[0]
        want = rounds.get(asked, ("evaluate-checkpoint", True))[0]
        if producer != want:
            out.append(f"rounds={asked}: the gate reads the score of {producer}, not of round {asked}'s student "
                       f"({want})")
    return out


def nullable_input_problems(spec: dict) -> list[str]:
    """The driver's null check (kubeflow/pipelines#11957): an optional run parameter left unset reaches the
    root DAG as null, and the driver fails any task or sub-DAG (ExitHandler, If, ParallelFor group) whose
    input resolves to null unless that input is ``isOptional``. Follows every optional run parameter without
    a default down the DAGs."""
    comps = spec.get("components", {})
    root_inputs = _params(spec["root"], "input")
    nullable = {n for n, d in root_inputs.items() if d.get("isOptional") and "defaultValue" not in d}
    out: list[str] = []

    def walk(dag_name: str, dag: dict, nullable: set[str]) -> None:
        for name, task in dag.get("tasks", {}).items():
            comp = comps[task["componentRef"]["name"]]
            declared = _params(comp, "input")
            fed = {param for param, b in task.get("inputs", {}).get("parameters", {}).items()
                   if b.get("componentInputParameter") in nullable}
            for param in sorted(fed):
                if not declared.get(param, {}).get("isOptional"):
                    kind = "sub-DAG" if "dag" in comp else "task"
                    out.append(f"{dag_name}/{name}: {kind} input {param!r} gets an optional run parameter that is null "
                               "when unset, and is not optional: the driver stops the run")
            if "dag" in comp:
                walk(task["componentRef"]["name"], comp["dag"], fed)

    walk("root", spec["root"]["dag"], nullable)
    return out


RUN_SPECIFIC = ("{{$.pipeline_job_uuid}}", "{{$.pipeline_job_name}}", "{{$.pipeline_task_uuid}}",
                "{{$.pipeline_task_name}}", "{{$.pipeline_job_create_time_utc}}",
                "{{$.pipeline_job_schedule_time_utc}}")


def cache_key_problems(spec: dict) -> list[str]:
    """Nothing run-specific enters a cache key: no cached task takes a run-specific placeholder (the run's id or
    name, a task id, a time), directly or through a DAG input; and prepare — whose run spec every later task
    reads — takes run parameters and constants only (no task's output: a per-run server's URL there would
    change every key downstream on every run)."""
    comps = spec.get("components", {})
    out: list[str] = []

    def walk(dag_name: str, dag: dict, run_specific: set[str], from_tasks: set[str]) -> None:
        for name, task in dag.get("tasks", {}).items():
            comp = comps[task["componentRef"]["name"]]
            bound = task.get("inputs", {}).get("parameters", {})
            specific = {p for p, b in bound.items() if b.get("componentInputParameter") in run_specific
                        or any(ph in str(b.get("runtimeValue", {}).get("constant", "")) for ph in RUN_SPECIFIC)}
            derived = {p for p, b in bound.items()
                       if "taskOutputParameter" in b or b.get("componentInputParameter") in from_tasks}
            if "dag" in comp:
                walk(task["componentRef"]["name"], comp["dag"], specific, derived)
                continue
            if specific and task.get("cachingOptions", {}).get("enableCache"):
                out.append(f"{dag_name}/{name}: cached, yet takes run-specific input(s) {sorted(specific)}: "
                           "its cache key changes on every run")
            if task["componentRef"]["name"] == "comp-prepare" and derived:
                out.append(f"{dag_name}/{name}: {sorted(derived)} come from other tasks, so the run spec (and every "
                           "later cache key) depends on them")

    walk("root", spec["root"]["dag"], set(), set())
    return out


def image_given_problems(spec: dict, gpu_image: str, cpu_image: str, server_image: str | None = None) -> list[str]:
    """The spec runs exactly the images the compile was given: every executor the GPU or the CPU image, every
    per-run teacher server ``server_image`` (default: the GPU image) — never a default tag nobody pushed."""
    out = [f"{label} runs {ex.get('container', {}).get('image')}, not the image the compile was given "
           f"({gpu_image} / {cpu_image})"
           for label, ex in spec["deploymentSpec"]["executors"].items()
           if ex.get("container", {}).get("image") not in (gpu_image, cpu_image)]
    want = server_image or gpu_image
    out += [f"the teacher server runs {s.get('image')}, not the image the compile was given ({want})"
            for s in teacher_servers(spec) if s.get("image") != want]
    return out
