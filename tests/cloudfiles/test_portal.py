"""The cloud files portal page: the policy form and the one-click revocation job."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from cloudfiles.models import FilesPolicy
from tests.fixtures import Cast
from ums.models import Job

pytestmark = pytest.mark.django_db


def test_policy_form_saves_inherits_and_refuses_out_of_scope(client, cast: Cast) -> None:
    client.force_login(cast.sub_admin)
    client.cookies["django_language"] = "en"
    url = reverse("cloudfiles:customer", args=[cast.ministry.pk])
    page = client.get(url)
    assert page.status_code == 200
    assert "Revoke all external links" in page.content.decode()
    response = client.post(url, {"external_links": "no", "expire_days": "14", "quota_mb": ""})
    assert response.status_code == 302, response.content
    row = FilesPolicy.objects.get(pk=cast.ministry.pk)
    assert (row.external_links, row.expire_days, row.internal_shares) == (False, 14, None)
    response = client.post(url, {"expire_days": "-3"})
    assert response.status_code == 200 and "expire_days" in response.context["form"].errors
    assert client.get(reverse("cloudfiles:customer", args=[cast.isp.pk])).status_code == 404
    assert client.get(reverse("cloudfiles:home")).status_code == 302


def test_one_click_revocation_runs_a_job_and_audits_the_count(
    client, cast: Cast, django_capture_on_commit_callbacks
) -> None:
    client.force_login(cast.sub_admin)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            reverse("cloudfiles:revoke", args=[cast.ministry.pk]), {"scope": "customer"}
        )
    job = Job.objects.get(kind="files.revoke_links")
    assert response.status_code == 302 and response.url == reverse(
        "portal:job-detail", args=[job.pk]
    )
    assert job.status == Job.SUCCEEDED, job.error
    # No cloud files node serves this tree: nothing to revoke, and that is audited too.
    assert job.result["revoked"] == 0 and job.result["nodes"] == 0
    record = AuditRecord.objects.get(action="files.links.revoked")
    assert record.customer_path == cast.ministry.path and record.changes["revoked"] == 0
    response = client.post(
        reverse("cloudfiles:revoke", args=[cast.ministry.pk]),
        {"scope": "mailbox", "email": "nobody@nowhere.example"},
    )
    assert response.status_code == 302
    assert Job.objects.filter(kind="files.revoke_links").count() == 1


def test_viewer_sees_the_page_but_cannot_change_anything(client, cast: Cast) -> None:
    client.force_login(cast.ministry_viewer)
    client.cookies["django_language"] = "en"
    url = reverse("cloudfiles:customer", args=[cast.ministry.pk])
    page = client.get(url)
    assert page.status_code == 200 and "Revoke all" not in page.content.decode()
    assert client.post(url, {"external_links": "no"}).status_code == 403
    revoke = client.post(
        reverse("cloudfiles:revoke", args=[cast.ministry.pk]), {"scope": "customer"}
    )
    assert revoke.status_code == 403
    assert not FilesPolicy.objects.exists()
