"""The customer tree: children expand in place (fetched lazily), any depth, scoped."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tenants import actions
from tests.fixtures import Cast

pytestmark = pytest.mark.django_db


def test_tree_rows_offer_a_toggle_only_where_there_are_children(cast: Cast, login: Any) -> None:
    html = login(cast.sub_admin).get(reverse("tenants:customer-list")).content.decode()
    # Government's child Ministry has a child (Department): a toggle that fetches it.
    children_url = reverse("tenants:customer-children", args=[cast.ministry.pk])
    assert f'data-tree-url="{children_url}?depth=1"' in html
    assert 'aria-expanded="false"' in html
    # Without JavaScript the toggle stays hidden and the name is a plain link.
    assert '<button type="button" class="tree-toggle" hidden' in html
    assert f'href="{reverse("tenants:customer-detail", args=[cast.ministry.pk])}"' in html
    assert "js/tree.js" in html


def test_children_fragment_goes_any_depth_with_indentation(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    leaf = actions.create_customer(actor=None, name="Bureau", parent=cast.department)
    response = client.get(
        reverse("tenants:customer-children", args=[cast.ministry.pk]), {"depth": "1"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert "Department" in html and 'data-tree-depth="1"' in html
    assert f'data-tree-parent="{cast.ministry.pk}"' in html
    # Department has a child in turn: its own toggle, one level deeper.
    deeper = reverse("tenants:customer-children", args=[cast.department.pk])
    assert f"{deeper}?depth=2" in html
    response = client.get(deeper, {"depth": "2"})
    assert "Bureau" in response.content.decode()
    assert f'data-tree-id="{leaf.pk}"' in response.content.decode()
    # Nonsense depth is bounded, not trusted.
    bounded = client.get(deeper, {"depth": "999999999999"}).content.decode()
    assert 'data-tree-depth="30"' in bounded
    assert 'data-tree-depth="1"' in client.get(deeper, {"depth": "-3"}).content.decode()


def test_children_outside_scope_are_404(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    for customer in (cast.isp, cast.provider):
        url = reverse("tenants:customer-children", args=[customer.pk])
        assert client.get(url).status_code == 404
    viewer = login(cast.ministry_viewer)
    assert (
        viewer.get(reverse("tenants:customer-children", args=[cast.ministry.pk])).status_code == 200
    )
    assert (
        viewer.get(reverse("tenants:customer-children", args=[cast.government.pk])).status_code
        == 404
    )


def test_a_long_list_of_children_ends_with_a_link_not_a_clip(
    cast: Cast, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tenants import views

    monkeypatch.setattr(views, "TREE_CHILDREN", 3)
    for i in range(5):
        actions.create_customer(actor=None, name=f"Agency {i}", parent=cast.department)
    html = (
        login(cast.sub_admin)
        .get(reverse("tenants:customer-children", args=[cast.department.pk]))
        .content.decode()
    )
    assert html.count('class="tree-row"') == 3
    assert "Show all 5 sub-customers" in html
    assert reverse("tenants:customer-detail", args=[cast.department.pk]) in html


def test_children_fragment_runs_a_fixed_number_of_queries(
    cast: Cast, login: Any, django_assert_max_num_queries: Any
) -> None:
    client = login(cast.sub_admin)
    url = reverse("tenants:customer-children", args=[cast.department.pk])
    client.get(url)
    with django_assert_max_num_queries(8) as few:
        client.get(url)
    for i in range(20):
        actions.create_customer(actor=None, name=f"Office {i}", parent=cast.department)
    with django_assert_max_num_queries(len(few.captured_queries)):
        client.get(url)
