"""API endpoints of the spam hold under /api/v1/spamhold/.

One viewset, scoped by the ums base class (a message outside the caller's subtree is a
404). Its collection-level actions (the sheet's ``query``, ``counts``, bulk ``release`` /
``delete`` and ``refresh``) are bound to their own paths in ``urls.py``; per-message actions
are under ``messages/{id}/``. Lists run a fixed number of queries: the page is built from
``.values()`` rows, newest first, by keyset (``spamhold.query.page``).

Release and delete never wait on a node: they write a durable request and answer at once,
202 with the messages ``pending`` (still ``ONHOLD`` until the node confirms; the request's
job and the reconciler carry it out). They accept an ``Idempotency-Key`` header: the first
answer is stored per administrator and key and replayed for the same request; the same key
with another body is a 422; a key whose first request died mid-way is run again after
``IdempotencyKey.STALE_SECONDS`` (see :func:`idempotent`).
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from tenants import permissions as perms
from ums import scoping
from ums.api.viewsets import ScopedReadOnlyViewSet

from .. import query
from ..models import HeldMessage, IdempotencyKey, Outcome, Status
from . import serializers as s

PAGING_PARAMS = frozenset({"cursor", "page_size", "format"})
PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")

PAGING_PARAMETERS = [
    OpenApiParameter("cursor", str, description="the `next` link's cursor"),
    OpenApiParameter("pageSize", int, description=f"1..{MAX_PAGE_SIZE}, default {PAGE_SIZE}"),
]
IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    str,
    location=OpenApiParameter.HEADER,
    description="Replays the first answer for the same request; another body gives 422.",
)


def _actions() -> Any:
    # Imported late: the action layer is the backend's module and imports node machinery.
    from .. import actions

    return actions


def _on_base_url(link: str | None) -> str | None:
    """Links are built on the configured base URL, never on the Host header."""
    if not link:
        return link
    base = urlsplit(settings.BASE_URL)
    parts = urlsplit(link)
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))


def _page_size(request: Request) -> int:
    raw = request.query_params.get("page_size")
    if raw is None:
        return PAGE_SIZE
    if not raw.isdigit() or len(raw) > 9 or not 0 < int(raw) <= MAX_PAGE_SIZE:
        raise ValidationError({"page_size": [_("Expected a number from 1 to %d.") % MAX_PAGE_SIZE]})
    return int(raw)


def _when(value: Any) -> str:
    """A handled-at time for a sentence (the report may carry a datetime or epoch seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = datetime.datetime.fromtimestamp(value, tz=datetime.UTC)
    elif isinstance(value, str):
        try:
            value = datetime.datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value or "")


RELEASE_OUTCOMES = (Outcome.RELEASE, Outcome.RELEASE_ALLOW)


def already_message(entry: dict[str, Any]) -> str:
    """What the second administrator is told: who handled the message first, and when."""
    who = entry.get("handledBy") or _("someone else")
    when = _when(entry.get("handledAt"))
    state = entry.get("status")
    if state == Status.ONHOLD and entry.get("outcome"):
        if entry["outcome"] in RELEASE_OUTCOMES:
            return _(
                "%(who)s asked to release it at %(when)s; waiting for the node to confirm."
            ) % {"who": who, "when": when}
        if entry["outcome"] == Outcome.EXPIRE:
            return _("It is being deleted as expired; waiting for the node to confirm.")
        return _("%(who)s asked to delete it at %(when)s; waiting for the node to confirm.") % {
            "who": who,
            "when": when,
        }
    if state == Status.RELEASED:
        return _("Already released by %(who)s at %(when)s.") % {"who": who, "when": when}
    if state == Status.DELETED:
        return _("Already deleted by %(who)s at %(when)s.") % {"who": who, "when": when}
    if state == Status.EXPIRED:
        return _("The message expired at %(when)s.") % {"when": when}
    return _("The message has already left the hold queue.")


def report_data(report: Any) -> dict[str, Any]:
    """An ``OutcomeReport`` as JSON; each ``already`` entry gets its sentence."""
    already = [_jsonable(entry) for entry in report.already]
    return {
        "pending": list(report.pending),
        "request": report.intent,
        "job": report.job,
        "done": list(report.done),
        "already": [{**entry, "message": already_message(entry)} for entry in already],
        "failed": [_jsonable(entry) for entry in report.failed],
        "not_found": list(report.not_found),
        "warnings": [_jsonable(entry) for entry in getattr(report, "warnings", [])],
    }


