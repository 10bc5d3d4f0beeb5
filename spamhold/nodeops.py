"""Postfix queue operations on one SMTP node, over an open connector.

Every command is an argument list. Queue ids come from the database or from the node's
own ``postqueue -j`` and are checked against :data:`QUEUE_ID` before they reach any
command; the few constant ``sh -c`` scripts here take them as positional arguments
(``"$@"``), never spliced into the script text.

Postfix's ``postsuper`` exits 0 even for ids it does not know ("Released from hold: 0
messages"), and prints its per-message lines only in some logging setups, so the outcome
of a release or delete is established from the hold queue itself: which ids were in it
before the command and which are still there after.

Observed state and our own marker (:func:`apply_marked`): before ``postsuper`` runs, the
same remote command appends the ids it is about to act on to a marker file named after
the request's token (``/var/lib/ums/spamhold/marks/<token>``). A retry, after a dropped
connection or a dead worker, reads the hold queue first: an id still held is acted on
(``postsuper`` moves a message out of hold once, so nothing is delivered twice); an id no
longer held is ours if our marker lists it (the outcome happened), else it left by other
means (``GONE``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from deploy.connector.base import CommandFailed, Connector

#: Postfix queue ids: short (hex) or long (``enable_long_queue_ids``) form, both plain
#: letters and digits.
QUEUE_ID = re.compile(r"^[0-9A-Za-z]{1,64}$")
#: Wakes the pickup daemon without waiting for it (a constant command, no data).
KICK_PICKUP = "postkick public pickup W </dev/null >/dev/null 2>&1 &"

#: Ids per remote command: bounded so an argument list stays far below ARG_MAX and one
#: command's output stays small.
BATCH = 500
#: Header bytes kept per message at ingestion (an attacker controls the headers).
HEADER_LIMIT = 64 * 1024

SEPARATOR = "--ums-held--"
# Prints the headers of every id given as an argument, each preceded by a marker line;
# "missing" when the id is not in any queue (postcat exits 1).
HEADERS_SCRIPT = (
    'limit=$1; shift; for id do printf "\\n%s %s\\n" "$0" "$id"; '
    '{ postcat -hq "$id" 2>/dev/null || printf "%s-missing\\n" "$0"; } | head -c "$limit"; done'
)
# Prints every given id that is still a file in the hold queue (flat: Postfix hashes
# only the queues in hash_queue_names, "deferred, defer" by default).
IN_HOLD_SCRIPT = (
    'q=$(postconf -h queue_directory) || exit 70; cd "$q/hold" || exit 71; '
    'for id do if [ -f "$id" ]; then printf "%s\\n" "$id"; fi; done'
)
# The fast path: one ``postcat -e`` for every id given, its output cut per message by one
# awk (``$1``: byte limit; every ``*** ... ***`` section line resets the count), so a batch
# costs two processes instead of two per id. ``-e`` is there for the section lines naming
# each queue file; the envelope records themselves are dropped. postcat stops at the first
# id it cannot open ("fatal: open queue file ID"), having printed every id before it.
BATCH_HEADERS_SCRIPT = (
    'limit=$1; shift; postcat -ehq "$@" | awk -v limit="$limit" '
    "'/^[*][*][*] [A-Z ]+ [A-Za-z]+[/][0-9A-Za-z]+ [*][*][*]$/ "
    '{ n = 0; skip = ($2 " " $3 != "MESSAGE CONTENTS"); print; next } '
    "skip { next } "
    "{ n += length($0) + 1; if (n <= limit) print }'"
)
SECTION = re.compile(
    r"^\*\*\* (ENVELOPE RECORDS|MESSAGE CONTENTS|HEADER EXTRACTED|MESSAGE FILE END) "
    r"[A-Za-z]+/([0-9A-Za-z]{1,64}) \*\*\*$"
)
MISSING = re.compile(r"open queue file ([0-9A-Za-z]{1,64}):")
# Asks the queue manager to deliver each released id now.
# One message, headers and body, cut at a byte limit; base64 so 8-bit bytes survive the
# connector's text decoding.
MESSAGE_SCRIPT = 'postcat -bhq "$0" 2>/dev/null | head -c "$1" | base64'


#: Where a node keeps the markers of our own commands (one file per request token).
MARKS_DIR = "/var/lib/ums/spamhold/marks"
#: Days a marker file is kept (a request gives up long before).
MARKS_KEEP_DAYS = 30
TOKEN = re.compile(r"^[0-9a-f]{32}$")
FLAGS = {"release": "-r", "delete": "-d"}
# $1 marks folder, $2 token, $3 postsuper flag, $4 days to keep markers, then the ids.
# Lists which ids are in the hold queue now, appends those to the request's marker file
# (before acting, so a retry can recognise our own command), moves them with one
# postsuper reading ids from stdin ("hold": never a message outside the hold queue) and
# prints them. Old marker files are pruned on the way.
APPLY_SCRIPT = (
    "dir=$1; mark=$1/$2; flag=$3; keep=$4; shift 4; "
    'q=$(postconf -h queue_directory) || exit 70; cd "$q/hold" || exit 71; '
    'mkdir -p "$dir" || exit 72; '
    'find "$dir" -maxdepth 1 -type f -mtime +"$keep" -delete 2>/dev/null; '
    'present=$(for id do if [ -f "$id" ]; then printf "%s\\n" "$id"; fi; done); '
    '[ -n "$present" ] || exit 0; '
    'printf "%s\\n" "$present" >> "$mark" || exit 73; '
    'printf "%s\\n" "$present" | postsuper "$flag" - hold >&2 || exit 74; '
    'printf "%s\\n" "$present"'
)
# The ids our commands under one token acted on (none yet: no file).
MARKS_SCRIPT = 'cat -- "$1/$2" 2>/dev/null; exit 0'


class InvalidQueueId(ValueError):
    pass


class QueueCommandFailed(Exception):
    """A Postfix command on the node failed; ``output`` holds what it printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def check_ids(ids: Iterable[str]) -> list[str]:
    """The ids, each validated; raises :class:`InvalidQueueId` on the first bad one."""
    checked = []
    for queue_id in ids:
        if not isinstance(queue_id, str) or not QUEUE_ID.match(queue_id):
            raise InvalidQueueId(f"invalid queue id {queue_id!r}")
        checked.append(queue_id)
    return checked


