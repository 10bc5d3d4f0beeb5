"""Portal pages for jobs: a list and a detail page with a live progress bar and log.

Titles and failure messages go through :mod:`ums.portal.jobtext`: translated at display
time, and never a Python traceback (those stay in the server log).
"""

from __future__ import annotations

import re
from typing import Any

from django.db import models
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views import View

from ums import scoping
from ums.models import Job
from ums.portal import jobtext
from ums.portal.views import PortalMixin, ScopedListView

OBJECT_FILTER = re.compile(r"([a-z0-9_]{1,30}\.[a-z0-9_]{1,33}):([0-9]{1,18})")
STATUS_FILTERS = {
    "failed": (Job.FAILED,),
    "active": (Job.PENDING, Job.RUNNING),
    "succeeded": (Job.SUCCEEDED,),
    "cancelled": (Job.CANCELLED,),
}


class JobListView(ScopedListView):
    template_name = "jobs/job_list.html"
    model = Job
    ordering = "-id"

    def filter_queryset(self, queryset: models.QuerySet) -> models.QuerySet:
        self.status = self.request.GET.get("status", "")
        statuses = STATUS_FILTERS.get(self.status)
        if statuses is None:
            self.status = ""
        else:
            queryset = queryset.filter(status__in=statuses)
        # ?object=servers.node:12 — the jobs of one object (a node page links here).
        self.target = OBJECT_FILTER.fullmatch(self.request.GET.get("object", ""))
        if self.target:
            queryset = queryset.filter(
                object_type=self.target.group(1), object_id=self.target.group(2)
            )
        return queryset

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        jobtext.attach_hosts(context["object_list"])
        context["status"] = self.status
        context["object_filter"] = self.target.group(0) if self.target else ""
        return context


def _job_or_404(request: HttpRequest, pk: int) -> Job:
    return scoping.get_in_scope_or_404(Job.objects.all(), request.user, pk=pk)


class JobDetailView(PortalMixin, View):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = _job_or_404(request, pk)
        jobtext.attach_hosts([job])
        return render(request, "jobs/job_detail.html", {"job": job})


class JobStatusView(PortalMixin, View):
    """What the progress bar polls (static/js/jobs.js); the same data as the API, smaller."""

    def get(self, request: HttpRequest, pk: int) -> JsonResponse:
        job = _job_or_404(request, pk)
        data: dict[str, Any] = {
            "status": job.status,
            "statusLabel": str(job.get_status_display()),
            "percent": job.percent,
            "done": job.progress_done,
            "total": job.progress_total,
            "finished": job.is_finished,
            "log": jobtext.translate_log(job.log[-20000:]),
            "error": jobtext.error_summary(job.error),
        }
        return JsonResponse(data)
