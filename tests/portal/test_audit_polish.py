"""The audit log reads as sentences: translated action labels, links to the objects that
still exist in scope, and a History tab on object pages. The CSV keeps the raw codes."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from audit import labels
from audit.models import AuditRecord
from tenants import actions
from tests.fixtures import Cast
from tests.portal.polish_data import build_tree

pytestmark = pytest.mark.django_db


def test_every_action_code_the_code_writes_has_a_label() -> None:
    from pathlib import Path

    from django.conf import settings

    codes: set[str] = set()
    pattern = re.compile(r'(?:auditing\.record|_record|_audit)\(\s*"([a-z_]+\.[a-z_.]+)"')
    for path in Path(settings.BASE_DIR).glob("*/*.py"):
        if path.parts[-2] in {"tests", ".venv", "benchmarks"}:
            continue
        codes.update(pattern.findall(path.read_text()))
    assert len(codes) > 40
    missing = sorted(code for code in codes if code not in labels.ACTION_LABELS)
    assert not missing, f"audit actions without a label: {missing}"


def test_audit_list_shows_labels_and_links_objects_in_scope(cast: Cast, login: Any) -> None:
    actions.update_customer(actor=cast.sub_admin, customer=cast.department, notes="n")
    client = login(cast.sub_admin)
    html = client.get(reverse("audit:record-list")).content.decode()
    assert '<span class="action-label">Customer changed</span>' in html
    assert '<code class="action-code muted">customer.update</code>' in html
    detail = reverse("tenants:customer-detail", args=[cast.department.pk])
    assert f'<a href="{detail}">Department</a>' in html
    history = reverse("audit:object-history", args=["tenants.customer", cast.department.pk])
    assert history in html


def test_labels_follow_the_language(cast: Cast, login: Any) -> None:
    from django.utils import translation

    with translation.override("ru"):
        russian = labels.label("customer.update")
    with translation.override("en"):
        assert labels.label("customer.update") == "Customer changed"
    # Unknown codes are shown as they are (nothing is lost).
    assert labels.label("something.new") == "something.new"
    assert isinstance(russian, str) and russian


def test_a_deleted_object_is_named_but_not_linked(cast: Cast, login: Any) -> None:
    gone = actions.create_customer(actor=cast.sub_admin, name="Shortlived", parent=cast.ministry)
    actions.delete_customer(actor=cast.sub_admin, customer=gone)
    html = login(cast.sub_admin).get(reverse("audit:record-list")).content.decode()
    assert "Shortlived" in html
    assert reverse("tenants:customer-detail", args=[gone.pk]) not in html
    # Its history still opens: the records outlive the object.
    response = login(cast.sub_admin).get(
        reverse("audit:object-history", args=["tenants.customer", gone.pk])
    )
    assert response.status_code == 200
    assert "This object no longer exists." in response.content.decode()
    assert {r.action for r, _c in response.context["rows"]} == {
        "customer.create",
        "customer.delete",
    }


def test_csv_export_keeps_raw_codes(cast: Cast, login: Any) -> None:
    actions.update_customer(actor=cast.sub_admin, customer=cast.department, notes="x")
    response = login(cast.sub_admin).get(reverse("audit:record-export"))
    body = b"".join(response.streaming_content).decode()
    assert "customer.update" in body and "Customer changed" not in body


def test_history_page_lists_only_that_objects_records(cast: Cast, login: Any) -> None:
    actions.update_customer(actor=cast.sub_admin, customer=cast.department, notes="one")
    actions.update_customer(actor=cast.sub_admin, customer=cast.ministry, notes="two")
    client = login(cast.sub_admin)
    url = reverse("audit:object-history", args=["tenants.customer", cast.department.pk])
    response = client.get(url)
    assert response.status_code == 200
    rows = response.context["rows"]
    assert rows and all(r.object_id == str(cast.department.pk) for r, _c in rows)
    assert all(r.object_type == "tenants.customer" for r, _c in rows)
    assert "History of Department" in response.content.decode()


def test_history_outside_scope_or_nonsense_is_404(cast: Cast, login: Any) -> None:
    actions.update_customer(actor=cast.sibling_admin, customer=cast.shop, notes="x")
    client = login(cast.sub_admin)
    url = reverse("audit:object-history", args=["tenants.customer", cast.shop.pk])
    assert client.get(url).status_code == 404
    assert client.get("/audit/history/nosuch.model/1/").status_code == 404
    assert client.get("/audit/history/tenants.customer/99999999/").status_code == 404
    assert client.get("/audit/history/tenants.customer/1x/").status_code == 404
    # Without the audit permission: no history (403 like the audit log itself).
    viewer = login(cast.ministry_viewer)
    assert viewer.get(url).status_code in (403, 404)


def test_object_pages_have_a_history_tab(cast: Cast, login: Any) -> None:
    tree = build_tree(cast)
    client = login(cast.sub_admin)
    pages = [
        (
            reverse("tenants:customer-detail", args=[cast.ministry.pk]),
            "tenants.customer",
            cast.ministry.pk,
        ),
        (
            reverse("tenants:administrator-detail", args=[cast.ministry_viewer.pk]),
            "tenants.administrator",
            cast.ministry_viewer.pk,
        ),
        (reverse("servers:node-detail", args=[tree.node.pk]), "servers.node", tree.node.pk),
        (reverse("mail:domain-detail", args=[tree.domain.pk]), "mail.domain", tree.domain.pk),
        (reverse("spamhold:message", args=[tree.held.pk]), "spamhold.heldmessage", tree.held.pk),
    ]
    for page, object_type, pk in pages:
        html = client.get(page).content.decode()
        history = reverse("audit:object-history", args=[object_type, pk])
        assert f'href="{history}"' in html, page
        assert client.get(history).status_code == 200, history


def test_audit_page_runs_a_fixed_number_of_queries(
    cast: Cast, login: Any, django_assert_max_num_queries: Any
) -> None:
    client = login(cast.sub_admin)
    url = reverse("audit:record-list")
    client.get(url)
    with django_assert_max_num_queries(30) as few:
        client.get(url)
    for i in range(15):
        made = actions.create_customer(actor=cast.sub_admin, name=f"Unit {i}", parent=cast.ministry)
        actions.update_customer(actor=cast.sub_admin, customer=made, notes=str(i))
    assert AuditRecord.objects.count() > 30
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(url)
