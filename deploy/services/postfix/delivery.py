"""Postfix delivery hooks: extra main.cf parameters, master.cf entries and files.

The Postfix service merges what these functions return into its own rendering, so this
concern lives in one module without editing the base configuration.

On IMAP nodes final delivery goes through Dovecot's LDA (``deploy/services/lda``), so a
mailbox's Sieve filters and auto-responder apply and its quota is enforced at delivery:
a ``pipe(8)`` transport, one recipient per call (the LDA delivers to one user), run as
the mail store's owner. Exit codes carry the outcome: over quota the LDA exits 77
(``-e``), so Postfix bounces the message to its sender with the reason; any other
failure exits 75 and the message stays queued. Nothing is lost silently.

Only when converge manages the LDA (its module loaded into the service registry) does
Postfix point at it: a node whose LDA module is unavailable keeps Postfix's own
``virtual(8)`` delivery instead of bouncing everything into a missing program.
"""

from __future__ import annotations

from deploy.services.base import DesiredState, ManagedFile


def _lda(state: DesiredState) -> dict[str, str] | None:
    if "imap" not in state.node.roles:
        return None
    # Imported here: the registry (and the LDA package, which uses postfix.safe) import
    # the Postfix package themselves.
    from deploy.services import registry
    from deploy.services.lda import postfix_glue

    if not any(service.name == "lda" for service in registry.SERVICES):
        return None
    return postfix_glue(state)


def params(state: DesiredState) -> list[tuple[str, str]]:
    """main.cf parameters to add or override."""
    glue = _lda(state)
    if glue is None:
        return []
    transport = glue["transport"]
    return [
        ("virtual_transport", transport),
        (f"{transport}_destination_recipient_limit", "1"),
    ]


def master_entries(state: DesiredState) -> str:
    """master.cf text appended to the base services."""
    glue = _lda(state)
    if glue is None:
        return ""
    # Postfix expands each ${...} into exactly one argument (no shell is involved), and
    # only after the recipient matched virtual_mailbox_maps.
    # D/R: Delivered-To (loop detection) and Return-Path; X: final delivery, so a
    # NOTIFY=SUCCESS sender is told "delivered", not "relayed"; h/u: lower-case domain/user,
    # as the userdb keys are. The LDA runs under the "deliver" wrapper, which keeps its
    # exit status and then subscribes Sieve-created folders in Courier's list.
    return (
        "# Final delivery through Dovecot's LDA with Sieve (deploy/services/lda).\n"
        f"{glue['transport']}   unix  -       n       n       -       -       pipe\n"
        f"  flags=DRXhu user={glue['user']} argv={glue['deliver']} {glue['root']}"
        f" ${{nexthop}} ${{user}} {glue['lda']} -c {glue['config']} -e"
        " -f ${sender} -a ${original_recipient} -d ${user}@${nexthop}\n"
    )


def files(state: DesiredState) -> list[ManagedFile]:
    """Extra files this concern installs on the node."""
    return []
