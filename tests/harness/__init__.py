"""Test harnesses that start real components (sshd test nodes, ...) for tests and benchmarks."""