def _chunks(items: list[str], size: int = BATCH) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ----------------------------------------------------------------------- listing


@dataclass(frozen=True)
class QueueEntry:
    queue_id: str
    arrival_time: int
    size: int
    sender: str
    recipients: tuple[str, ...]


def parse_postqueue_json(output: str, queue: str = "hold") -> list[QueueEntry]:
    """Entries of ``queue`` from ``postqueue -j`` output (one JSON object per line).

    Lines that are not valid objects, or carry an id that could not safely reach a
    command, are skipped: the output lists senders and recipients from the outside.
    """
    entries = []
    for line in output.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("queue_name") != queue:
            continue
        queue_id = data.get("queue_id")
        if not isinstance(queue_id, str) or not QUEUE_ID.match(queue_id):
            continue
        recipients = []
        for item in data.get("recipients") or []:
            address = item.get("address") if isinstance(item, dict) else None
            if isinstance(address, str):
                recipients.append(address)
        arrival = data.get("arrival_time")
        size = data.get("message_size")
        sender = data.get("sender")
        entries.append(
            QueueEntry(
                queue_id=queue_id,
                arrival_time=int(arrival) if isinstance(arrival, int | float) else 0,
                size=int(size) if isinstance(size, int | float) else 0,
                sender=sender if isinstance(sender, str) else "",
                recipients=tuple(recipients),
            )
        )
    return entries


def list_hold(conn: Connector) -> list[QueueEntry]:
    result = conn.run(["postqueue", "-j"], timeout=600)
    if not result.ok:
        raise QueueCommandFailed(
            f"postqueue -j exited {result.exit_code}", result.stderr.strip()[-2000:]
        )
    return parse_postqueue_json(result.stdout)


