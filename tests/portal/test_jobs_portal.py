"""Jobs in the portal: a scoped list with a status filter, a red bar and a human message for a
failed job (never a traceback), titles in the reader's language, announcements that link."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.messages import constants
from django.contrib.messages.storage.base import Message
from django.contrib.messages.storage.cookie import CookieStorage
from django.http import HttpResponse
from django.urls import reverse
from django.utils import translation

from tests.fixtures import Cast
from tests.portal.polish_data import build_tree
from ums.models import Job
from ums.portal import jobtext, notices

pytestmark = pytest.mark.django_db


def test_job_list_is_scoped_and_filters_by_status(cast: Cast, login: Any) -> None:
    tree = build_tree(cast)
    client = login(cast.sub_admin)
    url = reverse("portal:job-list")
    listed = {j.pk for j in client.get(url).context["object_list"]}
    assert listed == {tree.failed_job.pk, tree.running_job.pk}
    assert [j.pk for j in client.get(url, {"status": "failed"}).context["object_list"]] == [
        tree.failed_job.pk
    ]
    active = client.get(url, {"status": "active"}).context["object_list"]
    assert [j.pk for j in active] == [tree.running_job.pk]
    assert client.get(url, {"status": "succeeded"}).context["object_list"] == []
    # An unknown filter shows everything rather than failing.
    assert len(client.get(url, {"status": "<script>"}).context["object_list"]) == 2
    html = client.get(url).content.decode()
    assert "Shop secret job" not in html
    assert 'class="badge job-status job-status-failed"' in html
    assert "Could not reach smtp1.gov.example: connection refused" in html
    assert "Traceback" not in html


def test_failed_job_page_shows_a_red_bar_and_the_first_line_only(cast: Cast, login: Any) -> None:
    tree = build_tree(cast)
    client = login(cast.sub_admin)
    html = client.get(reverse("portal:job-detail", args=[tree.failed_job.pk])).content.decode()
    assert 'class="job-failed" role="alert"' in html
    assert "job-progress-failed" in html
    assert "Could not reach smtp1.gov.example: connection refused" in html
    assert "Traceback" not in html and "deploy/jobs.py" not in html
    status = client.get(reverse("portal:job-status", args=[tree.failed_job.pk])).json()
    assert status["error"] == "Could not reach smtp1.gov.example: connection refused"
    # Outside scope: 404, on the page and on the status the progress bar polls.
    for name in ("portal:job-detail", "portal:job-status"):
        assert client.get(reverse(name, args=[tree.outside_job.pk])).status_code == 404


def test_a_bare_traceback_is_never_shown(cast: Cast, login: Any) -> None:
    job = Job.objects.create(
        kind="x",
        title="Broken",
        status=Job.FAILED,
        customer_path=cast.ministry.path,
        error='Traceback (most recent call last):\n  File "/srv/x.py", line 1\nKeyError: 1',
    )
    html = login(cast.sub_admin).get(reverse("portal:job-detail", args=[job.pk])).content.decode()
    assert "Traceback" not in html and "KeyError" not in html
    assert "This job failed." in html
    assert jobtext.error_summary(job.error) == ""


def test_job_titles_follow_the_readers_language(cast: Cast) -> None:
    tree = build_tree(cast)
    jobtext.attach_hosts([tree.failed_job])
    with translation.override("en"):
        assert jobtext.title(tree.failed_job) == "Converge smtp1.gov.example"
    with translation.override("ru"):
        russian = jobtext.title(tree.failed_job)
    assert "smtp1.gov.example" in russian and not russian.startswith("Converge")
    with translation.override("ru"):
        import_title = jobtext.title(tree.running_job)
    assert "40" in import_title and "Import" not in import_title
    # An unknown kind keeps its stored title.
    assert jobtext.title(tree.outside_job) == "Shop secret job"


def test_job_announcements_link_to_the_job(cast: Cast) -> None:
    tagged = Message(constants.SUCCESS, "Queued.", extra_tags="job:42")
    assert notices.job_id_of(tagged) == 42
    with translation.override("en"):
        text = "Import started as job 17; it applies all rows or none."
        assert notices.job_id_of(Message(constants.SUCCESS, text)) == 17
    assert notices.job_id_of(Message(constants.SUCCESS, "Customer created.")) is None


def test_the_base_page_renders_the_job_link(cast: Cast, login: Any, rf: Any) -> None:
    client = login(cast.sub_admin)
    job = Job.objects.create(kind="x", title="t", customer_path=cast.ministry.path)
    # A message queued by announce_job (here written into the messages cookie, as the
    # redirecting view's response would) is rendered on the next page with a link.
    storage = CookieStorage(rf.get("/"))
    storage.add(constants.SUCCESS, "Import queued.", extra_tags=f"job:{job.pk}")
    response = HttpResponse()
    storage.update(response)
    client.cookies["messages"] = response.cookies["messages"].value
    html = client.get(reverse("portal:job-list")).content.decode()
    assert "Import queued." in html
    assert f'href="{reverse("portal:job-detail", args=[job.pk])}">Open the job</a>' in html


def test_log_lines_written_as_message_ids_are_shown_translated(cast: Cast, login: Any) -> None:
    entry = jobtext.log_entry("Converge %(host)s", host="smtp1.gov.example")
    job = Job.objects.create(
        kind="x",
        title="t",
        customer_path=cast.ministry.path,
        log=f"[10:00:00] {entry}\n[10:00:01] plain line from a handler\n[10:00:02] i18n:{{broken\n",
    )
    with translation.override("en"):
        english = jobtext.translate_log(job.log)
    assert english.splitlines() == [
        "[10:00:00] Converge smtp1.gov.example",
        "[10:00:01] plain line from a handler",
        "[10:00:02] i18n:{broken",
    ]
    with translation.override("ru"):
        russian = jobtext.translate_log(job.log)
    first = russian.splitlines()[0]
    assert first.startswith("[10:00:00] ") and "smtp1.gov.example" in first
    assert "Converge" not in first
    # The page and the JSON the progress bar polls both show the rendered lines.
    client = login(cast.sub_admin)
    html = client.get(reverse("portal:job-detail", args=[job.pk])).content.decode()
    assert "[10:00:00] Converge smtp1.gov.example" in html and "i18n:{&quot;m&quot;" not in html
    status = client.get(reverse("portal:job-status", args=[job.pk])).json()
    assert status["log"].startswith("[10:00:00] Converge smtp1.gov.example\n")


def test_node_page_links_to_all_its_jobs(cast: Cast, login: Any) -> None:
    tree = build_tree(cast)
    client = login(cast.sub_admin)
    html = client.get(reverse("servers:node-detail", args=[tree.node.pk])).content.decode()
    link = f"{reverse('portal:job-list')}?object=servers.node:{tree.node.pk}"
    assert f'href="{link}"' in html
    listed = client.get(link).context["object_list"]
    assert [j.pk for j in listed] == [tree.failed_job.pk]
    # A malformed filter is ignored rather than an error.
    assert client.get(reverse("portal:job-list"), {"object": "x'; drop"}).status_code == 200
