"""The MPA stages: plain functions from typed inputs (paths/URIs, config) to typed outputs."""
