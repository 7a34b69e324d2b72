"""Evaluation components of the MPA pipeline."""
