"""ACME state on the controller: the account per CA and, per load balancer name, which CA
issues its certificate and the order in flight (see :mod:`deploy.lb_certificates`)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from ums.crypto import EncryptedTextField

ISSUER_LOCAL_CA = "local-ca"
ISSUER_ACME = "acme"
ISSUER_CHOICES = ((ISSUER_LOCAL_CA, _("local CA")), (ISSUER_ACME, _("ACME")))


class AcmeAccount(models.Model):
    """One account per ACME directory; its key is encrypted at rest like other secrets."""

    directory_url = models.CharField(max_length=500, unique=True)
    email = models.CharField(max_length=254, blank=True)
    key_pem = EncryptedTextField()
    account_url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        app_label = "deploy"

    def __str__(self) -> str:
        return f"ACME account at {self.directory_url}"


class LbCertificate(models.Model):
    """A load balancer certificate name and who issues it (private names: the local CA).

    ``order_url``/``order_key_pem`` are the ACME order in flight, saved before any
    challenge is answered so a killed run resumes it; ``installed_serial`` is the serial
    the load balancers were last told to install (a stored certificate with another serial
    still has to reach them).
    """

    name = models.CharField(max_length=253, unique=True)
    issuer = models.CharField(max_length=16, choices=ISSUER_CHOICES, default=ISSUER_LOCAL_CA)
    order_url = models.CharField(max_length=500, blank=True)
    order_key_pem = EncryptedTextField(blank=True, default="")
    installed_serial = models.CharField(max_length=80, blank=True)
    last_error = models.TextField(blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_issued_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0)

    class Meta:
        app_label = "deploy"
        ordering = ("name",)

    def __str__(self) -> str:
        return f"{self.name} ({self.issuer})"
