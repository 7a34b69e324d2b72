from .component import teacher_cleanup

__all__ = ["teacher_cleanup"]
