"""MPA's Kubeflow Pipelines components, one folder each (``<category>/<name>/``: component.py,
metadata.yaml, README.md, tests/), as Kubeflow's components standard (KEP-913) lays them out.

Installed, this folder is ``mpa_kfp.components``. Every component is thin: its body imports
:mod:`mpa.orchestrate.kubeflow.steps` and calls one function; the image already holds ``mpa``.
"""
