"""The cloud files usage collection's parsing and storing, without a node: the answer of
``occ usage-report:generate`` (Nextcloud's user_usage_report app) and what a bad answer or
an unreachable node leaves (the last values). The node test is test_usage_node.py."""

from __future__ import annotations

import pytest

from cloudfiles import collect
from cloudfiles.models import CloudAccount
from servers.models import Node
from tests.mail.helpers import make_domain, make_mailbox

REPORT = (
    '"ann@files.example","2026-12-07T10:00:01+00:00",1073741824,786432000,12,1,1,2\n'
    '"bob@files.example","2026-12-07T10:00:01+00:00",-3,-2,0,0,0,0\n'
)


def test_report_lines_give_used_bytes_per_user() -> None:
    assert collect.parse_report(REPORT) == {"ann@files.example": 786432000, "bob@files.example": 0}


def test_older_releases_human_sizes_are_read() -> None:
    older = '"ann@x.example","2017-09-18T09:00:01+00:00","6 MB","1.5 MB",12,1,1,2\n'
    assert collect.parse_report(older) == {"ann@x.example": int(1.5 * 1024 * 1024)}


def test_empty_report_is_no_users() -> None:
    assert collect.parse_report("\n") == {}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('Command "usage-report:generate" is not defined.\n', "line 1: not a report line"),
        ('"ann@x.example","2026-01-01",1,lots,0,0,0,0\n', "'lots' is not a size"),
        ("<html><body>Internal Server Error</body></html>\n", "not a report line"),
        (REPORT + "PHP Warning:  something\n", "line 3: not a report line"),
    ],
)
def test_anything_else_is_a_clear_error(text: str, says: str) -> None:
    with pytest.raises(collect.CollectError, match=says):
        collect.parse_report(text)


@pytest.fixture
def accounts(cast):
    domain = make_domain(cast.ministry, "files.example")
    ann = make_mailbox(domain, "ann", quota_mb=100)
    bob = make_mailbox(domain, "bob", quota_mb=100)
    node = Node(hostname="files-1", customer_path=cast.ministry.path)
    collect.store([collect.outcome_of(node, True, REPORT, "")])
    return node, ann, bob


def test_a_bad_answer_counts_the_node_missed_and_overwrites_nothing(accounts) -> None:
    node, ann, _bob = accounts
    assert CloudAccount.objects.get(mailbox=ann).used_bytes == 786432000
    bad = collect.outcome_of(node, True, '"ann@files.example","x",1,oops,0\n', "")
    failed = collect.outcome_of(node, False, "", "ssh: connection refused")
    counts = collect.store([bad, failed])
    assert counts["missed"] == 2 and counts["nodes"] == 0
    assert "oops" in counts["errors"][0] and "connection refused" in counts["errors"][1]
    assert CloudAccount.objects.get(mailbox=ann).used_bytes == 786432000


def test_a_user_gone_from_the_report_has_no_bytes_left(accounts) -> None:
    node, ann, bob = accounts
    only_bob = '"bob@files.example","2026-12-07T10:00:01+00:00",-3,4096,1,0,0,0\n'
    counts = collect.store([collect.outcome_of(node, True, only_bob, "")])
    assert counts == {"nodes": 1, "missed": 0, "changed": 2, "errors": []}
    assert CloudAccount.objects.get(mailbox=ann).used_bytes == 0
    assert CloudAccount.objects.get(mailbox=bob).used_bytes == 4096


def test_a_report_from_another_tree_is_not_taken(accounts, cast) -> None:
    _node, ann, _bob = accounts
    elsewhere = Node(hostname="files-2", customer_path=cast.isp.path)  # not the ministry
    collect.store([collect.outcome_of(elsewhere, True, REPORT.replace("786432000", "5"), "")])
    assert CloudAccount.objects.get(mailbox=ann).used_bytes == 786432000