def parse_headers_output(output: str) -> dict[str, str]:
    """{queue id: header text} from :data:`HEADERS_SCRIPT` output; missing ids left out."""
    found: dict[str, str] = {}
    current: str | None = None
    lines: list[str] = []

    def flush() -> None:
        text = "\n".join(lines).strip("\n")
        if current is not None and text != f"{SEPARATOR}-missing":
            found[current] = text + "\n"

    for line in output.split("\n"):
        if line.startswith(SEPARATOR + " ") and QUEUE_ID.match(line[len(SEPARATOR) + 1 :]):
            flush()
            current, lines = line[len(SEPARATOR) + 1 :], []
        elif current is not None:
            lines.append(line)
    flush()
    return found


def parse_postcat_output(output: str, ids: list[str]) -> tuple[dict[str, str], set[str]]:
    """Headers per id from :data:`BATCH_HEADERS_SCRIPT` output, and the ids to re-read.

    A header line can never look like a section line (a header name has no spaces), but an
    envelope record is printed raw; so an id whose sections appear more than once, or out
    of the order postcat reads the ids in, is not trusted and comes back for a re-read
    one id at a time.
    """
    wanted = set(ids)
    found: dict[str, str] = {}
    suspect: set[str] = set()
    envelopes: dict[str, int] = {}
    contents: set[str] = set()
    order = {queue_id: index for index, queue_id in enumerate(ids)}
    last_index = -1
    current: str | None = None
    lines: list[str] = []

    def flush() -> None:
        if current is not None and current not in found:
            found[current] = "\n".join(lines).strip("\n") + "\n"

    for line in output.split("\n"):
        section = SECTION.match(line)
        if section is None:
            if current is not None:
                lines.append(line)
            continue
        flush()
        current, lines = None, []
        kind, queue_id = section.groups()
        if queue_id not in wanted:
            continue
        if kind == "ENVELOPE RECORDS":
            envelopes[queue_id] = envelopes.get(queue_id, 0) + 1
            if envelopes[queue_id] > 1 or order[queue_id] < last_index:
                suspect.add(queue_id)
            last_index = max(last_index, order[queue_id])
        elif kind == "MESSAGE CONTENTS":
            if queue_id in found or queue_id in contents:
                suspect.add(queue_id)  # a second contents section: someone forged one
            contents.add(queue_id)
            current = queue_id
    flush()
    for queue_id in suspect:
        found.pop(queue_id, None)
    return found, suspect


