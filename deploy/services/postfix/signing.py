"""Postfix side of mail authentication: the OpenDKIM and OpenDMARC milters added to the
milter lists.

The Postfix service merges what :func:`params` returns into its own rendering. Only when
converge manages a daemon (its module loaded into the service registry and its setting,
``dkim_signing`` or ``dmarc_checks``, not off) does Postfix point at it, so no node ever
waits on a milter nobody started.

Order for SMTP clients (``smtpd_milters``): OpenDKIM, OpenDMARC, then the content filter.
Postfix hands each milter the message as the previous ones left it: OpenDMARC needs
OpenDKIM's verdict, and the filter applies the recipient's DMARC-failure policy to
OpenDMARC's. Outbound (submission, SMTPS) mail is therefore signed before the filter
sees it; the filter only holds or refuses such mail and changes no signed header, so the
signature stays valid. Mail the node injects itself (``non_smtpd_milters``) is signed only.
"""

from __future__ import annotations

from deploy.services.base import DesiredState


def _managed(name: str) -> bool:
    # Imported here: the registry imports the Postfix package itself.
    from deploy.services import registry

    return any(s.name == name for s in registry.SERVICES)


def _signer(state: DesiredState) -> str | None:
    from deploy.services.opendkim import milter_entry, signing_enabled

    if not signing_enabled(state) or not _managed("opendkim"):
        return None
    return milter_entry()


def _checker(state: DesiredState) -> str | None:
    from deploy.services.opendmarc import checks_enabled, milter_entry

    if not checks_enabled(state) or not _managed("opendmarc"):
        return None
    return milter_entry()


def params(state: DesiredState, merged: dict[str, str]) -> list[tuple[str, str]]:
    """main.cf parameters to add or override, given the ones merged so far."""
    signer, checker = _signer(state), _checker(state)
    result = []
    first = [m for m in (signer, checker) if m]
    if first:
        current = merged.get("smtpd_milters", "").strip()
        result.append(("smtpd_milters", ", ".join([*first, *([current] if current else [])])))
    if signer:
        current = merged.get("non_smtpd_milters", "").strip()
        result.append(("non_smtpd_milters", f"{current}, {signer}" if current else signer))
    return result
