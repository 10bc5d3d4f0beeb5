"""Portal pages of the spam hold: the queue, a message, and the release/delete/refresh posts.

The queue is keyset-paged newest first (``?cursor=``) with the filters of the API
(``spamhold.query``), counts per reason (capped) and checkboxes; a bulk action over
"everything matching the filter" becomes a job whose page shows a live progress bar.
Every action asks for confirmation on its own page first, so all of it works without
JavaScript. Everything that came from a message is shown escaped (templates auto-escape;
nothing here marks text safe).
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext as _
from django.utils.translation import ngettext
from django.views import View
from django.views.generic import TemplateView

from tenants import permissions as perms
from ums import scoping
from ums.portal.views import PortalMixin

from . import query
from .forms import ActionForm, QueueFilterForm
from .models import HeldMessage, Outcome, Status

logger = logging.getLogger(__name__)

PAGE_SIZE = 50
FILTER_FIELDS = tuple(QueueFilterForm.base_fields)
RELEASES = (Outcome.RELEASE, Outcome.RELEASE_ALLOW)


def pending_labels() -> dict[str, str]:
    """What a message shows while its requested outcome waits for the node's confirmation."""
    releasing, deleting = _("Releasing…"), _("Deleting…")
    return {
        Outcome.RELEASE: releasing,
        Outcome.RELEASE_ALLOW: releasing,
        Outcome.DELETE: deleting,
        Outcome.DELETE_BLOCK: deleting,
        Outcome.EXPIRE: _("Expiring…"),
    }


def _actions() -> Any:
    from . import actions

    return actions


def _abilities(user: Any) -> dict[str, bool]:
    return {
        "can_release": user.has_permission(perms.SPAMHOLD_RELEASE),
        "can_delete": user.has_permission(perms.SPAMHOLD_DELETE),
        "can_read_content": user.has_permission(perms.SPAMHOLD_READ_CONTENT),
    }


def _filter_items(params: Any) -> list[tuple[str, str]]:
    """The queue's filter values, for hidden fields and links (what the user typed)."""
    return [(key, params.get(key)) for key in FILTER_FIELDS if params.get(key)]


def _safe_next(request: HttpRequest, value: str | None) -> str:
    home = reverse("spamhold:home")
    if (
        value
        and value.startswith(home)
        and url_has_allowed_host_and_scheme(value, allowed_hosts={request.get_host()})
    ):
        return value
    return home


def _get_message(request: HttpRequest, pk: int) -> HeldMessage:
    if not 0 < int(pk) < 2**63:
        raise Http404
    return scoping.get_in_scope_or_404(HeldMessage.objects.all(), request.user, pk=pk)


class SpamHoldPage(PortalMixin):
    permission_required = perms.SPAMHOLD_VIEW


class QueueView(SpamHoldPage, TemplateView):
    """The hold queue: filters, counts per reason, one keyset page, bulk actions."""

    template_name = "spamhold/queue.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        user = self.request.user
        form = QueueFilterForm(self.request.GET, actor=user)
        form.load_choices()
        rows: list[dict[str, Any]] = []
        counts: list[query.ReasonCount] = []
        result = query.Page([], None, True)
        if form.is_valid():
            filters, path = form.to_filters()
            scoped = scoping.scope_queryset(HeldMessage.objects.all(), user)
            matching = query.apply_filters(scoped, filters, customer_path=path)
            try:
                result = query.page(
                    matching,
                    cursor=self.request.GET.get("cursor"),
                    size=PAGE_SIZE,
                    columns=query.LIST_COLUMNS,
                )
            except ValueError:
                result = query.page(
                    matching, cursor=None, size=PAGE_SIZE, columns=query.LIST_COLUMNS
                )
            rows = result.rows
            without_reason = {k: v for k, v in filters.items() if k != "reason"}
            counts = query.counts_by_reason(
                query.apply_filters(scoped, without_reason, customer_path=path),
                cap=query.COUNT_CAP,
                time_range=query.has_time_range(filters),
            )
        context.update(
            {
                "form": form,
                "rows": rows,
                "page": result,
                "counts": counts,
                "counts_total": query.total(counts, cap=query.COUNT_CAP),
                "counts_exact": all(c.exact for c in counts),
                "count_cap": query.COUNT_CAP,
                "filter_items": _filter_items(self.request.GET),
                "current_reason": self.request.GET.get("reason", ""),
                "filtered": bool(_filter_items(self.request.GET)),
                "here": self.request.get_full_path(),
                "status_labels": query.STATUS_LABELS,
                "pending_labels": pending_labels(),
                "reason_labels": query.REASON_LABELS,
                **_abilities(user),
            }
        )
        return context


