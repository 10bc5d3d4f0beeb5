"""The public keys licences must be signed with (base64 of the 32 raw Ed25519 bytes).

Only public keys live in the product; the private key stays with the vendor's signing tool
(``scripts/sign_licence.py``). A list, so a new key can be added before the old one is
retired: a licence signed with either is accepted while both are listed.

There is deliberately no environment variable for extra keys: anyone able to set one could
sign their own licence. Tests replace the list through Django's settings
(``UMS_LICENCE_PUBLIC_KEYS``), which only code can set; ``ums/settings.py`` never defines it.
"""

from __future__ import annotations

import base64

from django.conf import settings

BUILTIN_PUBLIC_KEYS: tuple[str, ...] = (
    # UMS licence key 1 (2026-12).
    "+hJFvxdmjU11XhImIh8lUbUPTVbatGJo9LuEfOAio70=",
)


def accepted_keys() -> list[bytes]:
    """Raw public keys a licence may be signed with."""
    configured = getattr(settings, "UMS_LICENCE_PUBLIC_KEYS", None)
    encoded = configured if configured else BUILTIN_PUBLIC_KEYS
    return [base64.b64decode(key, validate=True) for key in encoded]
