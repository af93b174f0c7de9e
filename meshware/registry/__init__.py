"""Registry backends: etcd (the default) and an in-memory one for the fake mesh."""

from .base import Registry, Watch
from .memory import MemoryRegistry

__all__ = ["MemoryRegistry", "Registry", "Watch"]