class MessageView(SpamHoldPage, View):
    """One message: metadata, why it is held, placeholders for the content and the log.

    The page never waits on the node: it renders at once, and the content (at once) and
    the receipt log (on request) come from :class:`NodeReadView` fragments, fetched by
    static/js/fragment.js or followed as links without JavaScript; the node's time is
    bounded there.
    """

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        message = _get_message(request, pk)
        back = _safe_next(request, request.GET.get("next"))
        query = urlencode({"next": back})
        return render(
            request,
            "spamhold/message.html",
            {
                "message": message,
                "content_url": f"{reverse('spamhold:content', args=[message.pk])}?{query}",
                "log_url": f"{reverse('spamhold:log', args=[message.pk])}?{query}",
                # Each node step has the timeout; the browser waits for all of them.
                "fragment_wait_ms": (_content_timeout() * 5 + 5) * 1000,
                "is_on_hold": message.status == Status.ONHOLD and not message.pending,
                "pending_label": pending_labels().get(message.pending, ""),
                "back": back,
                **_abilities(request.user),
            },
        )


class NodeReadView(SpamHoldPage, View):
    """What a message page reads from the node: a fragment for the page, or a page of its own.

    A request from static/js/fragment.js (``X-Requested-With: fetch``) gets the fragment;
    following the link without JavaScript gets a whole page. Either way the node has
    ``UMS_SPAMHOLD_CONTENT_TIMEOUT`` seconds per step and an unreachable or silent node
    gives a clear message instead of a hanging request.
    """

    part = "content"  # or "log"

    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        message = _get_message(request, pk)
        context: dict[str, Any] = {
            "message": message,
            "part": self.part,
            "back": _safe_next(request, request.GET.get("next")),
        }
        if self.part == "content":
            if not request.user.has_permission(perms.SPAMHOLD_READ_CONTENT):
                raise PermissionDenied
            context["content"], context["content_error"] = _content(request, message)
        else:
            context["log_lines"], context["log_error"] = _log(message)
        fragment = request.headers.get("X-Requested-With") == "fetch"
        name = "_content.html" if self.part == "content" else "_log.html"
        template = f"spamhold/{name}" if fragment else "spamhold/message_part.html"
        response = render(request, template, {**context, "fragment": name})
        # Held mail is read afresh each time (and each read audited), never from a cache.
        response["Cache-Control"] = "no-store"
        return response


def _content_timeout() -> int:
    from . import content as content_module

    return content_module.read_timeout()


def _content(request: HttpRequest, message: HeldMessage) -> tuple[Any, str]:
    from . import content as content_module
    from .api.views import content_data

    try:
        return content_data(content_module.read(actor=request.user, message=message)), ""
    except content_module.MessageUnavailable as exc:
        logger.warning("held message %s: content not available: %s", message.pk, exc)
        return None, _("The content could not be read from the node: %(error)s") % {
            "error": str(exc)[:500]
        }


def _log(message: HeldMessage) -> tuple[list[str] | None, str]:
    from . import content as content_module

    try:
        return list(content_module.receipt_log(message)), ""
    except content_module.MessageUnavailable as exc:
        logger.warning("held message %s: log not available: %s", message.pk, exc)
        return None, _("The log could not be read from the node: %(error)s") % {
            "error": str(exc)[:500]
        }


