"""Kubeflow Pipelines: the MPA pipeline DAG, its thin components, compile/upload/run helpers.

- :mod:`mpa.orchestrate.kubeflow.components` — one lightweight component per step; each body imports
  :mod:`mpa.orchestrate.kubeflow.steps`, which calls the engine's stages (no stage logic in components).
- :mod:`mpa.orchestrate.kubeflow.pipeline` — the DAG: prepare → PA/PI fanned out over image shards
  (``dsl.ParallelFor``) → merge (``dsl.Collected``) → PL → evaluate before/after → register
  only if better (``dsl.If``). Resources, images, secrets and the model cache are compile-time
  settings (:mod:`mpa.orchestrate.kubeflow.settings`); run parameters map onto :class:`mpa.config.RunConfig`
  (:mod:`mpa.orchestrate.kubeflow.params`).
- :mod:`mpa.orchestrate.kubeflow.client` — compile, upload a pipeline version named after the git revision,
  run in an experiment, wait.

Importing this package does not import ``kfp``; the modules that need it import it.
"""
