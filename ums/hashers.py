"""Argon2 with costs taken from settings, so operators can tune them to their hardware."""

from django.conf import settings
from django.contrib.auth.hashers import Argon2PasswordHasher


class TunableArgon2PasswordHasher(Argon2PasswordHasher):
    """Same algorithm name and format as Django's: hashes stay verifiable when costs change."""

    @property
    def time_cost(self) -> int:  # type: ignore[override]
        return settings.ARGON2_TIME_COST

    @property
    def memory_cost(self) -> int:  # type: ignore[override]
        return settings.ARGON2_MEMORY_KIB

    @property
    def parallelism(self) -> int:  # type: ignore[override]
        return settings.ARGON2_PARALLELISM