def _headers_one_by_one(conn: Connector, ids: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for chunk in _chunks(ids):
        argv = ["sh", "-c", HEADERS_SCRIPT, SEPARATOR, str(HEADER_LIMIT), *chunk]
        result = conn.run(argv, timeout=600)
        if not result.ok:
            raise QueueCommandFailed(
                f"reading headers exited {result.exit_code}", result.stderr.strip()[-2000:]
            )
        headers.update(parse_headers_output(result.stdout))
    return headers


def fetch_headers(conn: Connector, ids: Iterable[str]) -> dict[str, str]:
    """Headers of many queued messages: one ``postcat`` per :data:`BATCH` ids.

    An id that left the queue since it was listed stops postcat (after a one-second
    pause of Postfix's): the rest of the batch is narrowed to what is still on hold, so a
    burst of departures costs one pause per batch, not one per message. Output that cannot
    be trusted, or a failure of another kind, is re-read one id at a time as before.
    """
    wanted = check_ids(ids)
    headers: dict[str, str] = {}
    again: list[str] = []
    for chunk in _chunks(wanted):
        while chunk:
            argv = ["sh", "-c", BATCH_HEADERS_SCRIPT, "sh", str(HEADER_LIMIT), *chunk]
            result = conn.run(argv, timeout=600)
            found, suspect = parse_postcat_output(result.stdout, chunk)
            headers.update(found)
            again += suspect
            missing = MISSING.search(result.stderr)
            if result.ok and missing is None:
                break
            if missing is None or missing.group(1) not in chunk:
                again += [i for i in chunk if i not in found and i not in suspect]
                break
            # Everything before the missing id was printed; the rest, if still held.
            rest = chunk[chunk.index(missing.group(1)) + 1 :]
            present = in_hold(conn, rest) if rest else set()
            chunk = [i for i in rest if i in present]
    if again:
        headers.update(_headers_one_by_one(conn, again))
    return headers


def in_hold(conn: Connector, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` are in the node's hold queue right now."""
    wanted = check_ids(ids)
    present: set[str] = set()
    for chunk in _chunks(wanted, 2000):
        result = conn.run(["sh", "-c", IN_HOLD_SCRIPT, "sh", *chunk], timeout=300)
        if not result.ok:
            raise QueueCommandFailed(
                f"checking the hold queue exited {result.exit_code}", result.stderr.strip()
            )
        asked = set(chunk)
        present.update(line for line in result.stdout.split() if line in asked)
    return present


# ----------------------------------------------------------------------- outcomes


@dataclass
class QueueChange:
    """What a release or delete did on the node, per id."""

    done: list[str] = field(default_factory=list)
    # Not in the hold queue when we came: released or deleted by other means.
    absent: list[str] = field(default_factory=list)
    # In the hold queue before and still there after: the command did not take.
    failed: dict[str, str] = field(default_factory=dict)
    output: str = ""


def _postsuper(conn: Connector, flag: str, ids: list[str]) -> tuple[set[str], QueueChange]:
    change = QueueChange()
    present = in_hold(conn, ids)
    change.absent = [i for i in ids if i not in present]
    targets = [i for i in ids if i in present]
    outputs = []
    for chunk in _chunks(targets):
        # The "-" form reads ids from stdin; "hold" restricts the command to the hold
        # queue, so a message that left it meanwhile is never touched.
        result = conn.run(
            ["postsuper", flag, "-", "hold"], input="".join(f"{i}\n" for i in chunk).encode()
        )
        outputs.append((result.stdout + result.stderr).strip())
        if not result.ok:
            raise QueueCommandFailed(
                f"postsuper {flag} exited {result.exit_code}", "\n".join(outputs)[-2000:]
            )
    change.output = "\n".join(o for o in outputs if o)[-4000:]
    still = in_hold(conn, targets) if targets else set()
    for queue_id in targets:
        if queue_id in still:
            change.failed[queue_id] = f"postsuper {flag} left it in the hold queue"
        else:
            change.done.append(queue_id)
    return present, change


def release(conn: Connector, ids: Iterable[str]) -> QueueChange:
    """Send held messages on: requeued from the hold queue through cleanup, then delivered.

    ``postsuper -r`` rather than ``-H``: ``-H`` moves a message to the deferred queue with
    its original arrival time, so mail held for longer than ``maximal_queue_lifetime``
    (5 days by default; spam is kept for 30) would bounce the moment it is released.
    Requeued mail is a new queue file with a fresh lifetime; it passes ``cleanup`` again
    (which drops the filter's X-UMS-Hold header) but not the content filter, which only
    filters mail arriving over SMTP. ``postkick`` wakes the pickup daemon so delivery
    starts now rather than at its next poll.
    """
    wanted = check_ids(ids)
    _present, change = _postsuper(conn, "-r", wanted)
    if change.done:
        # In the background: postkick waits for the busy pickup daemon (about 0.5 s per
        # call while it feeds hundreds of requeued messages to cleanup), and nothing here
        # depends on it. If the kick is lost, pickup finds the mail at its next poll.
        conn.run(["sh", "-c", KICK_PICKUP], timeout=60)
    return change


def delete(conn: Connector, ids: Iterable[str]) -> QueueChange:
    """Delete held messages (only from the hold queue)."""
    _present, change = _postsuper(conn, "-d", check_ids(ids))
    return change


# ----------------------------------------------------------------------- content


def fetch_message(
    conn: Connector, queue_id: str, limit: int, *, timeout: float = 120
) -> bytes | None:
    """Headers and body of one queued message, at most ``limit`` bytes; None if gone."""
    (queue_id,) = check_ids([queue_id])
    argv = ["sh", "-c", MESSAGE_SCRIPT, queue_id, str(int(limit))]
    result = conn.run(argv, timeout=timeout)
    if not result.ok:
        raise CommandFailed(result, host=conn.host)
    data = base64.b64decode("".join(result.stdout.split()) or b"")
    return data or None


def grep_log(conn: Connector, queue_id: str, files: list[str], limit: int = 500) -> list[str]:
    """Log lines that mention ``queue_id`` in the first of ``files`` that exists."""
    (queue_id,) = check_ids([queue_id])
    for path in files:
        if not path.startswith("/") or "\0" in path:
            continue
        result = conn.run(["grep", "-F", "-s", "-m", str(limit), "--", queue_id, path])
        if result.exit_code in (0, 1):
            return [line for line in result.stdout.splitlines() if line][:limit]
    return []


def summary(change: QueueChange) -> dict[str, Any]:
    return {
        "done": len(change.done),
        "absent": len(change.absent),
        "failed": len(change.failed),
    }


# ----------------------------------------------------------------------- marked outcomes


def check_token(token: str) -> str:
    if not isinstance(token, str) or not TOKEN.match(token):
        raise InvalidQueueId(f"invalid request token {token!r}")
    return token


def marked(conn: Connector, token: str) -> set[str]:
    """The queue ids our commands under ``token`` acted on, from the node's marker file."""
    result = conn.run(["sh", "-c", MARKS_SCRIPT, "sh", MARKS_DIR, check_token(token)])
    if not result.ok:
        raise QueueCommandFailed(
            f"reading the marker file exited {result.exit_code}", result.stderr.strip()
        )
    return {line for line in result.stdout.split() if QUEUE_ID.match(line)}


def _act(conn: Connector, flag: str, token: str, ids: list[str]) -> tuple[list[str], str]:
    """Mark and move the ``ids`` still held; (the ids acted on, postsuper's output)."""
    argv = ["sh", "-c", APPLY_SCRIPT, "sh", MARKS_DIR, token, flag, str(MARKS_KEEP_DAYS), *ids]
    result = conn.run(argv, timeout=600)
    if not result.ok:
        raise QueueCommandFailed(
            f"postsuper {flag} exited {result.exit_code}", result.stderr.strip()[-2000:]
        )
    asked = set(ids)
    return [i for i in result.stdout.split() if i in asked], result.stderr.strip()[-4000:]


def apply_marked(conn: Connector, outcome: str, token: str, ids: Iterable[str]) -> QueueChange:
    """Release (``outcome="release"``) or delete ``ids`` from the hold queue, idempotently.

    Reads before it acts and confirms after: ``done`` are the ids that left the hold queue
    through our command (this run's or an earlier attempt's, per the marker file),
    ``absent`` those that left by other means, ``failed`` those still held after the
    command. Running it again with the same token never acts twice on one message.
    """
    flag = FLAGS[outcome]
    wanted = check_ids(ids)
    check_token(token)
    change = QueueChange()
    present = in_hold(conn, wanted)
    absent = [i for i in wanted if i not in present]
    if absent:
        # Read after the queue: an id missing from it without our marker now was not
        # moved by us before the listing, so it left by other means.
        ours = marked(conn, token)
        change.done += [i for i in absent if i in ours]
        change.absent += [i for i in absent if i not in ours]
    outputs = []
    for chunk in _chunks([i for i in wanted if i in present]):
        acted, output = _act(conn, flag, token, chunk)
        outputs.append(output)
        still = in_hold(conn, chunk)
        moved = set(acted)
        for queue_id in chunk:
            if queue_id in still:
                change.failed[queue_id] = f"postsuper {flag} left it in the hold queue"
            elif queue_id in moved:
                change.done.append(queue_id)
            else:
                # Held when we looked, gone before our command came: not ours.
                change.absent.append(queue_id)
    change.output = "\n".join(o for o in outputs if o)[-4000:]
    if flag == "-r" and change.done:
        # Also after a retry that only found our marker: the attempt that moved the mail
        # may have died before its kick.
        kick_pickup(conn)
    return change


def kick_pickup(conn: Connector) -> None:
    """Wake the pickup daemon for requeued mail (in the background; see :func:`release`)."""
    conn.run(["sh", "-c", KICK_PICKUP], timeout=60)
