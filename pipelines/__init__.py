"""MPA's Kubeflow pipelines, one folder each (``<category>/<name>/``: pipeline.py, the compiled
pipeline.yaml, metadata.yaml, README.md, settings/, params/, tests/). Installed: ``mpa_kfp.pipelines``."""
