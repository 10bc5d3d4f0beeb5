"""``seed_demo`` and ``demo_passwords``: what an administrator sees after ``make run``.

The commands run for real on PostgreSQL; the printed logins are read back the way the
browser test of ``make run`` reads them, and used to log in to the portal.
"""

from __future__ import annotations

import io
import re

import pytest
from django.apps import apps
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from audit.models import AuditRecord
from mail import policy
from mail.models import (
    Alias,
    AutoResponder,
    CsvImport,
    DkimKey,
    Domain,
    DomainAlias,
    Mailbox,
    SieveScript,
)
from spamhold import retention
from tenants.limits import ResourceLimit
from tenants.models import Administrator, Customer
from tenants.twofactor import policy as two_factor
from ums.models import Job

pytestmark = pytest.mark.django_db

LOGIN_LINE = re.compile(r"^  (\S+)\s+(\S+)\s+home customer: (.+)$", re.MULTILINE)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def logins(output: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in LOGIN_LINE.finditer(output)}


def row_counts() -> dict[str, int]:
    """Rows of every model of the apps the demo fills (audit included)."""
    labels = ("tenants", "mail", "spamhold", "audit", "servers", "ums")
    return {
        model._meta.label: model._default_manager.count()
        for label in labels
        for model in apps.get_app_config(label).get_models()
    }


def portal_login(username: str, password: str) -> int:
    response = Client().post(
        reverse("portal:login"), {"username": username, "password": password}, follow=False
    )
    return response.status_code


@pytest.fixture
def seeded() -> None:
    run("seed_demo")


def test_first_run_prints_every_login_and_they_work() -> None:
    output = run("seed_demo")
    printed = logins(output)
    assert list(printed) == ["admin", "gov.it", "finance.it", "isp.admin"]
    homes = dict(m.group(1, 3) for m in LOGIN_LINE.finditer(output))
    assert homes["admin"] == "RackCorp UMS" and homes["isp.admin"] == "Demo ISP"
    for username, password in printed.items():
        assert Administrator.objects.get(username=username).check_password(password)
    # A real portal login with the first printed line (what a new user does).
    assert portal_login("admin", printed["admin"]) == 302
    assert portal_login("admin", printed["gov.it"]) != 302
    assert "demo_passwords --reset" not in output


def test_second_run_changes_nothing_and_keeps_passwords() -> None:
    first = logins(run("seed_demo"))
    before = row_counts()
    hashes = dict(Administrator.objects.values_list("username", "password"))
    output = run("seed_demo")
    assert logins(output) == {}, "a second run must not print (new) passwords"
    assert "manage.py demo_passwords --reset" in output
    assert row_counts() == before
    assert dict(Administrator.objects.values_list("username", "password")) == hashes
    for username, password in first.items():
        assert Administrator.objects.get(username=username).check_password(password)
    assert portal_login("gov.it", first["gov.it"]) == 302


def test_a_setting_changed_after_seeding_is_kept(seeded: None) -> None:
    from mail import actions as mail_actions
    from mail.models import CustomerPolicy

    government = Customer.objects.get(name="Government of Demoland")
    row = CustomerPolicy.objects.get(pk=government.pk)
    mail_actions.update_customer_policy(actor=None, customer=government, antivirus=None)
    mailbox = Mailbox.objects.get(email="bob@demoland.demo")
    mail_actions.update_mailbox(actor=None, mailbox=mailbox, quota_mb=3000)
    run("seed_demo")
    row.refresh_from_db()
    assert row.antivirus is None
    mailbox.refresh_from_db()
    assert mailbox.quota_mb == 3000


