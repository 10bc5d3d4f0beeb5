"""The embedded default of ``make run``: a PostgreSQL from a wheel, the supervisor that
starts and stops everything, and the task runner that replaces Celery without a broker."""
