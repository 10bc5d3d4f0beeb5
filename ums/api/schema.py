"""The OpenAPI document with one tag per area, so the API docs group operations by area.

drf-spectacular tags an operation with the first path segment by default, which splits one
area over several groups (``tokens``, ``sessions``, ``two-factor`` ...) and lumps all of mail
together. Here each path prefix maps to an area; the document lists the areas, in this
order, with a description.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.generators import SchemaGenerator

API_PREFIX = "/api/v1/"

# (tag, description, path prefixes under /api/v1/): the first matching prefix wins.
AREAS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("customers", "The virtual customer tree.", ("customers/",)),
    ("administrators", "Administrators and their permissions.", ("administrators/",)),
    (
        "identity",
        "API tokens, second factors, sessions and single sign-on.",
        ("tokens/", "two-factor", "sessions/", "saml-providers/", "ldap-directories/"),
    ),
    ("limits", "Resource limits of customer subtrees.", ("mail/limits/",)),
    (
        "mail policy",
        "Filtering policies of customers and domains.",
        ("mail/customer-policies/", "mail/domain-policies/"),
    ),
    (
        "mail",
        "Domains, mailboxes, aliases, auto-responders, filters, DKIM, address books, imports.",
        ("mail/",),
    ),
    ("spam hold", "Held mail: query, view, release, delete.", ("spamhold/",)),
    (
        "servers",
        "Zones, nodes, enrolment, metrics and node actions.",
        ("zones/", "nodes/", "node-alerts/", "enrolment-tokens/"),
    ),
    ("audit", "The record of every administrative action.", ("audit/",)),
    ("jobs", "Long work and its progress.", ("jobs/",)),
)
OTHER = "other"


def area_of(path: str) -> str:
    """The tag of an API path (``/api/v1/mail/domains/`` -> ``mail``)."""
    relative = path.removeprefix(API_PREFIX)
    for tag, _description, prefixes in AREAS:
        if relative.startswith(prefixes):
            return tag
    return OTHER


class TaggedSchemaGenerator(SchemaGenerator):
    def get_schema(self, request: Any = None, public: bool = False) -> dict[str, Any]:
        schema = super().get_schema(request=request, public=public)
        used: set[str] = set()
        for path, operations in schema.get("paths", {}).items():
            tag = area_of(path)
            for operation in operations.values():
                if isinstance(operation, dict) and "operationId" in operation:
                    operation["tags"] = [tag]
                    used.add(tag)
        schema["tags"] = [
            {"name": tag, "description": description}
            for tag, description, _prefixes in AREAS
            if tag in used
        ] + ([{"name": OTHER, "description": "Everything else."}] if OTHER in used else [])
        return schema
