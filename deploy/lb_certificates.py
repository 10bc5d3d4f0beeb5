"""Load balancer certificates: which CA issues each name, the renewal job, its alerts.

Names marked ``acme`` (:func:`set_certificate_issuer`) get their certificate from the ACME
CA of ``UMS_ACME_DIRECTORY`` (HTTP-01: the controller pushes each challenge answer to
every load balancer, whose nginx serves ``/.well-known/acme-challenge/`` on port 80; or,
with ``UMS_ACME_CHALLENGE=dns-01``, a TXT record written by RFC 2136 updates to the
zone's DNS server, which needs no load balancer reachable from the CA); every other name
keeps the local CA. Until a name's first ACME certificate arrives it is
served with a local-CA one, so nginx can start and answer the challenge at all.

The renewal runs as the job ``lb.renew_certificates`` (daily, from beat): a certificate
with fewer than 30 days left is renewed; an ACME failure keeps the current certificate,
records the reason on the name, logs it in the job (which then fails with the reason,
after renewing what it could) and raises a ``certificate_renewal`` alert on each load
balancer (resolved by the next success). Crash safety: the order in
flight is saved before its challenges are answered and resumed from the ACME server's
state by the next run; a stored certificate the load balancers were not told about yet
(``installed_serial``) is handed to converge again.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

from cryptography import x509
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from servers.actions import resolve_alerts
from servers.models import Node, NodeAlert
from tenants import permissions as perms
from ums import auditing, jobs
from ums.actions import require_permission
from ums.models import Job
from ums.operators import is_operator

from . import dirty
from .certificate_models import ISSUER_ACME, ISSUER_CHOICES, AcmeAccount, LbCertificate
from .nodes import session
from .services.nginx import tasks as nginx_tasks
from .services.nginx.acme import (
    DNS01,
    HTTP01,
    AcmeError,
    AcmeIssuer,
    OrderProgress,
    new_account_key,
)
from .services.nginx.acme_dns import Rfc2136Publisher
from .services.nginx.certs import (
    CertificateBundle,
    FileCertificateStore,
    LocalCAIssuer,
    needs_renewal,
    valid_cert_name,
)
from .services.nginx.service import ACME_CHALLENGE_DIR

logger = logging.getLogger(__name__)

JOB_KIND = "lb.renew_certificates"
ALERT_KIND = "certificate_renewal"


# --------------------------------------------------------------------------- settings


def acme_directory() -> str:
    """The ACME directory URL; empty means ACME is disabled (every name: local CA)."""
    return (getattr(settings, "UMS_ACME_DIRECTORY", "") or "").strip()


def acme_ca_bundle() -> str | None:
    return getattr(settings, "UMS_ACME_CA_BUNDLE", "") or None


# --------------------------------------------------------------------------- action


def set_certificate_issuer(*, actor: Any, name: str, issuer: str) -> LbCertificate:
    """Make ``name`` (a load balancer host name) use ``issuer`` ("acme" or "local-ca").

    ``actor`` None is the command line (``manage.py lb_certificate``); an administrator
    must be an operator (top-level customer) with ``servers.manage``.
    """
    if actor is not None:
        require_permission(actor, perms.SERVERS_MANAGE)
        if not is_operator(actor):
            raise PermissionDenied(_("Only operators of the installation manage its certificates."))
    if not valid_cert_name(name) or name.startswith("_"):
        raise ValueError(f"invalid host name {name!r}")
    if issuer not in dict(ISSUER_CHOICES):
        raise ValueError(f"unknown issuer {issuer!r}")
    with transaction.atomic():
        row, created = LbCertificate.objects.select_for_update().get_or_create(name=name)
        before = None if created else {"issuer": row.issuer}
        row.issuer = issuer
        row.save(update_fields=["issuer"])
        auditing.record(
            "lb_certificate.issuer",
            obj=row,
            actor=actor,
            before=before,
            after={"issuer": issuer},
        )
    return row


# --------------------------------------------------------------------------- challenges


def _nginx_service() -> Any:
    from .services import registry
    from .services.nginx import SERVICE as DEFAULT_NGINX

    return next((s for s in registry.SERVICES if s.name == "nginx"), DEFAULT_NGINX)


def load_balancers() -> list[Node]:
    nodes = Node.objects.filter(status__in=dirty.CONVERGE_STATUSES).order_by("pk")
    return [n for n in nodes if "loadbalancer" in (n.roles or ())]


class ChallengePublisher:
    """Writes HTTP-01 answers into the challenge folder of every load balancer over SSH.

    A load balancer that cannot be reached is skipped (another may answer the CA); the
    CA's verdict is what decides, and its reason is what gets reported.
    """

    def __init__(self, nodes: list[Node], reporter: jobs.Reporter | None) -> None:
        self.nodes = nodes
        self.reporter = reporter
        root = getattr(_nginx_service(), "acme_root", ACME_CHALLENGE_DIR)
        self.folder = f"{root.rstrip('/')}/.well-known/acme-challenge"

    def _each(self, action: Any) -> None:
        for node in self.nodes:
            try:
                with session(node) as conn:
                    action(conn)
            except Exception as exc:
                logger.warning("ACME challenge on %s: %s", node.hostname, exc)
                if self.reporter:
                    self.reporter.say(
                        gettext_noop("Could not reach %(node)s for the challenge: %(error)s"),
                        node=node.hostname,
                        error=str(exc)[:300],
                    )

    def publish(self, token: str, key_authorization: str) -> None:
        if not token.replace("-", "").replace("_", "").isalnum():
            raise AcmeError(f"unexpected challenge token {token!r}")

        def put(conn: Any) -> None:
            conn.run(["mkdir", "-p", "-m", "0755", self.folder]).check()
            conn.put_file(f"{self.folder}/{token}", key_authorization.encode(), mode=0o644)

        self._each(put)

    def unpublish(self, token: str) -> None:
        self._each(lambda conn: conn.run(["rm", "-f", f"{self.folder}/{token}"]))


# --------------------------------------------------------------------------- renewal pass


def _account(directory: str) -> AcmeAccount:
    email = getattr(settings, "UMS_ACME_EMAIL", "") or ""
    account, _created = AcmeAccount.objects.get_or_create(
        directory_url=directory, defaults={"email": email, "key_pem": new_account_key()}
    )
    return account


def _issued_by(bundle: CertificateBundle, ca: LocalCAIssuer) -> bool:
    leaf = x509.load_pem_x509_certificate(bundle.cert_pem.encode())
    return leaf.issuer == x509.load_pem_x509_certificate(ca.ca_cert_pem.encode()).subject


def _serial(bundle: CertificateBundle | None) -> str:
    return format(bundle.serial, "x") if bundle else ""


def _alert(nodes: list[Node], failures: dict[str, str]) -> None:
    if not failures:
        for node in nodes:
            resolve_alerts(node, ALERT_KIND)
        return
    message = "; ".join(
        _("Certificate for %(name)s not renewed: %(reason)s") % {"name": name, "reason": reason}
        for name, reason in sorted(failures.items())
    )
    for node in nodes:
        updated = NodeAlert.objects.filter(node=node, kind=ALERT_KIND, resolved_at=None).update(
            message=message
        )
        if not updated:
            NodeAlert.objects.create(
                node=node, kind=ALERT_KIND, message=message, customer_path=node.customer_path
            )


def challenge_type() -> str:
    return getattr(settings, "UMS_ACME_CHALLENGE", HTTP01) or HTTP01


def dns_publisher() -> Rfc2136Publisher:
    """The RFC 2136 client of the DNS-01 settings (``UMS_ACME_DNS_*``)."""
    host, _sep, port = settings.UMS_ACME_DNS_SERVER.rpartition(":")
    if not host or not port.isdigit():
        host, port = settings.UMS_ACME_DNS_SERVER, "53"
    return Rfc2136Publisher(
        server=host.strip("[]"),
        port=int(port),
        zone=settings.UMS_ACME_DNS_ZONE,
        key_name=settings.UMS_ACME_DNS_TSIG_KEY_NAME,
        secret=settings.UMS_ACME_DNS_TSIG_SECRET,
        algorithm=settings.UMS_ACME_DNS_TSIG_ALGORITHM,
        propagation_seconds=settings.UMS_ACME_DNS_PROPAGATION_SECONDS,
    )


def _issue_acme(
    row: LbCertificate,
    names: tuple[str, ...],
    store: FileCertificateStore,
    publisher: ChallengePublisher | Rfc2136Publisher,
    reporter: jobs.Reporter | None,
) -> None:
    directory = acme_directory()
    account = _account(directory)
    issuer = AcmeIssuer(
        directory,
        account.key_pem,
        email=account.email,
        account_url=account.account_url,
        ca_bundle=acme_ca_bundle(),
    )
    progress = OrderProgress(row.order_url, row.order_key_pem) if row.order_url else None

    def save_order(saved: OrderProgress) -> None:
        # Committed at once (no surrounding transaction): a killed run resumes this order.
        LbCertificate.objects.filter(pk=row.pk).update(
            order_url=saved.order_url, order_key_pem=saved.key_pem
        )
        if issuer.account_url and issuer.account_url != account.account_url:
            AcmeAccount.objects.filter(pk=account.pk).update(account_url=issuer.account_url)

    bundle = issuer.issue(
        names,
        progress=progress,
        save_order=save_order,
        publish=publisher.publish,
        unpublish=publisher.unpublish,
        say=reporter.say if reporter else (lambda *a, **k: None),
        challenge=DNS01 if isinstance(publisher, Rfc2136Publisher) else HTTP01,
    )
    if issuer.account_url != account.account_url:
        AcmeAccount.objects.filter(pk=account.pk).update(account_url=issuer.account_url)
    store.put(row.name, bundle)
    LbCertificate.objects.filter(pk=row.pk).update(
        order_url="", order_key_pem="", last_error="", failures=0, last_issued_at=timezone.now()
    )


def renew_pass(
    reporter: jobs.Reporter | None = None, *, now: dt.datetime | None = None
) -> dict[str, Any]:
    """One renewal pass over every load balancer certificate; what it did."""
    now = now or dt.datetime.now(dt.UTC)
    directory = Path(nginx_tasks.cert_directory())
    store = FileCertificateStore(directory)
    local = LocalCAIssuer.load_or_create(directory / "ca")
    rows = {row.name: row for row in LbCertificate.objects.all()}
    plan: dict[str, tuple[str, ...]] = {}
    for name in store.names():
        bundle = store.get(name)
        plan[name] = bundle.names if bundle and bundle.names else (name,)
    for name, names in (getattr(settings, "UMS_LB_HOSTNAMES", None) or {}).items():
        plan[name] = tuple(names) or (name,)
    for name in rows:
        plan.setdefault(name, (name,))

    acme_on = bool(acme_directory())
    balancers = load_balancers()
    by_dns = challenge_type() == DNS01
    publisher: ChallengePublisher | Rfc2136Publisher | None = None
    renewed: list[str] = []
    failures: dict[str, str] = {}
    for name, names in sorted(plan.items()):
        bundle = store.get(name)
        row = rows.get(name)
        if row is None or row.issuer != ISSUER_ACME or not acme_on:
            if needs_renewal(bundle, names, now=now):
                store.put(name, local.issue(list(names), now=now))
                renewed.append(name)
            continue
        if bundle is None:
            # nginx needs a certificate for the name to start and serve the challenge.
            store.put(name, local.issue(list(names), now=now))
            renewed.append(name)
            bundle = store.get(name)
        assert bundle is not None
        due = row.order_url or _issued_by(bundle, local) or needs_renewal(bundle, names, now=now)
        if not due:
            continue
        if not balancers and not by_dns:
            # Nothing could answer the HTTP-01 challenge: asking the CA would only fail.
            LbCertificate.objects.filter(pk=row.pk).update(
                last_error="no load balancer to answer the ACME challenge yet"
            )
            if reporter:
                reporter.say(
                    gettext_noop("No load balancer can answer the challenge for %(name)s yet"),
                    name=name,
                )
            continue
        LbCertificate.objects.filter(pk=row.pk).update(last_attempt_at=timezone.now())
        if reporter:
            reporter.say(gettext_noop("Requesting a certificate for %(name)s by ACME"), name=name)
        try:
            if publisher is None:
                publisher = dns_publisher() if by_dns else ChallengePublisher(balancers, reporter)
            _issue_acme(row, names, store, publisher, reporter)
        except AcmeError as exc:
            reason = str(exc)[:1000]
            failures[name] = reason
            LbCertificate.objects.filter(pk=row.pk).update(
                last_error=reason, failures=row.failures + 1
            )
            if reporter:
                reporter.say(
                    gettext_noop(
                        "ACME certificate for %(name)s failed: %(reason)s; "
                        "the current certificate stays in place"
                    ),
                    name=name,
                    reason=reason,
                )
            continue
        renewed.append(name)
        if reporter:
            reporter.say(gettext_noop("New ACME certificate for %(name)s stored"), name=name)

    # Names whose stored certificate the load balancers were not told about (this run's,
    # or one a killed run stored before it could hand it to converge).
    install = set(renewed)
    for row in LbCertificate.objects.all():
        if row.installed_serial != _serial(store.get(row.name)) and store.get(row.name):
            install.add(row.name)
    affected: list[int] = []
    if install and nginx_tasks.on_renewed is not None:
        affected = list(nginx_tasks.on_renewed(sorted(install)) or [])
    for row in LbCertificate.objects.filter(name__in=install):
        LbCertificate.objects.filter(pk=row.pk).update(
            installed_serial=_serial(store.get(row.name))
        )
    if acme_on and any(r.issuer == ISSUER_ACME for r in rows.values()):
        _alert(balancers, failures)
    return {"renewed": sorted(renewed), "failed": failures, "converging": affected}


@jobs.handler(JOB_KIND)
def renew_job(job: Job, reporter: jobs.Reporter) -> dict:
    result = renew_pass(reporter)
    if result["renewed"]:
        reporter.say(gettext_noop("Renewed: %(names)s"), names=", ".join(result["renewed"]))
    if result["failed"]:
        # The job shows as failed with the reason; the alert stays open until a success.
        raise jobs.PermanentJobError(
            "; ".join(
                _("Certificate for %(name)s not renewed: %(reason)s")
                % {"name": name, "reason": reason}
                for name, reason in sorted(result["failed"].items())
            )
        )
    if not result["renewed"]:
        reporter.say(gettext_noop("No certificate needed renewal"))
    return result


def start_renewal(*, actor: Any = None) -> Job | None:
    """Queue the renewal job unless one is already waiting or running."""
    with transaction.atomic():
        if Job.objects.filter(kind=JOB_KIND, status__in=(Job.PENDING, Job.RUNNING)).exists():
            return None
        return jobs.enqueue(JOB_KIND, actor=actor, title=_("Renew load balancer certificates"))
