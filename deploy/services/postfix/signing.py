"""Postfix side of DKIM signing: the OpenDKIM milter added to the milter lists.

The Postfix service merges what :func:`params` returns into its own rendering. Only when
converge manages the signer (its module loaded into the service registry and
``dkim_signing`` not off) does Postfix point at it, so no node ever waits on a milter
nobody started. The signer comes after the content filter: a message is scanned (and
held or refused) first, and what leaves is signed as the filter left it.
"""

from __future__ import annotations

from deploy.services.base import DesiredState


def _signer(state: DesiredState) -> str | None:
    # Imported here: the registry imports the Postfix package itself.
    from deploy.services import registry
    from deploy.services.opendkim import milter_entry, signing_enabled

    if not signing_enabled(state) or not any(s.name == "opendkim" for s in registry.SERVICES):
        return None
    return milter_entry()


def params(state: DesiredState, merged: dict[str, str]) -> list[tuple[str, str]]:
    """main.cf parameters to add or override, given the ones merged so far."""
    entry = _signer(state)
    if entry is None:
        return []
    result = []
    for key in ("smtpd_milters", "non_smtpd_milters"):
        current = merged.get(key, "").strip()
        result.append((key, f"{current}, {entry}" if current else entry))
    return result
