"""An example: a per-run teacher server around the tasks that use it, deleted by an exit handler."""

from kfp import dsl

from components.deployment.teacher_cleanup import teacher_cleanup
from components.deployment.teacher_server import teacher_server
from mpa.orchestrate.kubeflow.settings import DEFAULT_CPU_IMAGE


@dsl.component(base_image=DEFAULT_CPU_IMAGE, install_kfp_package=False)
def served_models(base_url: str) -> list:
    """The model names the server answers to (``GET <base_url>/models``)."""
    import json
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/models", timeout=30) as resp:
        return [m["id"] for m in json.load(resp)["data"]]


@dsl.pipeline(name="teacher-server-example")
def teacher_server_example(teacher: str = "Qwen/Qwen2-VL-7B-Instruct"):
    from mpa.orchestrate.kubeflow.teacher_server import TeacherServerSettings

    server = TeacherServerSettings().model_dump_json(exclude={"enabled"})
    cleanup = teacher_cleanup(run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER).set_caching_options(False)
    with dsl.ExitHandler(cleanup, name="with-teacher-server"):
        # never from the cache: a cached URL would name a server an earlier exit handler deleted
        started = teacher_server(model=teacher, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER, server=server)
        started.set_caching_options(False)
        served_models(base_url=started.output).set_caching_options(False)
