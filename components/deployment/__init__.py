"""Deployment components: the per-run teacher server and its cleanup."""

from .teacher_cleanup import teacher_cleanup
from .teacher_server import teacher_server

__all__ = ["teacher_cleanup", "teacher_server"]
