"""Data processing components of the MPA pipeline."""
