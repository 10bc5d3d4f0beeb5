"""The per-domain "Verify copies" of the portal (the domain's snapshot page), against the
real S3 server of tests/backup/test_offnode_verify.py: a POST with the page's CSRF token
starts the same job as the copy's API action, audited the same, scoped to the domain;
each copy's last verification (when, ok or the error naming the object) is shown there."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse

from audit.models import AuditRecord
from backup import offnode_verify_run
from backup.models_offnode import OffnodeCopy
from tests.fixtures import Cast
from ums.models import Job

from .test_offnode_verify import STREAMS, _on_disk, copies  # noqa: F401  (fixture)
from .test_portal import portal

pytestmark = pytest.mark.django_db(transaction=True)  # jobs run after commit


def _csrf_client(admin) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin)
    return client


def _token(page: str) -> str:
    found = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert found, "no CSRF token on the page"
    return found.group(1)


def test_verify_copies_from_the_domain_page_shows_each_copys_result(
    cast: Cast,
    copies,  # noqa: F811
    s3_server,
) -> None:
    _setting, rows, _archives, _driver = copies
    copy = rows[OffnodeCopy.TARGET]
    page_url = f"/backup/domains/{copy.domain_id}/snapshots/"
    verify_url = f"/backup/domains/{copy.domain_id}/verify-copies/"
    client = _csrf_client(cast.sub_admin)
    page = client.get(page_url).content.decode()
    assert "Off-node copies" in page and "not verified yet" in page
    assert verify_url in page and "Verify copies" in page

    # Without the page's token the POST is refused and starts nothing.
    assert client.post(verify_url).status_code == 403
    assert not Job.objects.filter(kind=offnode_verify_run.VERIFY_JOB).exists()

    response = client.post(verify_url, {"csrfmiddlewaretoken": _token(page)})
    assert response.status_code == 302
    job = Job.objects.get(kind=offnode_verify_run.VERIFY_JOB)
    assert response["Location"] == reverse("portal:job-detail", args=[job.pk])
    assert job.status == Job.SUCCEEDED, f"{job.log}\n{job.error}"
    assert job.params == {"domain_name": STREAMS} and job.progress_total == 1
    request = AuditRecord.objects.get(action="offnode_copy.verify_request")
    assert request.changes["domain"] == STREAMS and request.changes["job"] == job.pk
    assert request.customer_path == copy.customer_path
    # Only this domain's copy was read; the other domain's stays unverified.
    assert OffnodeCopy.objects.get(pk=rows[OffnodeCopy.ARCHIVE].pk).verified_at is None
    page = client.get(page_url).content.decode()
    assert "verified" in page and "not verified yet" not in page

    # A damaged object: the page names it, with the failure.
    first = _on_disk(
        s3_server, copy.target, f"ums-offnode/{STREAMS}/c20261201T000000Z/00000-ums-manual-0.zfs"
    )
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0x01
    first.write_bytes(bytes(data))
    client.post(verify_url, {"csrfmiddlewaretoken": _token(page)})
    job = Job.objects.filter(kind=offnode_verify_run.VERIFY_JOB).latest("id")
    assert job.status == Job.FAILED
    page = client.get(page_url).content.decode()
    assert "verification failed" in page and "00000-ums-manual-0.zfs" in page
    assert "cannot be decrypted" in page


def test_the_domain_button_is_scoped_like_the_api(cast: Cast, copies) -> None:  # noqa: F811
    _setting, rows, _archives, _driver = copies
    domain_id = rows[OffnodeCopy.TARGET].domain_id
    verify_url = f"/backup/domains/{domain_id}/verify-copies/"
    assert portal(cast.sibling_admin).post(verify_url).status_code == 404
    viewer = portal(cast.ministry_viewer)
    page = viewer.get(f"/backup/domains/{domain_id}/snapshots/").content.decode()
    assert "Off-node copies" in page and verify_url not in page
    assert viewer.post(verify_url).status_code in (403, 404)
    assert not Job.objects.filter(kind=offnode_verify_run.VERIFY_JOB).exists()


def test_a_domain_without_a_copy_says_so(cast: Cast) -> None:
    from tests.mail.helpers import make_domain

    domain = make_domain(cast.ministry, "nocopy.example")
    client = portal(cast.sub_admin)
    page = client.get(f"/backup/domains/{domain.pk}/snapshots/").content.decode()
    assert "Verify copies" not in page
    response = client.post(f"/backup/domains/{domain.pk}/verify-copies/", follow=True)
    assert response.status_code == 200
    assert "This domain has no off-node copy to verify yet." in response.content.decode()
    assert not Job.objects.filter(kind=offnode_verify_run.VERIFY_JOB).exists()
