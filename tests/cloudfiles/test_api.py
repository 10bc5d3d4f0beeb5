"""Scoping of the cloud files API: /api/v1/files/policies/ and /api/v1/files/revoke-links/."""

from __future__ import annotations

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from audit.models import AuditRecord
from cloudfiles.models import FilesPolicy
from tests.api.contracts import COVERED
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain, make_mailbox
from ums.models import Job

pytestmark = pytest.mark.django_db
COVERED.update({"files-policy", "files-revoke-links"})


def test_policy_scoping_unauthenticated_outsider_and_viewer(cast: Cast) -> None:
    url = reverse("files-policy-detail", args=[cast.ministry.pk])
    assert APIClient().get(url).status_code == 401
    sibling = token_client(cast.sibling_admin)  # administers the ISP subtree
    assert sibling.get(url).status_code == 404
    assert sibling.patch(url, {"externalLinks": False}, format="json").status_code == 404
    viewer = token_client(cast.ministry_viewer)
    assert viewer.get(url).status_code == 200
    assert viewer.patch(url, {"externalLinks": False}, format="json").status_code == 403
    assert not FilesPolicy.objects.exists()
    admin = token_client(cast.sub_admin)
    response = admin.patch(url, {"externalLinks": False, "expireDays": 30}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["own"]["externalLinks"] is False and body["own"]["internalShares"] is None
    assert body["effective"]["expireDays"]["source"]["id"] == cast.ministry.pk
    record = AuditRecord.objects.get(action="files.policy.update")
    assert record.customer_path == cast.ministry.path


def test_revoke_links_scoping(cast: Cast, django_capture_on_commit_callbacks) -> None:
    url = reverse("files-revoke-links")
    assert APIClient().post(url, {"scope": "everyone"}, format="json").status_code == 401
    outside = make_mailbox(make_domain(cast.isp, "isp.example"), "eve")
    admin = token_client(cast.sub_admin)
    response = admin.post(url, {"scope": "mailbox", "mailbox": outside.pk}, format="json")
    assert response.status_code == 404
    response = admin.post(url, {"scope": "mailbox"}, format="json")
    assert response.status_code == 400 and "mailbox" in response.json()["errors"]
    viewer = token_client(cast.ministry_viewer)
    response = viewer.post(url, {"scope": "customer", "customer": cast.ministry.pk}, format="json")
    assert response.status_code == 403
    assert not Job.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(url, {"scope": "everyone"}, format="json")
    assert response.status_code == 202, response.content
    job = Job.objects.get(pk=response.json()["job"])
    # "Everyone" is everyone the administrator administers: their own subtree.
    assert job.customer_path == cast.sub_admin.customer_path
    assert job.params["customer_path"] == cast.sub_admin.customer_path
    assert job.status == Job.SUCCEEDED, job.error
