"""The ``backup.export`` job: stream a Maildir tar off the IMAP node, hash it on the way,
and write it encrypted to a target or to the controller's exports folder.

Never whole in memory: the tar arrives over SSH in pieces (:mod:`.export_stream`), each
piece is hashed, counted for the progress bar and handed on to the encrypting writer.
Safe to run again after a dead worker: a finished export is left alone, anything else is
made again from the start (the controller file through a ``.part`` file and a rename, the
target object replaced whole), and a snapshot clone left behind is reused and destroyed.
"""

from __future__ import annotations

import datetime
import hashlib
import time
from collections.abc import Iterable, Iterator
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext_noop

from deploy.connector.base import PermanentConnectorError
from deploy.desired import DEFAULT_SETTINGS
from ums import jobs
from ums.models import Job

from . import crypto, drivers, export_stream, snapshot_run
from . import export as export_mod
from .models import Export


class _Counter:
    """Hashes and counts the plaintext as it passes; reports progress twice a second."""

    def __init__(self, reporter: jobs.Reporter, total: int) -> None:
        self.sha = hashlib.sha256()
        self.size = 0
        self.total = max(total, 1)
        self._reporter = reporter
        self._last = 0.0

    def wrap(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        for piece in chunks:
            self.sha.update(piece)
            self.size += len(piece)
            now = time.monotonic()
            if now - self._last > 0.5:
                self._last = now
                # The tar is a little larger than the files (headers): cap below 100 %.
                self._reporter.progress(min(self.size, self.total - 1), self.total)
            yield piece


def _estimate(conn: Any, folder: str, members: list[str]) -> int:
    """Bytes the tar will hold, roughly (``du``), for the progress bar."""
    result = conn.run(["du", "-sb", "--", *[f"{folder}/{m}" for m in members]])
    total = 0
    for line in result.stdout.splitlines():
        head = line.split("\t", 1)[0]
        total += int(head) if head.isdigit() else 0
    return total


def _mail_root() -> str:
    conf = {**DEFAULT_SETTINGS, **getattr(settings, "UMS_CONVERGE", {})}
    return str(conf.get("mail_root") or "/var/mail/vhosts")


def _write(export: Export, chunks: Iterable[bytes], counter: _Counter) -> None:
    if export.target_id:
        driver = drivers.driver_for(export.target)
        try:
            drivers.put_encrypted(driver, export.object_name, counter.wrap(chunks))
            line = f"{counter.sha.hexdigest()}  {export.object_name.rsplit('/', 1)[-1]}\n"
            drivers.put_encrypted(driver, f"{export.object_name}.sha256", [line.encode()])
        finally:
            driver.close()
    else:
        export_mod.write_private(
            export_mod.file_path(export), crypto.encrypt_stream(counter.wrap(chunks))
        )


@jobs.handler(export_mod.EXPORT_JOB)
def run_export(job: Job, reporter: jobs.Reporter) -> dict:
    from deploy.nodes import session

    export = Export.objects.select_related("node", "target").filter(pk=job.params.get("export_id"))
    export = export.first()
    if export is None:
        raise jobs.PermanentJobError("The export was deleted.")
    # Claimed conditionally: a purge marks the row purged, and nothing may bring it back.
    live = (Export.PENDING, Export.RUNNING, Export.FAILED)
    if not Export.objects.filter(pk=export.pk, status__in=live).update(status=Export.RUNNING):
        return {"status": Export.objects.get(pk=export.pk).status}
    if export.node is None:
        raise jobs.PermanentJobError("The IMAP node of this export was deleted.")
    if export.target_id is None and not export.file_name:
        raise jobs.PermanentJobError("The backup target of this export was deleted.")
    conf = getattr(settings, "UMS_CONVERGE", {})
    dataset = ""
    if export.snapshot_name:
        dataset = f"{snapshot_run.layout(conf)}/{export.domain_name}"
    members = export_stream.members_for(export.local_part)
    try:
        with (
            session(export.node) as conn,
            export_stream.source_folder(
                conn,
                mail_root=_mail_root(),
                domain=export.domain_name,
                dataset=dataset,
                snapshot=export.snapshot_name,
                export_id=export.pk,
            ) as folder,
        ):
            counter = _Counter(reporter, _estimate(conn, folder, members))
            reporter.say(
                gettext_noop("streaming %(what)s from %(node)s"),
                what=str(export),
                node=export.node.hostname,
            )
            stream = export_stream.stream_command(
                conn,
                export_stream.tar_argv(folder, members),
                ok_codes=export_stream.TAR_OK,
            )
            _write(export, stream, counter)
    except (export_stream.StreamError, drivers.TargetError, PermanentConnectorError) as exc:
        Export.objects.filter(pk=export.pk).update(status=Export.FAILED, error=str(exc)[:1000])
        raise jobs.PermanentJobError(str(exc)) from exc
    now = timezone.now()
    finished = Export.objects.filter(pk=export.pk, status=Export.RUNNING).update(
        status=Export.READY,
        size_bytes=counter.size,
        sha256=counter.sha.hexdigest(),
        finished_at=now,
        expires_at=None
        if export.target_id
        else now + datetime.timedelta(seconds=export_mod.link_ttl()),
        error="",
    )
    if not finished:
        # Purged (or expired) while it was being written: what was just written goes too.
        export_mod.discard(export)
        raise jobs.PermanentJobError("The export was permanently deleted while it ran.")
    reporter.progress(counter.total, counter.total)
    reporter.say(
        gettext_noop("exported %(bytes)s bytes, sha256 %(sha256)s"),
        bytes=counter.size,
        sha256=counter.sha.hexdigest(),
    )
    return {"size": counter.size, "sha256": counter.sha.hexdigest()}
