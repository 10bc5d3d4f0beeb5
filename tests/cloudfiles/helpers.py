"""Mail set-up through the API for the cloud files node tests."""

from __future__ import annotations

from typing import Any

import requests
from django.urls import reverse

from tests.fixtures import Cast, token_client
from ums.models import Job

PASSWORD = "Correct-Horse-Battery-9"


def assert_jobs_succeeded() -> None:
    failed = list(Job.objects.exclude(status=Job.SUCCEEDED).values_list("kind", "status", "error"))
    assert not failed, failed


def customer(client: Any, cast: Cast, name: str) -> int:
    response = client.post(
        reverse("customer-list"), {"name": name, "parent": cast.government.pk}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def domain(client: Any, customer_id: int, name: str) -> dict:
    response = client.post(
        reverse("mail-domain-list"), {"name": name, "customer": customer_id}, format="json"
    )
    assert response.status_code == 201, response.content
    return response.json()


def mailbox(client: Any, domain_data: dict, local: str, *, files: bool, **fields: Any) -> int:
    access = {"files": "allow"} if files else {}
    response = client.post(
        reverse("mail-mailbox-list"),
        {
            "domain": domain_data["id"],
            "localPart": local,
            "password": PASSWORD,
            "protocolAccess": access,
            **fields,
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["id"]


def client_for(cast: Cast) -> Any:
    return token_client(cast.sub_admin)


def app_password(nextcloud: Any, uid: str) -> str:
    """A user's app password, made with occ on the node as an administrator would."""
    return nextcloud.occ("user:auth-tokens:add", uid).strip().splitlines()[-1]


def create_share(
    nextcloud: Any, uid: str, token: str, share_type: int, **form: str
) -> requests.Response:
    """A share created over the OCS sharing API as ``uid`` (what a user's client does)."""
    return requests.post(
        f"{nextcloud.url}/ocs/v2.php/apps/files_sharing/api/v1/shares",
        params={"format": "json"},
        data={"path": form.pop("path", "/Documents"), "shareType": str(share_type), **form},
        headers={"OCS-APIRequest": "true"},
        auth=(uid, token),
        timeout=10,
    )