def _jsonable(entry: dict[str, Any]) -> dict[str, Any]:
    """Times as epoch seconds, like every other spam-hold time in the API."""
    out = {}
    for key, value in entry.items():
        if key == "handledAt" and isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = datetime.datetime.fromisoformat(value)
        if isinstance(value, datetime.datetime):
            value = query.epoch(value, millis=True)
        out[key] = value
    return out


def content_denied_message() -> str:
    return _(
        "Metadata only: reading the content of held messages needs the permission "
        '"Read held message content".'
    )


def _take_key(request: Request, key: str, digest: str) -> IdempotencyKey | Response:
    """The key's row, now ours to run the request under; or the answer to give instead.

    A fresh key is inserted (committed at once, so a concurrent duplicate sees it). An
    existing key answers: 422 for another request, the stored answer when done, 409
    while its first request is in progress; but an in-progress entry older than
    ``STALE_SECONDS`` (its request died mid-way) or a key past ``KEEP_HOURS`` is taken
    over with a conditional UPDATE, and the request runs again: safe, since every outcome
    claim is conditional.
    """
    now = timezone.now()
    try:
        with transaction.atomic():
            return IdempotencyKey.objects.create(
                administrator=request.user,
                key=key,
                request_hash=digest,
                status_code=0,
                started_at=now,
            )
    except IntegrityError:
        pass
    record = IdempotencyKey.objects.filter(administrator=request.user, key=key).first()
    expired = now - datetime.timedelta(hours=IdempotencyKey.KEEP_HOURS)
    if record is not None and record.created_at < expired:
        # A day-old key is forgotten (the reconciler purges these too): a new request.
        taken = IdempotencyKey.objects.filter(pk=record.pk, created_at__lt=expired).update(
            request_hash=digest, status_code=0, response={}, created_at=now, started_at=now
        )
        if taken:
            record.refresh_from_db()
            return record
    if record is not None and record.request_hash != digest:
        return Response(
            {
                "message": _(
                    "This Idempotency-Key was already used for a different request; use a new key."
                )
            },
            status=status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
    if record is not None and record.status_code:
        return Response(
            record.response, status=record.status_code, headers={"Idempotent-Replayed": "true"}
        )
    stale = now - datetime.timedelta(seconds=IdempotencyKey.STALE_SECONDS)
    if record is not None and (
        IdempotencyKey.objects.filter(pk=record.pk, status_code=0)
        .filter(models.Q(started_at__lt=stale) | models.Q(started_at=None))
        .update(started_at=now)
    ):
        return record
    return Response(
        {"message": _("A request with this Idempotency-Key is still being handled.")},
        status=status.HTTP_409_CONFLICT,
    )


def idempotent(request: Request, perform: Callable[[], Response]) -> Response:
    """Run ``perform`` once per (administrator, Idempotency-Key); replay its answer after.

    See :func:`_take_key` for the key's states. If the action raises (bad input, a server
    error) or answers 5xx, the row is removed so the client can retry with the same key.
    """
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return perform()
    if not IDEMPOTENCY_KEY.match(key):
        return Response(
            {
                "message": _("The request has invalid fields."),
                "errors": {
                    "Idempotency-Key": [_("Use 1 to 128 printable ASCII characters, no spaces.")]
                },
            },
            status=status.HTTP_400_BAD_REQUEST,
        )
    body = json.dumps(
        {"method": request.method, "path": request.path, "body": request.data},
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha256(body.encode()).hexdigest()
    record = _take_key(request, key, digest)
    if isinstance(record, Response):
        return record
    try:
        response = perform()
    except BaseException:
        record.delete()
        raise
    if response.status_code >= 500:
        record.delete()
        return response
    IdempotencyKey.objects.filter(pk=record.pk).update(
        response=response.data, status_code=response.status_code
    )
    return response


class HeldMessageViewSet(ScopedReadOnlyViewSet):
    """Held messages of the caller's subtree, newest first; filters as for ``query``."""

    queryset = HeldMessage.objects.all()
    filter_backends: list[Any] = []
    pagination_class = None
    http_method_names = ["get", "post", "head", "options"]
    # POSTs that only read: allowed to read-only tokens (see ums.api.permissions).
    read_only_actions = ("query", "counts")
    required_permissions = {
        "list": perms.SPAMHOLD_VIEW,
        "retrieve": perms.SPAMHOLD_VIEW,
        "content": perms.SPAMHOLD_VIEW,  # then SPAMHOLD_READ_CONTENT, with a clear message
        "log": perms.SPAMHOLD_VIEW,
        "query": perms.SPAMHOLD_VIEW,
        "counts": perms.SPAMHOLD_VIEW,
        "refresh": perms.SPAMHOLD_VIEW,
        "release_one": perms.SPAMHOLD_RELEASE,
        "release_many": perms.SPAMHOLD_RELEASE,
        "delete_one": perms.SPAMHOLD_DELETE,
        "delete_many": perms.SPAMHOLD_DELETE,
    }

    # The request body each action reads; OPTIONS (DRF's metadata) describes the query's.
    request_serializers: dict[str, type] = {
        "query": s.QuerySerializer,
        "counts": s.QuerySerializer,
        "release_many": s.ReleaseSerializer,
        "delete_many": s.DeleteSerializer,
        "release_one": s.ReleaseOneSerializer,
        "delete_one": s.DeleteOneSerializer,
        "refresh": s.RefreshSerializer,
    }

    def get_serializer_class(self) -> type:
        return self.request_serializers.get(self.action or "", s.QuerySerializer)

    # ------------------------------------------------------------------ helpers

    def _filters(self, data: Any) -> tuple[dict[str, Any], str | None]:
        serializer = s.QuerySerializer(data=data, context={"request": self.request})
        serializer.is_valid(raise_exception=True)
        return s.QuerySerializer.to_filters(serializer.validated_data)

    def _page(
        self, filters: dict[str, Any], path: str | None, row: Callable, columns: tuple[str, ...]
    ) -> Response:
        request = self.request
        size = _page_size(request)
        queryset = query.apply_filters(self.get_queryset(), filters, customer_path=path)
        try:
            result = query.page(
                queryset, cursor=request.query_params.get("cursor"), size=size, columns=columns
            )
        except ValueError as exc:
            raise ValidationError({"cursor": [_("Invalid cursor.")]}) from exc
        next_link = None
        if result.next_cursor:
            next_link = _on_base_url(
                replace_query_param(request.build_absolute_uri(), "cursor", result.next_cursor)
            )
        return Response(
            {"next": next_link, "previous": None, "results": [row(r) for r in result.rows]}
        )

    def _detail(self, message: HeldMessage) -> dict[str, Any]:
        user = self.request.user
        metadata_only = not user.has_permission(perms.SPAMHOLD_READ_CONTENT)
        base = query.list_row({c: getattr(message, c) for c in query.LIST_COLUMNS})
        return {
            **base,
            "queueId": message.queue_id,
            "recipients": message.recipients,
            "reasonDetail": message.reason_detail,
            "spamScore": float(message.spam_score) if message.spam_score is not None else None,
            "spamRules": message.spam_rules,
            "virusName": message.virus_name,
            "attachmentName": message.attachment_name,
            "firstSeen": query.epoch(message.first_seen_at, millis=True),
            "lastSeen": query.epoch(message.last_seen_at, millis=True),
            "nodeError": message.node_error,
            "metadataOnly": metadata_only,
        }

    def _job_url(self, job_id: int | None) -> str | None:
        if job_id is None:
            return None
        return _on_base_url(self.request.build_absolute_uri(reverse("job-detail", args=[job_id])))

    def _outcome_one(self, message: HeldMessage, report: Any, verb: str) -> Response:
        data = report_data(report)
        if message.pk in report.pending:
            # Accepted, not done: the node acts after this answer (the job), and the
            # message shows ``pending`` until it confirms.
            message.refresh_from_db()
            return Response(
                {
                    **data,
                    "message": verb,
                    "jobUrl": self._job_url(report.job),
                    "result": self._detail(message),
                },
                status=status.HTTP_202_ACCEPTED,
            )
        if data["already"]:
            entry = data["already"][0]
            return Response(
                {**data, "message": entry["message"], "handledBy": entry.get("handledBy"),
                 "handledAt": entry.get("handledAt"), "status": entry.get("status"),
                 "pending": entry.get("pending", False)},
                status=status.HTTP_409_CONFLICT,
            )  # fmt: skip
        if data["failed"]:
            return Response(
                {
                    **data,
                    "message": _("The node could not carry this out: %(error)s")
                    % {"error": data["failed"][0].get("error", "")},
                },
                status=status.HTTP_502_BAD_GATEWAY,
            )
        return Response({**data, "message": _("Not found.")}, status=status.HTTP_404_NOT_FOUND)

    def _act_many(
        self, outcome_plain: str, outcome_flag: str, flag: str, call: Callable
    ) -> Response:
        request = self.request
        serializer_class = s.ReleaseSerializer if flag == "allow_sender" else s.DeleteSerializer
        serializer = serializer_class(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        flagged = data[flag]
        if "ids" in data:
            # The action scopes the ids itself: outside ones come back as not found.
            report = call(actor=request.user, ids=data["ids"], **{flag: flagged})
            return Response(
                {**report_data(report), "jobUrl": self._job_url(report.job)},
                status=status.HTTP_202_ACCEPTED if report.pending else status.HTTP_200_OK,
            )
        filters, _path = s.QuerySerializer.to_filters(data["filters"])
        job = _actions().start_bulk(
            actor=request.user,
            outcome=outcome_flag if flagged else outcome_plain,
            filters=filters,
        )
        return Response(
            {
                "job": job.pk,
                "request": job.params.get("intent"),
                "status": job.status,
                "job_url": self._job_url(job.pk),
                "filters": filters,
            },
            status=status.HTTP_202_ACCEPTED,
        )

    # ------------------------------------------------------------------ lists

    @extend_schema(
        operation_id="v1_spamhold_messages_list",
        parameters=[
            *PAGING_PARAMETERS,
            *[
                OpenApiParameter(name, OpenApiTypes.STR)
                for name in (
                    "startTime",
                    "endTime",
                    "status",
                    "reason",
                    "fromDomain",
                    "fromEmail",
                    "toDomain",
                    "toEmail",
                    "subject",
                    "node",
                    "customer",
                )
            ],
        ],
        responses={200: OpenApiTypes.OBJECT},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Held messages, newest first; the query string takes the ``query`` filters."""
        params = {k: v for k, v in request.query_params.items() if k not in PAGING_PARAMS}
        filters, path = self._filters(params)
        return self._page(filters, path, query.list_row, query.LIST_COLUMNS)

    @extend_schema(
        request=s.QuerySerializer,
        parameters=PAGING_PARAMETERS,
        responses={200: s.SheetRecordSerializer(many=True)},
    )
    def query(self, request: Request) -> Response:
        """The product sheet's query: POST filters, get records in the sheet's shape.

        ``{"startTime":0,"endTime":2147483647,"fromDomain":"gmail.com","status":"ONHOLD"}``
        returns ``{"next": ..., "previous": null, "results": [{"id", "timestamp", "status",
        "expiry", "fromDomain", "fromEmail", "toEmail", "subject"}]}``. For the next page,
        POST the same body to the ``next`` link.
        """
        filters, path = self._filters(request.data)
        return self._page(filters, path, query.sheet_row, query.SHEET_COLUMNS)

    @extend_schema(request=s.QuerySerializer, responses={200: OpenApiTypes.OBJECT})
    def counts(self, request: Request) -> Response:
        """Messages per reason under the filters (without ``reason``): exact when at most
        ``cap`` match in all; otherwise ``exact`` is false, ``total`` is ``cap`` ("more
        than cap") and each count is a lower bound (see ``query.counts_by_reason``)."""
        filters, path = self._filters(request.data)
        filters.pop("reason", None)
        queryset = query.apply_filters(self.get_queryset(), filters, customer_path=path)
        rows = query.counts_by_reason(
            queryset, cap=query.COUNT_CAP, time_range=query.has_time_range(filters)
        )
        return Response(
            {
                "by_reason": [
                    {"reason": r.reason, "label": r.label, "count": r.count, "exact": r.exact}
                    for r in rows
                ],
                "total": query.total(rows, cap=query.COUNT_CAP),
                "exact": all(r.exact for r in rows),
                "cap": query.COUNT_CAP,
            }
        )

    # ------------------------------------------------------------------ one message

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Everything known about the message except its content (``metadataOnly`` says
        whether the caller may read the content at ``content/``)."""
        return Response(self._detail(self.get_object()))

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 403: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def content(self, request: Request, pk: str | None = None) -> Response:
        """Headers, text and attachment list, fetched from the node (audited)."""
        message = self.get_object()
        if not request.user.has_permission(perms.SPAMHOLD_READ_CONTENT):
            return Response(
                {"message": content_denied_message(), "metadata_only": True},
                status=status.HTTP_403_FORBIDDEN,
            )
        from .. import content as content_module

        try:
            found = content_module.read(actor=request.user, message=message)
        except content_module.MessageUnavailable as exc:
            return Response({"message": str(exc)}, status=status.HTTP_502_BAD_GATEWAY)
        return Response({"id": message.pk, **content_data(found)})

    @extend_schema(responses={200: OpenApiTypes.OBJECT})
    @action(detail=True, methods=["get"])
    def log(self, request: Request, pk: str | None = None) -> Response:
        """The node's mail log lines for this message (its queue id)."""
        message = self.get_object()
        from .. import content as content_module

        try:
            lines = content_module.receipt_log(message)
        except content_module.MessageUnavailable as exc:
            return Response({"message": str(exc)}, status=status.HTTP_502_BAD_GATEWAY)
        return Response({"id": message.pk, "lines": list(lines)})

    @extend_schema(
        request=s.ReleaseOneSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={202: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT},
    )
    @action(detail=True, methods=["post"], url_path="release")
    def release_one(self, request: Request, pk: str | None = None) -> Response:
        """Ask for the message to be released (delivered): 202 at once, ``pending`` until
        the node confirms; 409 says who asked or handled it first."""
        message = self.get_object()

        def perform() -> Response:
            serializer = s.ReleaseOneSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            report = _actions().release(
                actor=request.user, ids=[message.pk], **serializer.validated_data
            )
            return self._outcome_one(
                message, report, _("Release requested; waiting for the node to confirm.")
            )

        return idempotent(request, perform)

    @extend_schema(
        request=s.DeleteOneSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={202: OpenApiTypes.OBJECT, 409: OpenApiTypes.OBJECT},
    )
    @action(detail=True, methods=["post"], url_path="delete")
    def delete_one(self, request: Request, pk: str | None = None) -> Response:
        """Ask for the message to be deleted from the node's hold queue: 202 at once,
        ``pending`` until the node confirms; 409 says who asked or handled it first."""
        message = self.get_object()

        def perform() -> Response:
            serializer = s.DeleteOneSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            report = _actions().delete(
                actor=request.user, ids=[message.pk], **serializer.validated_data
            )
            return self._outcome_one(
                message, report, _("Deletion requested; waiting for the node to confirm.")
            )

        return idempotent(request, perform)

    # ------------------------------------------------------------------ many messages

    @extend_schema(
        request=s.ReleaseSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: s.OutcomeReportSerializer, 202: s.OutcomeReportSerializer},
    )
    def release_many(self, request: Request) -> Response:
        """``ids`` (at most 1000) or ``filters``: one request, answered at once (202) with the
        messages ``pending`` and the request's job."""
        return idempotent(
            request,
            lambda: self._act_many(
                Outcome.RELEASE, Outcome.RELEASE_ALLOW, "allow_sender", _actions().release
            ),
        )

    @extend_schema(
        request=s.DeleteSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={200: s.OutcomeReportSerializer, 202: s.OutcomeReportSerializer},
    )
    def delete_many(self, request: Request) -> Response:
        """``ids`` (at most 1000) or ``filters``: one request, answered at once (202) with the
        messages ``pending`` and the request's job."""
        return idempotent(
            request,
            lambda: self._act_many(
                Outcome.DELETE, Outcome.DELETE_BLOCK, "block_sender", _actions().delete
            ),
        )

    @extend_schema(request=s.RefreshSerializer, responses={202: OpenApiTypes.OBJECT})
    def refresh(self, request: Request) -> Response:
        """Read the hold queues of the SMTP nodes now (all in scope, or ``nodes``)."""
        serializer = s.RefreshSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        from .. import ingest

        job = ingest.refresh(actor=request.user, node_ids=serializer.validated_data.get("nodes"))
        return Response(
            {
                "job": job.pk,
                "status": job.status,
                "job_url": _on_base_url(
                    request.build_absolute_uri(reverse("job-detail", args=[job.pk]))
                ),
            },
            status=status.HTTP_202_ACCEPTED,
        )


def content_data(found: Any) -> dict[str, Any]:
    """A ``spamhold.content.MessageContent`` as JSON (attribute names as the backend's)."""
    headers = []
    for header in getattr(found, "headers", []) or []:
        if isinstance(header, dict):
            headers.append({"name": header.get("name", ""), "value": header.get("value", "")})
        else:
            name, value = header
            headers.append({"name": name, "value": value})
    attachments = []
    for item in getattr(found, "attachments", []) or []:
        if isinstance(item, dict):
            attachments.append(
                {
                    "name": item.get("name", ""),
                    "content_type": item.get("content_type", item.get("contentType", "")),
                    "size": item.get("size"),
                }
            )
        else:
            attachments.append(
                {
                    "name": getattr(item, "name", ""),
                    "content_type": getattr(item, "content_type", ""),
                    "size": getattr(item, "size", None),
                }
            )
    return {
        "headers": headers,
        "text": getattr(found, "text", ""),
        "attachments": attachments,
        "truncated": bool(getattr(found, "truncated", False)),
    }


def scoped_ids(user: Any, ids: list[int]) -> set[int]:
    """Which of ``ids`` the user may see (the portal shares this with the API)."""
    return set(
        scoping.scope_queryset(HeldMessage.objects.filter(pk__in=ids), user).values_list(
            "pk", flat=True
        )
    )
