"""Job handlers of replication (loaded by :func:`ums.jobs.load_handlers`)."""

from .failover import failback, failover, sync_job

__all__ = ["failback", "failover", "sync_job"]
