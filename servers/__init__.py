"""Zones, nodes, roles, enrolment and bootstrap, host keys, metrics and node actions."""
