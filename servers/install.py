"""The bootstrap script download: ``GET /install/bootstrapcore.sh``.

The script is rendered from ``servers/templates/servers/bootstrapcore.sh`` with two values
baked in: the portal's base URL (always ``settings.BASE_URL``, never the request's Host
header, so a forged Host cannot point new nodes at someone else's server) and the
controller's current SSH public key. Both are checked against strict patterns and shell-quoted,
so nothing from the database or settings can change what the script does beyond its values.
"""

from __future__ import annotations

import re
import shlex

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.views.decorators.http import require_safe

from deploy.controller_keys import current_public_key

SCRIPT_NAME = "bootstrapcore.sh"
SCRIPT_PATH = f"/install/{SCRIPT_NAME}"
# What a URL may hold when it is spliced into a shell script: no quotes, spaces, $ or `.
# Always fullmatch: "$" alone would accept a trailing newline.
_BASE_URL_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
_BASE_URL_V6_RE = re.compile(r"^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?(/[A-Za-z0-9._~/-]*)?$")
_PUBLIC_KEY_RE = re.compile(r"^[a-z0-9@.-]{3,64} [A-Za-z0-9+/]+={0,2}( [A-Za-z0-9@._-]{1,64})?$")


def base_url() -> str:
    """The portal's base URL without a trailing slash, checked to be shell-safe."""
    url = settings.BASE_URL.rstrip("/")
    if not (_BASE_URL_RE.fullmatch(url) or _BASE_URL_V6_RE.fullmatch(url)):
        raise ImproperlyConfigured(
            "UMS_BASE_URL must be a plain http(s) URL (letters, digits, . - _ ~ / only) "
            "to be baked into bootstrapcore.sh"
        )
    return url


def script_url() -> str:
    return base_url() + SCRIPT_PATH


def operator_command(full_token: str) -> str:
    """The exact commands an operator runs as root on a new node."""
    return (
        f"cd /tmp && wget {shlex.quote(script_url())} && sh {SCRIPT_NAME} {shlex.quote(full_token)}"
    )


def render_script() -> str:
    key = current_public_key().strip()
    if not _PUBLIC_KEY_RE.fullmatch(key):
        raise ImproperlyConfigured("the controller public key is not a single OpenSSH key line")
    return render_to_string(
        "servers/bootstrapcore.sh",
        {
            "base_url_sh": shlex.quote(base_url()),
            "script_url_comment": script_url(),
            "controller_key_sh": shlex.quote(key),
        },
    )


@require_safe
def bootstrap_script(request: HttpRequest) -> HttpResponse:
    """Serve the script; anyone may download it (it holds no secret, only public values)."""
    response = HttpResponse(render_script(), content_type="text/x-shellscript; charset=utf-8")
    # The baked-in controller key changes on rotation: never serve a stale copy.
    response["Cache-Control"] = "no-cache"
    response["Content-Disposition"] = f'inline; filename="{SCRIPT_NAME}"'
    return response
