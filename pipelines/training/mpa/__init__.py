"""The MPA pipeline: PA -> PI -> PL -> evaluate -> register (see README.md)."""
