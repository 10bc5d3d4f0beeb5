"""Which key signs a domain's mail, and the DNS check that moves signing after a rotation.

The check resolves through a real DNS server (tests/converge/outside.py) set as
``UMS_DNS_RESOLVER``, exactly as an administrator's resolver would be.
"""

from __future__ import annotations

import socket

import pytest
from django.urls import reverse

from audit.models import AuditRecord
from mail import actions
from mail import dkim as mail_dkim
from mail.models import DkimKey
from mail.signing import signing_keys
from tests.converge.outside import txt_server
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_domain
from tests.portal.conftest import login  # noqa: F401

pytestmark = pytest.mark.django_db


def selectors(domain) -> str | None:
    return signing_keys([domain.pk]).get(domain.pk, (None, None))[0]


def record(key: DkimKey) -> dict[str, list[str]]:
    name = mail_dkim.record_name(key.selector, key.domain.name)
    return {name: [mail_dkim.record_value(key.public_key)]}


def test_rotated_key_signs_only_after_dns_shows_it(cast: Cast) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    assert selectors(domain) is None  # no key: not signed
    first = actions.generate_dkim_key(actor=None, domain=domain, selector="s1")
    assert selectors(domain) == "s1"  # the first key signs at once
    second = actions.rotate_dkim_key(actor=None, domain=domain, selector="s2")
    assert selectors(domain) == "s1"  # not checked in DNS yet
    actions.record_dkim_dns(actor=None, key=second, status="mismatch", detail="x")
    assert selectors(domain) == "s1"
    actions.record_dkim_dns(actor=None, key=second, status="match", detail="x")
    assert selectors(domain) == "s2"
    actions.record_dkim_dns(actor=None, key=second, status="missing", detail="x")
    assert selectors(domain) == "s1"
    actions.delete_dkim_key(actor=None, key=first)  # nothing to fall back on
    assert selectors(domain) == "s2"
    actions.delete_dkim_key(actor=None, key=DkimKey.objects.get(pk=second.pk))
    assert selectors(domain) is None


def test_dns_check_job_stores_what_the_resolver_answers(
    cast: Cast, settings, django_capture_on_commit_callbacks
) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    first = actions.generate_dkim_key(actor=None, domain=domain, selector="s1")
    second = actions.rotate_dkim_key(actor=None, domain=domain, selector="s2")
    other = DkimKey(public_key="AAAA")  # a different key published for s1
    zone = {mail_dkim.record_name("s1", domain.name): [mail_dkim.record_value(other.public_key)]}
    client = token_client(cast.sub_admin)
    url = reverse("mail-domain-dns-check", args=[domain.pk])
    with txt_server(zone) as resolver:
        settings.UMS_DNS_RESOLVER = [resolver]
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(url)
        assert response.status_code == 202, response.content
        first.refresh_from_db()
        second.refresh_from_db()
        assert (first.dns_status, second.dns_status) == ("mismatch", "missing")
        zone.update(record(second))
        with django_capture_on_commit_callbacks(execute=True):
            assert client.post(url).status_code == 202
    second.refresh_from_db()
    assert second.dns_status == "match" and second.dns_checked_at is not None
    assert AuditRecord.objects.filter(action="mail.dkim.dns", object_id=str(second.pk)).count() == 2
    rows = client.get(reverse("mail-domain-dns", args=[domain.pk])).json()
    assert [(r["name"], r["dnsStatus"], r["signing"]) for r in rows[:2]] == [
        (mail_dkim.record_name("s2", domain.name), "match", True),
        (mail_dkim.record_name("s1", domain.name), "mismatch", False),
    ]


def test_an_unreachable_resolver_is_an_error_not_a_crash(cast: Cast, settings) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    key = actions.generate_dkim_key(actor=None, domain=domain, selector="s1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never answers
        settings.UMS_DNS_RESOLVER = [f"127.0.0.1:{unused.getsockname()[1]}"]
        from mail import dkim_dns

        finding = dkim_dns.check(
            "s1", domain.name, key.public_key, using=dkim_dns.resolver(timeout=0.5)
        )
    assert finding.status == "error"


def test_dns_check_is_scoped_and_needs_mail_permission(cast: Cast) -> None:
    outside = make_domain(cast.shop, "shop.example")
    response = token_client(cast.sub_admin).post(
        reverse("mail-domain-dns-check", args=[outside.pk])
    )
    assert response.status_code == 404
    response = token_client(cast.ministry_viewer).post(
        reverse("mail-domain-dns-check", args=[make_domain(cast.ministry, "m.example").pk])
    )
    assert response.status_code == 403


def test_portal_dkim_tab_checks_dns_and_shows_which_key_signs(
    cast: Cast,
    settings,
    login,  # noqa: F811
    django_capture_on_commit_callbacks,
) -> None:
    domain = make_domain(cast.ministry, "ministry.example")
    first = actions.generate_dkim_key(actor=None, domain=domain, selector="s1")
    actions.rotate_dkim_key(actor=None, domain=domain, selector="s2")
    client = login(cast.sub_admin)
    page = reverse("mail:domain-dkim", args=[domain.pk])
    with txt_server(record(first)) as resolver:
        settings.UMS_DNS_RESOLVER = [resolver]
        with django_capture_on_commit_callbacks(execute=True):
            response = client.post(reverse("mail:domain-dkim-check", args=[domain.pk]))
    assert response.status_code == 302
    text = client.get(page).content.decode()
    # s1 is published and still signs; s2 has no record yet.
    assert text.count("Signs outgoing mail") == 1
    assert text.index("Signs outgoing mail") > text.index("<strong>s1</strong>")
    assert "Published" in text and "No record" in text
    outside = make_domain(cast.shop, "shop.example")
    response = client.post(reverse("mail:domain-dkim-check", args=[outside.pk]))
    assert response.status_code == 404


def test_beat_rechecks_pending_rotations_until_dns_shows_the_new_key(
    cast: Cast, settings, django_capture_on_commit_callbacks
) -> None:
    from mail.tasks import recheck_dkim_rotations

    domain = make_domain(cast.ministry, "ministry.example")
    settled = make_domain(cast.ministry, "settled.example")
    actions.generate_dkim_key(actor=None, domain=settled, selector="s1")  # no rotation
    actions.generate_dkim_key(actor=None, domain=domain, selector="s1")
    second = actions.rotate_dkim_key(actor=None, domain=domain, selector="s2")
    with txt_server(record(second)) as resolver:
        settings.UMS_DNS_RESOLVER = [resolver]
        with django_capture_on_commit_callbacks(execute=True):
            assert recheck_dkim_rotations() == 1  # only the domain with a rotation
    second.refresh_from_db()
    assert second.dns_status == "match"
    assert selectors(domain) == "s2"
    assert recheck_dkim_rotations() == 0  # settled: nothing left to check
