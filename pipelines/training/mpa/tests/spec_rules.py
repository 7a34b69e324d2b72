"""Rules a compiled KFP pipeline spec must satisfy before a Kubeflow Pipelines backend (the Argo
driver and launcher, >= 2.15) runs it as intended — checked here as strictly as the backend would,
because ``kfp.local`` checks none of them. Each rule returns a list of problems (empty: fine), so a
test can show every problem at once and the same rules can be run against an older spec.

Input: the two YAML documents of a compiled pipeline (the pipeline spec and the Kubernetes
platform spec).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

CONDITION_REF = re.compile(r"inputs\.parameter_values\['([^']+)'\]")


def platform_executors(platform: dict) -> dict[str, dict]:
    return platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


def _dags(spec: dict) -> Iterator[tuple[str, dict, dict]]:
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
    for dag_name, dag_comp, dag in _dags(spec):
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
    for dag_name, _, dag in _dags(spec):
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
    for dag_name, _, dag in _dags(spec):
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


def named_resources(platform: dict) -> dict[str, dict[str, set[str]]]:
    """What the spec expects in the namespace: ``{"Secret": {name: keys}, "ConfigMap": ..., "PVC": ...}``."""
    found: dict[str, dict[str, set[str]]] = {"Secret": {}, "ConfigMap": {}, "PersistentVolumeClaim": {}}
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


def resource_problems(platform: dict, available: dict[str, dict[str, set[str]]], where: str) -> list[str]:
    """Every Secret, ConfigMap and PVC the spec names (with every key it reads) exists in ``available``."""
    out = []
    for kind, names in named_resources(platform).items():
        for name, keys in names.items():
            if name not in available.get(kind, {}):
                out.append(f"{kind} {name} is not in {where}")
            elif kind != "PersistentVolumeClaim" and keys - available[kind][name]:
                out.append(f"{kind} {name} in {where} lacks keys {sorted(keys - available[kind][name])}")
    return out


def image_repository(image: str) -> str:
    """``ghcr.io/org/mpa-cpu:1.0`` / ``...@sha256:...`` → ``mpa-cpu`` (what skaffold names the artifact)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def image_problems(spec: dict, built: set[str]) -> list[str]:
    """Every image the spec runs is one that skaffold builds (matched by repository name)."""
    out = []
    for label, ex in spec["deploymentSpec"]["executors"].items():
        image = ex.get("container", {}).get("image", "")
        if image_repository(image) not in built:
            out.append(f"{label} runs {image}, which skaffold.yaml does not build ({', '.join(sorted(built))})")
    return out


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
