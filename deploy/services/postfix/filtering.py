"""Postfix filtering hooks: extra main.cf parameters, master.cf entries and files.

The Postfix service merges what these functions return into its own rendering, so this
concern lives in one module without editing the base configuration.
"""

from __future__ import annotations

from deploy.services.base import DesiredState, ManagedFile


def params(state: DesiredState) -> list[tuple[str, str]]:
    """main.cf parameters to add or override."""
    return []


def master_entries(state: DesiredState) -> str:
    """master.cf text appended to the base services."""
    return ""


def files(state: DesiredState) -> list[ManagedFile]:
    """Extra files this concern installs on the node."""
    return []
