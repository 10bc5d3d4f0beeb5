"""Jobs, the SSH connector, per-service renderers and operations, converge and backups."""
