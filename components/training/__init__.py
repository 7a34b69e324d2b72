"""Training components of the MPA pipeline."""
