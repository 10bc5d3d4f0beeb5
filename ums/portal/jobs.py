"""Portal pages for jobs: a list and a detail page with a live progress bar and log."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.views import View

from ums import scoping
from ums.models import Job
from ums.portal.views import PortalMixin, ScopedListView


class JobListView(ScopedListView):
    template_name = "jobs/job_list.html"
    model = Job
    ordering = "-id"


class JobDetailView(PortalMixin, View):
    def get(self, request: HttpRequest, pk: int) -> HttpResponse:
        job = get_object_or_404(scoping.scope_queryset(Job.objects.all(), request.user), pk=pk)
        return render(request, "jobs/job_detail.html", {"job": job})


class JobStatusView(PortalMixin, View):
    """What the progress bar polls (static/js/jobs.js); the same data as the API, smaller."""

    def get(self, request: HttpRequest, pk: int) -> JsonResponse:
        job = get_object_or_404(scoping.scope_queryset(Job.objects.all(), request.user), pk=pk)
        data: dict[str, Any] = {
            "status": job.status,
            "statusLabel": str(job.get_status_display()),
            "percent": job.percent,
            "done": job.progress_done,
            "total": job.progress_total,
            "finished": job.is_finished,
            "log": job.log[-20000:],
            "error": job.error.split("\n\n")[0][:2000],
        }
        return JsonResponse(data)
