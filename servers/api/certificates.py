"""``/api/v1/lb-certificates/``: the load balancers' certificates, for operators only.

The names a load balancer serves belong to the installation, not to a tenant, so only
administrators of a top-level customer see them (``servers.view``) and change who issues
them or renew them now (``servers.manage``); anyone else gets 403, as for the licence.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from deploy import lb_certificate_status, lb_certificates
from deploy.certificate_models import ISSUER_CHOICES
from tenants.permissions import SERVERS_MANAGE, SERVERS_VIEW
from ums.api.jobs import JobSerializer
from ums.api.serializers import StrictSerializer
from ums.models import Job
from ums.operators import is_operator


class CertificateStatusSerializer(serializers.Serializer):
    name = serializers.CharField()
    issuer = serializers.ChoiceField(choices=ISSUER_CHOICES)
    names = serializers.ListField(child=serializers.CharField())
    installed_by = serializers.CharField(help_text="The CA that signed the certificate now.")
    not_after = serializers.DateTimeField(allow_null=True)
    days_left = serializers.IntegerField(allow_null=True)
    last_error = serializers.CharField()
    last_attempt_at = serializers.DateTimeField(allow_null=True)
    last_issued_at = serializers.DateTimeField(allow_null=True)
    failures = serializers.IntegerField()
    order_in_flight = serializers.BooleanField()


class CertificateListSerializer(serializers.Serializer):
    acme_enabled = serializers.BooleanField()
    acme_directory = serializers.CharField()
    challenge = serializers.CharField()
    results = CertificateStatusSerializer(many=True)


class IssuerSerializer(StrictSerializer):
    issuer = serializers.ChoiceField(choices=ISSUER_CHOICES)


class OperatorOnly(APIView):
    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if not is_operator(request.user):
            raise PermissionDenied(
                gettext("Only operators of the installation manage its certificates.")
            )


def _status(name: str) -> dict:
    found = [c for c in lb_certificate_status.overview() if c.name == name]
    return CertificateStatusSerializer(vars(found[0])).data if found else {}


class LbCertificateListView(OperatorOnly):
    """Every load balancer name: its issuer, the certificate installed now, the last error."""

    required_permissions = {"GET": SERVERS_VIEW}

    @extend_schema(responses={200: CertificateListSerializer})
    def get(self, request: Request) -> Response:
        settings = lb_certificate_status.acme_settings()
        data = {
            "acme_enabled": settings["enabled"],
            "acme_directory": settings["directory"],
            "challenge": settings["challenge"],
            "results": [vars(c) for c in lb_certificate_status.overview()],
        }
        return Response(CertificateListSerializer(data).data)


class LbCertificateDetailView(OperatorOnly):
    """``PATCH {"issuer": "acme"|"local-ca"}``: who issues this name (audited); the next
    renewal (or Renew now) acts on it."""

    required_permissions = {"PATCH": SERVERS_MANAGE}

    @extend_schema(request=IssuerSerializer, responses={200: CertificateStatusSerializer})
    def patch(self, request: Request, name: str) -> Response:
        serializer = IssuerSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            lb_certificates.set_certificate_issuer(
                actor=request.user, name=name, issuer=serializer.validated_data["issuer"]
            )
        except ValueError as exc:
            raise ValidationError({"name": [str(exc)]}) from exc
        return Response(_status(name))


class LbCertificateRenewView(OperatorOnly):
    """Queue the renewal job now (202 with the job; the one already queued if any)."""

    required_permissions = {"POST": SERVERS_MANAGE}

    @extend_schema(request=None, responses={202: JobSerializer})
    def post(self, request: Request) -> Response:
        job = lb_certificates.start_renewal(actor=request.user) or (
            Job.objects.filter(kind=lb_certificates.JOB_KIND, status__in=(Job.PENDING, Job.RUNNING))
            .order_by("-pk")
            .first()
        )
        return Response(JobSerializer(job).data, status=status.HTTP_202_ACCEPTED)
