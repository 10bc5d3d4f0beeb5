"""Rule and signature updates from a local mirror on a real SMTP node with spamd and clamd.

The mirror is a plain HTTP server on the test bridge serving what a private mirror of
the real channels serves: a SpamAssassin channel in sa-update's archive format (a rule
whose score changes between versions) and a ClamAV signature file (.ndb). Checked:
a first update installs both and the running daemons use them; a newer version changes
the score; a version that fails lint and a signature that does not load are refused and
the previous ones stay in use; the node keeps the last update time. The channel is signed
with a GPG key made in the test and configured as the channel's key: archives signed by
another key, or not signed, are refused by sa-update and the previous rules stay.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import re
import socket
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import paramiko
import pytest

from deploy.rule_updates import SA_UPDATE_DIR
from deploy.rule_updates.jobs import update_all
from deploy.rule_updates.keys import delete_channel_key, set_channel_key
from deploy.services import registry
from deploy.services.clamav import SERVICE as CLAMAV
from deploy.services.spamassassin import SERVICE as SPAMASSASSIN
from servers.models import Node, Zone
from tests.fixtures import Cast
from tests.servers.conftest import controller_key, controller_pkey, zone  # noqa: F401
from ums.models import Job

from .conftest import approved_node, trusting_cluster
from .gpgkeys import SigningKey, signing_key
from .test_filtering import (
    FILTER_PRIVATE_PATHS,
    local_clamav_database,
    needs_filters,
    wait_for_scanners,
)

pytestmark = [pytest.mark.nodes, pytest.mark.django_db(transaction=True), needs_filters]

CHANNEL = "rules.ums.test"
SIGNATURE = "ums-test.ndb"
MARKER = "ums-rule-marker-9c1"
VIRUS = "UMS-TEST-SIGNATURE-7f3a"


def publish_channel(root: Path, version: int, rules: str, signer: SigningKey | None) -> None:
    """Version ``version`` with its checksum, signed by ``signer`` (None: unsigned)."""
    folder = root / "spamassassin" / CHANNEL
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = rules.encode()
        info = tarfile.TarInfo("70_ums_test.cf")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    archive = buffer.getvalue()
    (folder / f"{version}.tar.gz").write_bytes(archive)
    (folder / f"{version}.tar.gz.sha256").write_text(hashlib.sha256(archive).hexdigest() + "\n")
    if signer is not None:
        signer.sign(folder / f"{version}.tar.gz")
    (folder / "latest").write_text(f"{version}\n")


def rule(score: float) -> str:
    return (
        f"body     UMS_TEST_RULE  /{MARKER}/\n"
        "describe UMS_TEST_RULE  UMS update test rule\n"
        f"score    UMS_TEST_RULE  {score}\n"
    )


def publish_signature(root: Path, body: str) -> None:
    folder = root / "clamav"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SIGNATURE).write_text(body)
    (folder / f"{SIGNATURE}.sha256").write_text(hashlib.sha256(body.encode()).hexdigest())


def signature_line() -> str:
    return f"UMS.Test.Sig:0:*:{VIRUS.encode().hex()}\n"


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[Path, partial]]:
    root = tmp_path / "mirror"
    root.mkdir()

    def serve(address: str) -> str:
        handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a: None  # type: ignore[attr-defined]
        server = http.server.ThreadingHTTPServer((address, 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://{address}:{server.server_address[1]}"

    servers: list[http.server.ThreadingHTTPServer] = []
    yield root, serve
    for server in servers:
        server.shutdown()
        server.server_close()


def rule_score(tnode) -> float | None:
    """UMS_TEST_RULE's points in spamd's report for a message that hits it."""
    message = f"From: a@outside.test\nSubject: t\n\nhello {MARKER} bye\n"
    report = tnode.exec_in_node(["spamc", "-R"], input=message, check=False).stdout
    match = re.search(r"^\s*(-?[\d.]+)\s+UMS_TEST_RULE\b", report, re.MULTILINE)
    return float(match.group(1)) if match else None


def clamd_scan(tnode, data: str) -> str:
    script = (
        "import socket,sys\n"
        "d=sys.stdin.buffer.read()\n"
        "s=socket.create_connection(('127.0.0.1',3310),60)\n"
        "s.sendall(b'zINSTREAM\\0'+len(d).to_bytes(4,'big')+d+b'\\0\\0\\0\\0')\n"
        "print(s.recv(4096).rstrip(b'\\0').decode())\n"
    )
    return tnode.exec_in_node(["python3", "-c", script], input=data).stdout.strip()


def run_updates() -> Job:
    assert update_all() == 1
    return Job.objects.filter(kind="node.update_rules").latest("pk")


def test_rules_and_signatures_update_from_the_mirror_and_roll_back_bad_ones(
    tmp_path_factory: pytest.TempPathFactory,
    controller_pkey: paramiko.PKey,  # noqa: F811
    controller_key,  # noqa: F811
    zone: Zone,  # noqa: F811
    cast: Cast,
    mirror,
    monkeypatch: pytest.MonkeyPatch,
    settings,
) -> None:
    monkeypatch.setattr(registry, "SERVICES", [SPAMASSASSIN, CLAMAV])
    # No domain here: clamd is forced on (it otherwise runs when a domain wants it).
    settings.UMS_CONVERGE = {"spam_network_checks": False, "antivirus": True}
    settings.UMS_AUTO_CONVERGE = True
    settings.UMS_CONVERGE_ON_APPROVAL = True
    root, serve = mirror
    private = (*FILTER_PRIVATE_PATHS, "/var/lib/ums-updates")
    workdir = tmp_path_factory.mktemp("rule-updates")
    with (
        signing_key("Channel Key") as key,
        signing_key("Other Key") as other,
        trusting_cluster(workdir, 1, controller_pkey, private) as cluster,
    ):
        set_channel_key(actor=None, channel=CHANNEL, public_key=key.public)
        [tnode] = cluster.nodes
        local_clamav_database(tnode)
        node = approved_node(zone, cast, tnode, ["smtp"])
        failed = [j.error for j in Job.objects.filter(status=Job.FAILED)]
        assert not failed, failed
        Node.objects.filter(pk=node.pk).update(status="active")
        settings.UMS_RULES_MIRROR_URL = serve(cluster.bridge_address)
        settings.UMS_SA_UPDATE_CHANNELS = [CHANNEL]
        settings.UMS_CLAMAV_SIGNATURES = [SIGNATURE]
        wait_for_scanners_on(tnode)
        assert rule_score(tnode) is None
        assert clamd_scan(tnode, f"x {VIRUS} y") == "stream: OK"

        # First update: the channel and the signature go live in the running daemons.
        publish_channel(root, 1001, rule(1.5), key)
        publish_signature(root, signature_line())
        job = run_updates()
        assert job.status == Job.SUCCEEDED, job.error
        assert rule_score(tnode) == 1.5
        assert clamd_scan(tnode, f"x {VIRUS} y") == "stream: UMS.Test.Sig.UNOFFICIAL FOUND"
        node.refresh_from_db()
        first = node.rule_updates
        assert first["spamassassin"][CHANNEL] == {
            "version": 1001,
            "available": 1001,
            "status": "updated",
        }
        assert first["clamav"][SIGNATURE]["status"] == "updated"
        assert first["updated_at"] and first["errors"] == []

        # A newer channel version changes the score; nothing new for ClamAV.
        publish_channel(root, 1002, rule(6.5), key)
        job = run_updates()
        assert job.status == Job.SUCCEEDED, job.error
        assert rule_score(tnode) == 6.5
        node.refresh_from_db()
        assert node.rule_updates["clamav"][SIGNATURE]["status"] == "current"
        good = node.rule_updates["updated_at"]

        # A version that fails lint and a signature file that does not load: refused,
        # the previous rules and signatures stay in use, the reasons are recorded.
        publish_channel(root, 1003, rule(9.0) + "score UMS_TEST_RULE not-a-number\n", key)
        publish_signature(root, "garbage:line\n")
        job = run_updates()
        assert job.status == Job.FAILED
        assert CHANNEL in job.error and SIGNATURE in job.error
        assert rule_score(tnode) == 6.5
        assert clamd_scan(tnode, f"x {VIRUS} y") == "stream: UMS.Test.Sig.UNOFFICIAL FOUND"
        node.refresh_from_db()
        state = node.rule_updates
        assert state["spamassassin"][CHANNEL]["version"] == 1002
        assert state["spamassassin"][CHANNEL]["status"] == "failed"
        assert "does not load" in state["clamav"][SIGNATURE]["error"]
        assert state["updated_at"] == good and state["checked_at"] > good
        assert len(state["errors"]) == 2
        assert (
            tnode.path(f"{SA_UPDATE_DIR}/rules_ums_test.cf")
            .read_text()
            .startswith("# UPDATE version 1002")
        )
        # sa-update's keyring on the node holds the channel key (and only it trusts it).
        assert tnode.path("/etc/spamassassin/sa-update-keys").is_dir()

        # Signed by another key, then not signed at all: refused before installing, the
        # reason is the node's last update error, the rules of 1002 stay in use.
        publish_signature(root, signature_line())
        for version, signer, reason in (
            (1004, other, "GPG validation failed"),
            (1005, None, "unsigned"),
        ):
            publish_channel(root, version, rule(0.5), signer)
            job = run_updates()
            assert job.status == Job.FAILED, job.log
            node.refresh_from_db()
            entry = node.rule_updates["spamassassin"][CHANNEL]
            assert entry["status"] == "failed" and entry["version"] == 1002, entry
            assert reason in entry["error"], entry["error"]
            assert [e for e in node.rule_updates["errors"] if reason in e], node.rule_updates
            assert rule_score(tnode) == 6.5
            assert (
                tnode.path(f"{SA_UPDATE_DIR}/rules_ums_test.cf")
                .read_text()
                .startswith("# UPDATE version 1002")
            )

        # A channel whose key was removed is refused before sa-update runs.
        delete_channel_key(actor=None, channel=CHANNEL)
        publish_channel(root, 1006, rule(0.5), key)
        job = run_updates()
        assert job.status == Job.FAILED
        node.refresh_from_db()
        assert "no signing key" in node.rule_updates["spamassassin"][CHANNEL]["error"]
        assert rule_score(tnode) == 6.5


def wait_for_scanners_on(tnode) -> None:
    class One:
        smtp = tnode

    wait_for_scanners(One, timeout=120)  # type: ignore[arg-type]
    assert socket  # the scan helpers above talk to the daemons from inside the node


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("UMS_RULES_MIRROR_URL", "file:///etc/passwd"),
        ("UMS_RULES_MIRROR_URL", "http://mirror.test/a b"),
        ("UMS_RULES_MIRROR_URL", "http://mirror.test/?x=1"),
        ("UMS_SA_UPDATE_CHANNELS", ["updates.spamassassin.org; rm -rf /"]),
        ("UMS_SA_UPDATE_CHANNELS", ["nodots"]),
        ("UMS_CLAMAV_SIGNATURES", ["../main.cvd"]),
        ("UMS_CLAMAV_SIGNATURES", ["local.exe"]),
    ],
)
def test_update_settings_that_must_not_reach_a_node_are_refused(
    settings, setting: str, value: object
) -> None:
    from deploy.rule_updates import InvalidUpdateSettings, enabled

    settings.UMS_RULES_MIRROR_URL = "https://mirror.test/ums"
    settings.UMS_SA_UPDATE_CHANNELS = ["updates.spamassassin.org"]
    settings.UMS_CLAMAV_SIGNATURES = ["ums.ndb"]
    assert enabled()
    setattr(settings, setting, value)
    with pytest.raises(InvalidUpdateSettings):
        enabled()