def test_the_demo_contains_what_an_administrator_looks_at(seeded: None) -> None:
    # Domains, one internationalised (stored as IDNA, shown in Unicode), an alias domain.
    names = set(Domain.objects.values_list("unicode_name", flat=True))
    assert {"demoland.demo", "finance.demoland.demo", "isp.demo", "талх.demo"} <= names
    idn = Domain.objects.get(unicode_name="талх.demo")
    assert idn.name.startswith("xn--") and idn.name.endswith(".demo")
    assert DomainAlias.objects.filter(name="gov-demoland.demo").exists()
    assert DkimKey.objects.filter(domain__name="demoland.demo", state="active").exists()

    # Mailboxes with quotas and used space, in several customers.
    boxes = Mailbox.objects.exclude(used_bytes=None)
    assert boxes.count() >= 8
    assert len({b.customer_id for b in boxes}) >= 4
    nearly_full = Mailbox.objects.get(email="tax.office@finance.demoland.demo")
    assert nearly_full.used_bytes > 0.9 * nearly_full.quota_mb * 1024 * 1024
    assert Mailbox.objects.filter(domain=idn).count() == 2

    # Aliases and distribution groups.
    group = Alias.objects.get(email="all-staff@demoland.demo")
    assert group.kind == "group" and len(group.targets) == 3
    assert Alias.objects.filter(email="info@demoland.demo", kind="alias").exists()

    # Auto-responder and Sieve filter (rule editor, valid Sieve).
    responder = AutoResponder.objects.get(mailbox__email="bob@demoland.demo")
    assert responder.is_enabled and "Out of office" in responder.subject
    script = SieveScript.objects.get(mailbox__email="alice@demoland.demo")
    assert script.is_active and 'fileinto "Newsletters"' in script.script

    # Filtering policy set at three levels: the effective values say where each comes from.
    finance = Domain.objects.get(name="finance.demoland.demo")
    effective = policy.effective_filtering(customer=finance.customer, domain=finance)
    tag_source = effective["spam_tag_score"]["source"]
    assert (tag_source["level"], tag_source["name"]) == ("customer", "RackCorp UMS")
    assert effective["spam_hold_score"]["source"]["level"] == "domain"
    assert effective["greylisting"]["value"] is True
    assert "iso" in effective["blocked_extensions"]["value"]  # from the government
    isp = Domain.objects.get(name="isp.demo")
    assert (
        "iso"
        not in policy.effective_filtering(customer=isp.customer, domain=isp)["blocked_extensions"][
            "value"
        ]
    )

    # Two-factor authentication required below the Ministry of Health, not above.
    department = Customer.objects.get(name="Hospitals Department")
    assert two_factor.required_above(department).name == "Ministry of Health"
    assert not any(two_factor.two_factor_required(a) for a in Administrator.objects.all()), (
        "the printed logins must work without a second factor"
    )

    # Held-mail retention inherited and overridden.
    treasury = Customer.objects.get(name="Treasury Department")
    hospitals = Customer.objects.get(name="Hospitals Department")
    assert retention.effective(treasury.path)[0] == 14
    assert retention.effective(hospitals.path)[0] == 60

    # Resource limits at two levels.
    limited = set(ResourceLimit.objects.values_list("customer__name", flat=True))
    assert {"Demo ISP", "Bakery Ltd"} <= limited

    # A finished CSV import, run as a job.
    upload = CsvImport.objects.get(domain__name="garage.demo")
    job = Job.objects.get(pk=upload.job_id)
    assert job.status == Job.SUCCEEDED and job.kind == "mail.csv_import"
    assert job.progress_done == job.progress_total > 0
    assert Mailbox.objects.filter(domain__name="garage.demo").count() == 4
    assert Alias.objects.get(email="service@garage.demo").kind == "group"

    # Audit history of all of it, by several administrators.
    actions = set(AuditRecord.objects.values_list("action", flat=True))
    for expected in (
        "customer.create",
        "administrator.create",
        "mail.domain.create",
        "mail.mailbox.create",
        "mail.alias.create",
        "mail.autoresponder.create",
        "mail.sieve.create",
        "mail.customer_policy.update",
        "mail.domain_policy.update",
        "customer.two_factor_policy",
        "spamhold.retention.set",
        "limits.update",
        "mail.import.request",
    ):
        assert expected in actions, expected
    actors = set(AuditRecord.objects.values_list("actor_name", flat=True))
    assert len(actors) >= 4
    assert set(AuditRecord.objects.values_list("channel", flat=True)) >= {"cli", "task"}
    call_command("audit_verify", stdout=io.StringIO())


def test_demo_passwords_explains_without_reset_and_resets_with_it() -> None:
    first = logins(run("seed_demo"))
    explained = run("demo_passwords")
    assert "--reset" in explained and logins(explained) == {}
    assert Administrator.objects.get(username="admin").check_password(first["admin"])

    reset = logins(run("demo_passwords", "--reset"))
    assert list(reset) == ["admin", "gov.it", "finance.it", "isp.admin"]
    for username, password in reset.items():
        assert password != first[username]
        admin = Administrator.objects.get(username=username)
        assert admin.check_password(password)
        assert not admin.check_password(first[username])
    assert portal_login("admin", reset["admin"]) == 302
    assert AuditRecord.objects.filter(action="administrator.password").count() == 4


def test_demo_passwords_on_an_empty_installation_says_what_to_do() -> None:
    assert "seed_demo" in run("demo_passwords", "--reset")
    assert not Administrator.objects.exists()
