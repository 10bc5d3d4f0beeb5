"""The home dashboard: the subtree's state at a glance, scoped, in a fixed number of queries."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tests.fixtures import Cast
from tests.portal.polish_data import build_tree

pytestmark = pytest.mark.django_db


def test_home_counts_only_what_is_in_scope(cast: Cast, login: Any) -> None:
    build_tree(cast)
    response = login(cast.sub_admin).get(reverse("portal:home"))
    assert response.status_code == 200
    counts = response.context["board"].counts
    # Government, Ministry, Department; gov.example and dept.gov.example; user0, user1; smtp1;
    # 3 + 2 held in Ministry. Shop's domain, mailbox, node and 7 held messages are not counted.
    assert counts == {
        "customers": 3,
        "domains": 2,
        "mailboxes": 2,
        "nodes": 1,
        "held": 5,
    }
    html = response.content.decode()
    assert "shop.example" not in html and "mx.shop.example" not in html


def test_home_shows_alerts_jobs_quota_and_charts(cast: Cast, login: Any) -> None:
    tree = build_tree(cast)
    html = login(cast.sub_admin).get(reverse("portal:home")).content.decode()
    # The offline node and its open alert, linked to the node; never the sibling's alert.
    assert "No metrics for 3 collections." in html
    assert reverse("servers:node-detail", args=[tree.node.pk]) in html
    assert "Shop node alert." not in html
    # The failed job with its human message, linked; the traceback stays out.
    assert reverse("portal:job-detail", args=[tree.failed_job.pk]) in html
    assert "Could not reach smtp1.gov.example: connection refused" in html
    assert "Traceback" not in html and "ConnectionRefusedError" not in html
    assert "Shop secret job" not in html
    # The running job with its progress bar.
    assert reverse("portal:job-detail", args=[tree.running_job.pk]) in html
    assert 'value="25"' in html
    # Quota: 2 GB allocated of 20 GB, 2 of 10 mailboxes, 2 of 5 domains; 300 MB used.
    assert "2.0\xa0GB / 20.0\xa0GB" in html
    assert "300.0\xa0MB" in html
    # Two server-rendered charts (held mail per day, mailboxes created per day).
    assert html.count('<svg viewBox="0 0 600 140" role="img"') == 2
    assert "Mail held per day (14 days) <strong>3</strong>" in html


def test_home_without_permissions_shows_only_jobs(cast: Cast, login: Any) -> None:
    from tests.fixtures import make_admin

    build_tree(cast)
    nobody = make_admin(cast.ministry, "plain.admin", [])
    response = login(nobody).get(reverse("portal:home"))
    assert response.status_code == 200
    assert response.context["board"].counts == {}
    assert response.context["board"].quota is None
    # Jobs are visible to every administrator of the subtree.
    assert "Could not reach smtp1.gov.example" in response.content.decode()


def test_home_runs_a_fixed_number_of_queries(
    cast: Cast, login: Any, django_assert_max_num_queries: Any
) -> None:
    build_tree(cast, mailboxes=2)
    client = login(cast.sub_admin)
    client.get(reverse("portal:home"))  # warm: session, permissions caches
    with django_assert_max_num_queries(25) as small:
        client.get(reverse("portal:home"))
    build_tree_more(cast)
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = client.get(reverse("portal:home"))
    assert response.context["board"].counts["mailboxes"] == 2 + 30


def build_tree_more(cast: Cast) -> None:
    """Many more rows of every kind the dashboard reads."""
    from mail import actions as mail_actions
    from mail.models import Domain
    from tenants import limit_actions
    from tests.fixtures import PASSWORD
    from ums.models import Job

    limit_actions.set_limits(
        actor=cast.root_admin, customer=cast.government, max_mailboxes=None, max_quota_gb=None
    )
    domain = Domain.objects.get(name="gov.example")
    for i in range(30):
        mail_actions.create_mailbox(
            actor=cast.root_admin, domain=domain, local_part=f"more{i}", password=PASSWORD
        )
    Job.objects.bulk_create(
        Job(kind="x", title=f"j{i}", status=Job.FAILED, customer_path=cast.ministry.path)
        for i in range(20)
    )


def test_home_is_the_landing_page_and_in_the_navigation(cast: Cast, login: Any) -> None:
    html = login(cast.sub_admin).get(reverse("portal:home")).content.decode()
    assert 'href="/" class="nav-item active" aria-current="page"' in html
    assert f'href="{reverse("portal:job-list")}" class="nav-item"' in html
    # The API documentation is linked from every page.
    assert f'href="{reverse("api-docs")}"' in html
