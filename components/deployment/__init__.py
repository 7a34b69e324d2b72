"""Deployment components of the MPA pipeline."""
