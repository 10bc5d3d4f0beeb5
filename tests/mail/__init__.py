"""Tests of the mail app: validation, passwords, limits, policies, Sieve, CSV, API, portal."""
