"""``manage.py lb_certificate NAME --issuer acme|local-ca``: who issues a load balancer name;
``--list``: every name with its issuer, expiry and last error; ``--renew``: queue the job."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from deploy import lb_certificates
from deploy.certificate_models import ISSUER_CHOICES, LbCertificate


class Command(BaseCommand):
    help = "Choose the CA (ACME or the local CA) of a load balancer name; list; renew."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", nargs="?")
        parser.add_argument("--issuer", choices=[c[0] for c in ISSUER_CHOICES])
        parser.add_argument("--list", action="store_true")
        parser.add_argument("--renew", action="store_true", help="queue the renewal job now")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["name"] and options["issuer"]:
            try:
                lb_certificates.set_certificate_issuer(
                    actor=None, name=options["name"], issuer=options["issuer"]
                )
            except ValueError as exc:
                raise CommandError(str(exc)) from exc
        elif options["name"] or options["issuer"]:
            raise CommandError("give both NAME and --issuer")
        if options["list"]:
            for row in LbCertificate.objects.all():
                error = f"  last error: {row.last_error}" if row.last_error else ""
                self.stdout.write(f"{row.name}\t{row.issuer}{error}")
        if options["renew"]:
            job = lb_certificates.start_renewal()
            self.stdout.write(f"job {job.pk}" if job else "a renewal job is already queued")
