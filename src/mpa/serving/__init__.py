"""Serving the aligned student: the MLflow Model written beside PL's checkpoint (:mod:`mpa.serving.mlmodel`)."""
