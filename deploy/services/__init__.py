"""Per-service configuration: each sub-package renders files from plain data, validates a
staged copy with the service's own checker and reloads only when something changed."""
