"""A dry-run converge job shows its changes per file on the job page, escaped."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from tenants.models import Administrator
from tests.fixtures import Cast
from ums.models import Job

pytestmark = pytest.mark.django_db


def dry_run_job(cast: Cast, diffs: dict[str, str]) -> Job:
    return Job.objects.create(
        kind="node.converge_dry_run",
        title="Show changes (dry run): smtp1",
        customer_path=cast.ministry.path,
        status=Job.SUCCEEDED,
        result={"dryRun": True, "changed": {"postfix": list(diffs)}, "diffs": diffs},
    )


def test_dry_run_diff_is_shown_per_file_and_escaped(
    cast: Cast, login: Callable[[Administrator], Client]
) -> None:
    job = dry_run_job(
        cast,
        {"/etc/postfix/main.cf": "-myhostname = a\n+myhostname = <script>alert(1)</script>\n"},
    )
    page = login(cast.sub_admin).get(reverse("portal:job-detail", args=[job.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "<code>/etc/postfix/main.cf</code>" in html
    assert "+myhostname = &lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)" not in html


def test_dry_run_without_changes_says_so(
    cast: Cast, login: Callable[[Administrator], Client]
) -> None:
    job = dry_run_job(cast, {})
    html = login(cast.sub_admin).get(reverse("portal:job-detail", args=[job.pk])).content
    assert b"nothing would change" in html
