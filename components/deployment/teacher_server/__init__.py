from .component import teacher_server

__all__ = ["teacher_server"]
