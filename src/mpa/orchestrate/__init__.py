"""Ways of running the stages: they only sequence the stage entries (:mod:`mpa.stages`).

- :mod:`mpa.orchestrate.local` — ``mpa run``: every stage in-process under one run directory;
- :mod:`mpa.orchestrate.shards` — ``mpa run-shard`` / ``merge-shards``: PA/PI on one image shard;
- :mod:`mpa.orchestrate.baselines` — the paper's baselines (zero-shot, no-PI, few-shot);
- :mod:`mpa.orchestrate.kubeflow` — what the Kubeflow components call, the pipeline settings and client.
"""