class ActionView(SpamHoldPage, View):
    """POST release/delete of ticked messages or of everything matching the filter.

    The first POST shows what will happen and asks to confirm; the confirmed POST acts.
    Ticked messages are requested at once (the queue shows them pending until their node
    confirms); "everything matching" starts a request whose job page shows the progress.
    """

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        form = ActionForm(request.POST)
        back = _safe_next(request, request.POST.get("next"))
        if not form.is_valid():
            for error in form.errors.get("__all__", []) or [_("The request was not valid.")]:
                messages.error(request, error)
            return HttpResponseRedirect(back)
        data = form.cleaned_data
        outcome = data["outcome"]
        needed = perms.SPAMHOLD_RELEASE if outcome in RELEASES else perms.SPAMHOLD_DELETE
        if not request.user.has_permission(needed):
            raise PermissionDenied
        scoped = scoping.scope_queryset(HeldMessage.objects.all(), request.user)
        filters: dict[str, Any] | None = None
        if data["all_matching"]:
            filter_form = QueueFilterForm(request.POST, actor=request.user)
            if not filter_form.is_valid():
                messages.error(request, _("The filter is not valid; correct it and try again."))
                return HttpResponseRedirect(back)
            filters, path = filter_form.to_filters()
            matching = query.apply_filters(scoped, filters, customer_path=path)
            # Bounded like the queue's counts (at most COUNT_CAP rows read).
            counted = query.counts_by_reason(
                matching, cap=query.COUNT_CAP, time_range=query.has_time_range(filters)
            )
            count = query.total(counted, cap=query.COUNT_CAP)
            capped = not counted[0].exact
            ids: list[int] = []
        else:
            wanted = list(dict.fromkeys(data["ids"]))
            visible = set(scoped.filter(pk__in=wanted).values_list("pk", flat=True))
            ids = [pk for pk in wanted if pk in visible]
            count, capped = len(ids), False
        if not data["confirmed"]:
            return render(
                request,
                "spamhold/confirm.html",
                {
                    "outcome": outcome,
                    "outcome_label": dict(form.fields["outcome"].choices)[outcome],
                    "is_release": outcome in RELEASES,
                    "count": count,
                    "count_capped": capped,
                    "all_matching": data["all_matching"],
                    "ids": ids,
                    "filter_items": _filter_items(request.POST) if data["all_matching"] else [],
                    "next": back,
                },
            )
        if filters is None and not ids:
            messages.info(request, _("Nothing was selected that you may act on."))
            return HttpResponseRedirect(back)
        try:
            if filters is not None:
                job = _actions().start_bulk(actor=request.user, outcome=outcome, filters=filters)
                return redirect("portal:job-detail", pk=job.pk)
            report = self._act(request, outcome, ids)
        except (ValidationError, PermissionDenied) as exc:
            messages.error(request, "; ".join(getattr(exc, "messages", [str(exc)])))
            return HttpResponseRedirect(back)
        self._summarise(request, outcome, report)
        return HttpResponseRedirect(back)

    @staticmethod
    def _act(request: HttpRequest, outcome: str, ids: list[int]) -> Any:
        actions = _actions()
        if outcome in RELEASES:
            return actions.release(
                actor=request.user, ids=ids, allow_sender=outcome == Outcome.RELEASE_ALLOW
            )
        return actions.delete(
            actor=request.user, ids=ids, block_sender=outcome == Outcome.DELETE_BLOCK
        )

    @staticmethod
    def _summarise(request: HttpRequest, outcome: str, report: Any) -> None:
        from .api.views import already_message

        pending = len(report.pending)
        if pending:
            # Asked, not done: the queue shows them "Releasing…"/"Deleting…" until the
            # node confirms.
            text = (
                ngettext(
                    "Release of %(n)d message requested; it shows as Releasing… until its "
                    "node confirms.",
                    "Release of %(n)d messages requested; they show as Releasing… until "
                    "their node confirms.",
                    pending,
                )
                if outcome in RELEASES
                else ngettext(
                    "Deletion of %(n)d message requested; it shows as Deleting… until its "
                    "node confirms.",
                    "Deletion of %(n)d messages requested; they show as Deleting… until "
                    "their node confirms.",
                    pending,
                )
            )
            messages.success(request, text % {"n": pending})
        for entry in report.already[:20]:
            messages.warning(request, f"#{entry.get('id')}: {already_message(entry)}")
        for entry in report.failed[:20]:
            messages.error(
                request,
                _("#%(id)s: the node could not carry this out: %(error)s")
                % {"id": entry.get("id"), "error": entry.get("error", "")},
            )
        for entry in getattr(report, "warnings", [])[:20]:
            messages.warning(request, f"#{entry.get('id')}: {entry.get('warning', '')}")
        if report.not_found:
            messages.warning(
                request,
                ngettext(
                    "%(n)d message was not found.", "%(n)d messages were not found.",
                    len(report.not_found),
                )
                % {"n": len(report.not_found)},
            )  # fmt: skip
        if not (pending or report.already or report.failed or report.not_found):
            messages.info(request, _("Nothing was selected that you may act on."))


class RefreshView(SpamHoldPage, View):
    """POST: read the hold queues of the SMTP nodes now; shows the job's progress page."""

    http_method_names = ["post"]

    def post(self, request: HttpRequest) -> HttpResponse:
        from . import ingest

        try:
            job = ingest.refresh(actor=request.user)
        except (ValidationError, PermissionDenied) as exc:
            messages.error(request, "; ".join(getattr(exc, "messages", [str(exc)])))
            return redirect("spamhold:home")
        return redirect("portal:job-detail", pk=job.pk)
