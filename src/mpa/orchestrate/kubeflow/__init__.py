"""Kubeflow Pipelines, the library side: what the components call, the settings, the client.

The components and the pipeline themselves live outside the library, in ``components/`` and
``pipelines/training/mpa/`` (installed: ``mpa_kfp``); each component body calls one function here.

- :mod:`mpa.orchestrate.kubeflow.steps` — one plain function per component, on local paths
  (prepare the run spec, PA/PI on a shard, merge, PL, evaluate, gate, register); they sequence
  the stage entries of :mod:`mpa.stages`.
- :mod:`mpa.orchestrate.kubeflow.params` — the pipeline's run parameters → :class:`mpa.config.RunConfig`.
- :mod:`mpa.orchestrate.kubeflow.settings` — compile-time settings: images, resources, time limits,
  volumes, secrets, where the teacher runs.
- :mod:`mpa.orchestrate.kubeflow.client` — upload a version named after the git revision and the
  spec, run with a run config, follow and stop runs.

Importing this package does not import ``kfp``; the modules that need it import it.
"""
