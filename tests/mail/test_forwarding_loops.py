"""Forwarding loops among hosted addresses are refused before they are saved (the API
answers 400 on the field, naming the chain); chains that end in a kept copy are fine."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse

from mail import actions
from mail.models import Alias, Mailbox
from tests.fixtures import Cast, token_client
from tests.mail.helpers import make_alias, make_domain, make_mailbox

pytestmark = pytest.mark.django_db


def test_loops_through_aliases_forwards_and_alias_domains_are_refused(cast: Cast) -> None:
    domain = make_domain(cast.government, "loops.example")
    actions.create_domain_alias(actor=None, domain=domain, name="loops-alias.example")
    a = make_mailbox(domain, "a", forward_to=["b@loops.example"], forward_keep_copy=False)
    make_alias(domain, "b", ["c@loops.example"])
    # c -> a@<alias domain> is a -> b -> c -> a: refused on create, through the API too.
    with pytest.raises(ValidationError, match="forwarding loop") as refused:
        make_alias(domain, "c", ["a@loops-alias.example"])
    assert "c@loops.example → a@loops.example → b@loops.example → c@loops.example" in str(
        refused.value
    )
    client = token_client(cast.sub_admin)
    response = client.post(
        reverse("mail-alias-list"),
        {"domain": domain.pk, "localPart": "c", "targets": ["a@loops.example"]},
        format="json",
    )
    assert response.status_code == 400 and "targets" in response.json()["errors"], response.content
    assert not Alias.objects.filter(email="c@loops.example").exists()

    # A kept copy ends the chain: allowed, and then switching the copy off is refused.
    c = make_alias(domain, "c", ["d@loops.example"])
    make_mailbox(domain, "d", forward_to=["a@loops.example"])  # keeps a copy (default)
    d = Mailbox.objects.get(email="d@loops.example")
    response = client.patch(
        reverse("mail-mailbox-detail", args=[d.pk]), {"forwardKeepCopy": False}, format="json"
    )
    assert response.status_code == 400 and "forwardTo" in response.json()["errors"], (
        response.content
    )
    d.refresh_from_db()
    assert d.forward_keep_copy is True

    # A disabled alias passes nothing on; enabling it again would close the loop.
    actions.update_mailbox(actor=None, mailbox=a, forward_keep_copy=True)
    actions.update_alias(actor=None, alias=c, is_enabled=False)
    actions.update_mailbox(actor=None, mailbox=d, forward_keep_copy=False)
    actions.update_mailbox(actor=None, mailbox=a, forward_keep_copy=False)
    with pytest.raises(ValidationError, match="forwarding loop"):
        actions.update_alias(actor=None, alias=c, is_enabled=True)
    # A group fanning out to two mailboxes that keep their mail is no loop.
    make_mailbox(domain, "e")
    make_alias(domain, "team", ["e@loops.example", "d@loops.example"], kind="group")
