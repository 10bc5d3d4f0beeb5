"""Job handlers of the cloud database (loaded by :func:`ums.jobs.load_handlers`)."""

from .failover import failover

__all__ = ["failover"]
