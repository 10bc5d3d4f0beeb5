"""Looking inside a held message, safely: audited, size-limited, never executed or rendered.

The message is fetched from its node (``postcat -bhq``, cut at
``UMS_SPAMHOLD_CONTENT_LIMIT`` bytes) and parsed with the standard ``email`` package.
What comes back is plain data: the header list, the text body (an HTML-only body is
turned into plain text by a parser that keeps character data and drops scripts, styles
and every tag), and the attachment list (name, type, decoded size). Attachments are
never opened, decoded content is never written anywhere, and nothing is rendered as HTML:
the portal escapes all of it like any other untrusted text.

Reading content needs ``spamhold.read_content`` on top of seeing the message; each read
is audited before the node is asked, so an attempt is on record even if it fails.
"""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from html.parser import HTMLParser
from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _

from deploy.connector.base import CommandTimeout, ConnectorError
from deploy.desired import DEFAULT_SETTINGS
from deploy.nodes import describe_error, session
from tenants import permissions as perms
from ums import auditing
from ums.actions import action, require_in_scope, require_permission

from . import nodeops
from .models import HeldMessage
from .parsing import clean_text, decode_words

#: Characters of body text returned at most.
TEXT_LIMIT = 200_000
MAX_HEADERS = 500
MAX_ATTACHMENTS = 200
MAX_PARTS = 1000
# Keep newlines and tabs in body text; drop other control characters (terminal escapes).
_BODY_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BLANK_RUNS = re.compile(r"\n{3,}")
SYSLOG_FILES = ["/var/log/maillog", "/var/log/mail.log"]


class MessageUnavailable(Exception):
    """The message cannot be read from its node (gone, or the node is unreachable)."""


def read_timeout() -> int:
    """Seconds each step of a read from a node may take while someone waits for the page."""
    return int(settings.UMS_SPAMHOLD_CONTENT_TIMEOUT)


def _unavailable(exc: ConnectorError) -> MessageUnavailable:
    """A clear message for a node that could not be asked (timed out or unreachable)."""
    if isinstance(exc, CommandTimeout) or isinstance(exc.__cause__, TimeoutError):
        return MessageUnavailable(
            _("The node did not answer within %(seconds)d seconds; try again later.")
            % {"seconds": read_timeout()}
        )
    return MessageUnavailable(
        _("The node could not be asked: %(error)s") % {"error": describe_error(exc)}
    )


@dataclass(frozen=True)
class Attachment:
    name: str
    content_type: str
    size: int


@dataclass
class MessageContent:
    headers: list[tuple[str, str]] = field(default_factory=list)
    text: str = ""
    # The text came from an HTML part (converted, never rendered).
    from_html: bool = False
    attachments: list[Attachment] = field(default_factory=list)
    # The message was larger than what was fetched: body and attachments are incomplete.
    truncated: bool = False
    fetched_bytes: int = 0


class _TextExtractor(HTMLParser):
    """Character data of an HTML document; scripts, styles and all markup dropped."""

    SKIP = {"script", "style", "head", "title", "template", "noscript"}
    BREAKS = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skipping += 1
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self.BREAKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    parser = _TextExtractor()
    # Malformed markup: keep what was extracted so far.
    with contextlib.suppress(Exception):
        parser.feed(html)
        parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def _part_text(part: Message) -> str:
    # An unknown charset or broken encoding is decoded leniently below.
    with contextlib.suppress(Exception):
        content = part.get_content()  # type: ignore[attr-defined]
        if isinstance(content, str):
            return content
    payload = part.get_payload(decode=True) or b""
    if not isinstance(payload, bytes):
        return ""
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


def _payload_size(part: Message) -> int:
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return 0
    return len(payload) if isinstance(payload, bytes) else 0


def parse_message(data: bytes, *, truncated: bool) -> MessageContent:
    """Headers, text and attachment list of raw message bytes (nothing executed)."""
    message: EmailMessage = BytesParser(policy=policy.default).parsebytes(data)  # type: ignore[assignment]
    result = MessageContent(truncated=truncated, fetched_bytes=len(data))
    for name, value in list(message.raw_items())[:MAX_HEADERS]:
        result.headers.append((clean_text(name, 200), decode_words(str(value), 4000)))

    plain: list[str] = []
    html: list[str] = []
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            result.truncated = True
            break
        if part.is_multipart():
            continue
        content_type = part.get_content_type()
        try:
            filename = part.get_filename()
        except Exception:
            filename = None
        disposition = part.get_content_disposition()
        if filename or disposition == "attachment" or not content_type.startswith("text/"):
            if len(result.attachments) < MAX_ATTACHMENTS:
                result.attachments.append(
                    Attachment(
                        name=decode_words(filename, 255) if filename else "",
                        content_type=clean_text(content_type, 255),
                        size=_payload_size(part),
                    )
                )
            continue
        if content_type == "text/html":
            html.append(_part_text(part))
        elif content_type.startswith("text/"):
            plain.append(_part_text(part))
    if plain:
        text = "\n\n".join(plain)
    elif html:
        text, result.from_html = "\n\n".join(html_to_text(h) for h in html), True
    else:
        text = ""
    text = _BODY_CONTROL.sub("", text)
    if len(text) > TEXT_LIMIT:
        text, result.truncated = text[:TEXT_LIMIT], True
    result.text = text
    return result


@action
def _record_read(*, actor: Any, message: HeldMessage) -> None:
    require_permission(actor, perms.SPAMHOLD_READ_CONTENT)
    require_in_scope(message, actor)
    auditing.record(
        "spamhold.read_content",
        obj=message,
        customer_path=message.customer_path,
        extra={"queueId": message.queue_id, "node": message.node_name},
    )


def read(*, actor: Any, message: HeldMessage) -> MessageContent:
    """The content of a held message, for an administrator allowed to read it.

    Raises PermissionDenied without ``spamhold.read_content``, Http404 outside scope,
    :class:`MessageUnavailable` when the node cannot give it.
    """
    _record_read(actor=actor, message=message)
    if message.node is None:
        raise MessageUnavailable(_("The node of this message no longer exists."))
    limit = int(settings.UMS_SPAMHOLD_CONTENT_LIMIT)
    try:
        with session(message.node, timeout=read_timeout()) as conn:
            # One byte more than the limit tells a message that was cut from one that fits.
            data = nodeops.fetch_message(conn, message.queue_id, limit + 1, timeout=read_timeout())
    except ConnectorError as exc:
        raise _unavailable(exc) from exc
    if data is None:
        raise MessageUnavailable(_("The message is no longer in the node's queue."))
    truncated = len(data) > limit
    return parse_message(data[:limit], truncated=truncated)


def maillog_files() -> list[str]:
    """Where the nodes' Postfix logs: the configured file, else the syslog files."""
    conf = {**DEFAULT_SETTINGS, **getattr(settings, "UMS_CONVERGE", {})}
    configured = str(conf.get("postfix_maillog_file") or "")
    return [configured] if configured else list(SYSLOG_FILES)


def receipt_log(message: HeldMessage) -> list[str]:
    """The node's mail log lines that mention this message's queue id.

    The caller has checked the viewer may see the message. Lines carry addresses from the
    outside: returned as plain text, control characters removed.
    """
    if message.node is None:
        return []
    try:
        with session(message.node, timeout=read_timeout()) as conn:
            lines = nodeops.grep_log(conn, message.queue_id, maillog_files())
    except ConnectorError as exc:
        raise _unavailable(exc) from exc
    return [clean_text(line, 2000) for line in lines]
