"""JSON errors for the API: a clear message and, for bad input, messages per field."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler


def _django_validation_to_drf(exc: DjangoValidationError) -> exceptions.ValidationError:
    if hasattr(exc, "error_dict"):
        return exceptions.ValidationError(exc.message_dict)
    return exceptions.ValidationError({"non_field_errors": exc.messages})


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, DjangoValidationError):
        exc = _django_validation_to_drf(exc)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        detail = response.data
        if not isinstance(detail, dict):
            detail = {"non_field_errors": detail}
        response.data = {"message": _("The request has invalid fields."), "errors": detail}
    elif isinstance(response.data, dict) and "detail" in response.data:
        response.data = {"message": response.data["detail"]}
    return response


def json_error(message: str, status_code: int) -> Response:
    return Response({"message": message}, status=status_code)


def not_found_json(request: Any, exception: Exception | None = None) -> Any:
    from django.http import JsonResponse

    return JsonResponse({"message": _("Not found.")}, status=404)
