"""mpa — Model Parity Aligner: label-free alignment of a small VLM to a large one."""

from mpa import _torchvision_compat

_torchvision_compat.install()

__version__ = "0.1.0"
