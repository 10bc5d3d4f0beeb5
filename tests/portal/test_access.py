"""Who may open which portal page: anonymous, outsider (404), in scope, no permission (403)."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from tests.fixtures import Cast

pytestmark = pytest.mark.django_db


def scoped_pages(cast: Cast) -> list[str]:
    """Pages about objects under Government (in scope for sub_admin, not for sibling_admin)."""
    ministry, viewer = cast.ministry.pk, cast.ministry_viewer.pk
    return [
        reverse("tenants:customer-detail", args=[ministry]),
        reverse("tenants:customer-create", args=[ministry]),
        reverse("tenants:customer-edit", args=[ministry]),
        reverse("tenants:customer-move", args=[ministry]),
        reverse("tenants:customer-delete", args=[ministry]),
        reverse("tenants:administrator-detail", args=[viewer]),
        reverse("tenants:administrator-edit", args=[viewer]),
        reverse("tenants:administrator-password", args=[viewer]),
        reverse("tenants:administrator-delete", args=[viewer]),
        reverse("tenants:customer-list") + f"?q=Dep&within={ministry}",
        reverse("tenants:administrator-list") + f"?customer={ministry}",
    ]


def global_pages() -> list[str]:
    return [
        reverse("tenants:customer-list"),
        reverse("tenants:administrator-list"),
        reverse("tenants:administrator-create"),
        reverse("tenants:settings"),
        reverse("tenants:password-change"),
        reverse("tenants:token-create"),
        reverse("audit:record-list"),
        reverse("audit:record-export"),
    ]


def test_anonymous_is_sent_to_login_with_next(cast: Cast, client: Any) -> None:
    for url in [*scoped_pages(cast), *global_pages(), reverse("portal:home")]:
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("portal:login") + "?next="), url


def test_anonymous_post_changes_nothing(cast: Cast, client: Any) -> None:
    url = reverse("tenants:customer-create", args=[cast.ministry.pk])
    response = client.post(url, {"name": "Sneaky", "notes": ""})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("portal:login"))
    assert not cast.ministry.children.filter(name="Sneaky").exists()


def test_in_scope_administrator_gets_every_page(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    for url in [*scoped_pages(cast), *global_pages()]:
        assert client.get(url).status_code == 200, url


def test_outsider_gets_404_for_pages_in_another_subtree(cast: Cast, login: Any) -> None:
    client = login(cast.sibling_admin)
    for url in scoped_pages(cast):
        assert client.get(url).status_code == 404, url


def test_outsider_posts_get_404_and_change_nothing(cast: Cast, login: Any) -> None:
    client = login(cast.sibling_admin)
    ministry, viewer = cast.ministry, cast.ministry_viewer
    posts = {
        reverse("tenants:customer-create", args=[ministry.pk]): {"name": "Intruder"},
        reverse("tenants:customer-edit", args=[ministry.pk]): {"name": "Renamed"},
        reverse("tenants:customer-move", args=[ministry.pk]): {"parent": cast.isp.pk},
        reverse("tenants:customer-disable", args=[ministry.pk]): {},
        reverse("tenants:customer-delete", args=[cast.department.pk]): {},
        reverse("tenants:administrator-edit", args=[viewer.pk]): {
            "full_name": "Hijacked",
            "email": "x@example.org",
            "customer": cast.isp.pk,
        },
        reverse("tenants:administrator-password", args=[viewer.pk]): {
            "password": "Another-Long-Password-9",
            "password_confirm": "Another-Long-Password-9",
        },
        reverse("tenants:administrator-delete", args=[viewer.pk]): {},
    }
    for url, data in posts.items():
        assert client.post(url, data).status_code == 404, url
    ministry.refresh_from_db()
    viewer.refresh_from_db()
    assert ministry.name == "Ministry" and ministry.is_active
    assert ministry.parent_id == cast.government.pk
    assert not ministry.children.filter(name="Intruder").exists()
    assert viewer.full_name != "Hijacked" and viewer.check_password("Quartz-Lantern-Meadow-42")
    assert cast.department.__class__.objects.filter(pk=cast.department.pk).exists()


def test_outsider_cannot_revoke_a_token_of_another_subtree(cast: Cast, login: Any) -> None:
    from tenants import actions

    token, _secret = actions.create_token(actor=cast.sub_admin, name="ci")
    client = login(cast.sibling_admin)
    response = client.post(reverse("tenants:token-revoke", args=[token.pk]))
    assert response.status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_missing_permission_is_403(cast: Cast, login: Any) -> None:
    client = login(cast.ministry_viewer)  # view permissions only
    assert (
        client.get(reverse("tenants:customer-detail", args=[cast.ministry.pk])).status_code == 200
    )
    for url in [
        reverse("tenants:customer-create", args=[cast.ministry.pk]),
        reverse("tenants:customer-edit", args=[cast.department.pk]),
        reverse("tenants:administrator-create"),
        reverse("tenants:token-create"),
    ]:
        assert client.get(url).status_code == 403, url
    response = client.post(
        reverse("tenants:customer-create", args=[cast.ministry.pk]), {"name": "Not allowed"}
    )
    assert response.status_code == 403
    assert not cast.ministry.children.filter(name="Not allowed").exists()


def test_state_changes_refuse_get(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    for url in [
        reverse("tenants:customer-disable", args=[cast.ministry.pk]),
        reverse("tenants:customer-enable", args=[cast.ministry.pk]),
        reverse("tenants:token-revoke", args=[1]),
        reverse("portal:logout"),
    ]:
        assert client.get(url).status_code == 405, url
    cast.ministry.refresh_from_db()
    assert cast.ministry.is_active


def test_ids_too_large_for_the_database_are_404(cast: Cast, login: Any) -> None:
    client = login(cast.sub_admin)
    huge = "9" * 30
    assert client.get(f"/customers/{huge}/").status_code == 404
    assert client.get(f"/customers/?within={huge}&q=x").status_code == 200  # form error
    assert client.get(f"/administrators/?customer={huge}").status_code == 404
    assert client.get(f"/audit/?customer={huge}").status_code == 200  # form error


def test_navigation_links_built_sections_and_disables_the_rest(cast: Cast, login: Any) -> None:
    from ums.portal.context import NAVIGATION

    html = login(cast.sub_admin).get(reverse("tenants:customer-list")).content.decode()
    assert 'aria-current="page"' in html
    for url_name, label, icon, _code in NAVIGATION:
        if url_name:
            assert f'href="{reverse(url_name)}" class="nav-item' in html, url_name
        else:
            disabled = (
                '<span class="nav-item disabled" aria-disabled="true" '
                'title="Available in a later release">'
            )
            assert disabled in html
            assert f"icon-{icon}" in html and str(label) in html


@pytest.mark.parametrize(
    ("url_name", "rows"),
    [("tenants:customer-list", 60), ("tenants:administrator-list", 60), ("audit:record-list", 60)],
)
def test_list_pages_run_a_constant_number_of_queries(
    cast: Cast, login: Any, django_assert_max_num_queries: Any, url_name: str, rows: int
) -> None:
    from tenants import actions
    from tests.fixtures import make_admin

    for i in range(rows):
        child = actions.create_customer(actor=None, name=f"Child {i:03}", parent=cast.government)
        if url_name == "tenants:administrator-list":
            make_admin(child, f"admin{i:03}", ["customers.view"])
    client = login(cast.sub_admin)
    with django_assert_max_num_queries(12):
        response = client.get(reverse(url_name))
    assert response.status_code == 200
    assert len(response.context["object_list"]) == 50
    with django_assert_max_num_queries(12):
        assert client.get(reverse(url_name) + "?q=1").status_code == 200
