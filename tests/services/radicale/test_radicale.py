"""The Radicale service renders only validated values, grants exactly what the policy
says, and its checker loads the staged files with the real Radicale (Debian package)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.services.base import (
    CheckFailed,
    DavGroupData,
    DesiredState,
    DomainData,
    MailboxData,
    NodeView,
)
from deploy.services.postfix.safe import UnsafeName
from deploy.services.radicale import ROOT, SERVICE
from tests.services.localconn import LocalConnector

HASH = "$6$saltsalt$" + "a" * 86
CARD = "BEGIN:VCARD\r\nVERSION:4.0\r\nUID:urn:ums:person:1\r\nFN:Alice\r\nEND:VCARD\r\n"


def mailbox(email: str, *, dav: bool = True, sharing: bool = False) -> MailboxData:
    local, domain = email.split("@")
    protocols = {"dav": dav, "dav_sharing": sharing}
    return MailboxData(email, local, domain, HASH, 100, True, False, True, True, 0, (), False,
                       protocols)  # fmt: skip


def state(*mailboxes: MailboxData, groups=(), **settings) -> DesiredState:
    node = NodeView(1, "files1.example", "10.0.0.5", ("cloudfiles",), "debian", 1)
    domains = sorted({m.domain for m in mailboxes} | {"empty.example"})
    return DesiredState(
        node=node,
        domains=[DomainData(d, True, "", (), None, {}) for d in domains],
        mailboxes=list(mailboxes),
        dav_groups=list(groups),
        settings=settings,
    )


def files(st: DesiredState) -> dict[str, bytes]:
    return {f.path: f.content for f in SERVICE.render(st)}


def test_only_mailboxes_with_dav_access_are_users() -> None:
    rendered = files(state(mailbox("a@x.example"), mailbox("b@x.example", dav=False)))
    users = rendered[f"{ROOT}/users"].decode()
    assert f"a@x.example:{HASH}\n" in users
    assert "b@x.example" not in users


def test_rights_gal_per_group_and_calendar_sharing_only_for_sharers() -> None:
    group = DavGroupData(7, "Ministry", ("x.example",), CARD, ("a@x.example", "c@x.example"))
    other = DavGroupData(8, "Other", ("y.example",), CARD, ())
    st = state(
        mailbox("a@x.example", sharing=True),
        mailbox("b@x.example"),
        mailbox("c@x.example", dav=False, sharing=True),  # not a DAV user: not shared
        mailbox("d@y.example"),
        groups=[group, other],
    )
    rights = files(st)[f"{ROOT}/rights"].decode()
    assert "[gal-7]\nuser: [^@/]+@(?:x\\.example)\ncollection: gal-7(?:/addressbook)?" in rights
    assert "[gal-8]\nuser: [^@/]+@(?:y\\.example)" in rights
    assert "collection: (?:a@x\\.example)/calendar\npermissions: r" in rights
    assert "c@x" not in rights and "gal-8-calendars" not in rights
    index = files(st)[f"{ROOT}/gal/index"].decode().splitlines()
    assert [line.split(" ")[0] for line in index[1:]] == ["gal-7", "gal-8"]
    assert index[1].endswith(" Ministry")


@pytest.mark.parametrize(
    "bad",
    [
        {"groups": [DavGroupData(7, "x\n[all]\nuser: .*", ("x.example",), "", ())]},
        {"groups": [DavGroupData(7, "x", ("x.example\nuser: .*",), "", ())]},
        {"groups": [DavGroupData(0, "x", ("x.example",), "", ())]},
        {"dav_listen": "0.0.0.0:5232\n[auth]"},
        {"dav_auth_delay": 99},
    ],
)
def test_unsafe_values_are_refused_before_rendering(bad: dict) -> None:
    groups = bad.pop("groups", ())
    with pytest.raises(UnsafeName):
        SERVICE.render(state(mailbox("a@x.example"), groups=groups, **bad))


def test_a_mailbox_hash_not_in_crypt_format_is_refused() -> None:
    box = mailbox("a@x.example")
    box.password_hash = "x:y\nroot:$6$"
    with pytest.raises(UnsafeName):
        SERVICE.render(state(box))


def stage(tmp_path: Path, st: DesiredState) -> Path:
    root = tmp_path / "stage"
    for path, content in files(st).items():
        target = root / path[len(ROOT) + 1 :]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


def test_real_radicale_loads_the_render_and_refuses_broken_files(tmp_path: Path) -> None:
    group = DavGroupData(7, "Ministry", ("x.example",), CARD, ())
    root = stage(tmp_path, state(mailbox("a@x.example"), groups=[group]))
    conn = LocalConnector()
    SERVICE.validate(conn, str(root))
    conf = root / "config"
    conf.write_text(conf.read_text().replace("[web]", "[nosuchsection]"))
    with pytest.raises(CheckFailed, match="nosuchsection"):
        SERVICE.validate(conn, str(root))
    root = stage(tmp_path / "2", state(mailbox("a@x.example"), groups=[group]))
    # Not a vCard: an address book cannot hold it.
    (root / "gal" / "gal-7.vcf").write_text("BEGIN:VEVENT\r\nUID:x\r\nEND:VEVENT\r\n")
    with pytest.raises(CheckFailed, match="VEVENT"):
        SERVICE.validate(conn, str(root))
