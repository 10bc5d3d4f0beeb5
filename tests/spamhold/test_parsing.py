"""Parsing what held messages and Postfix say, without a node: defensive by design."""

from __future__ import annotations

from decimal import Decimal
from email.message import EmailMessage

from spamhold import content, nodeops, parsing
from spamhold.models import Reason


def test_hold_header_is_parsed_defensively() -> None:
    info = parsing.parse_hold_header("spam; score=9.5; rules=BAYES_99, URIBL_BLACK ,bad rule")
    assert (info.reason, info.score, info.rules) == (
        Reason.SPAM,
        Decimal("9.50"),
        ["BAYES_99", "URIBL_BLACK"],
    )
    attachment = parsing.parse_hold_header("attachment; attachment=invoice.exe; type=app/x")
    assert (attachment.reason, attachment.attachment, attachment.attachment_type) == (
        Reason.ATTACHMENT,
        "invoice.exe",
        "app/x",
    )
    assert parsing.parse_hold_header(None).reason == Reason.OTHER
    assert parsing.parse_hold_header("nonsense; score=1").reason == Reason.OTHER
    assert parsing.parse_hold_header("spam; score=NaN").score is None
    assert parsing.parse_hold_header("spam; score=1e400").score is None
    assert "\x1b" not in parsing.parse_hold_header("virus; virus=\x1b[31mX").virus


def test_only_safe_queue_ids_are_taken_from_postqueue_and_reach_commands() -> None:
    output = "\n".join(
        [
            '{"queue_name": "hold", "queue_id": "4Xk2Ln0sTz", "arrival_time": 1, '
            '"message_size": 10, "sender": "a@b.test", "recipients": [{"address": "c@d.test"}]}',
            '{"queue_name": "hold", "queue_id": "X; rm -rf /", "recipients": []}',
            '{"queue_name": "deferred", "queue_id": "ABC"}',
            "not json",
        ]
    )
    entries = nodeops.parse_postqueue_json(output)
    assert [e.queue_id for e in entries] == ["4Xk2Ln0sTz"]
    assert entries[0].recipients == ("c@d.test",)
    try:
        nodeops.check_ids(["ABC", "$(reboot)"])
    except nodeops.InvalidQueueId:
        pass
    else:
        raise AssertionError("an unsafe id was accepted")


def test_batched_header_output_is_split_per_message_and_missing_ones_left_out() -> None:
    sep = nodeops.SEPARATOR
    output = (
        f"\n{sep} AAA\nSubject: one\nX-UMS-Hold: spam\n"
        f"\n{sep} BBB\n{sep}-missing\n"
        f"\n{sep} CCC\nSubject: three\n"
    )
    found = nodeops.parse_headers_output(output)
    assert set(found) == {"AAA", "CCC"}
    assert parsing.summarise_headers(found["AAA"]).subject == "one"


def test_content_is_parsed_not_executed_html_becomes_text_attachments_only_listed() -> None:
    message = EmailMessage()
    message["Subject"] = "=?utf-8?q?caf=C3=A9?="
    message["From"] = "x@outside.test"
    message.set_content(
        "<html><head><style>p{}</style><script>alert(1)</script></head>"
        "<body><p>Hello <b>there</b></p><img src=http://tracker.test/x></body></html>",
        subtype="html",
    )
    message.add_attachment(
        b"MZ\x90\x00" * 100, maintype="application", subtype="x-msdownload", filename="invoice.exe"
    )
    found = content.parse_message(message.as_bytes(), truncated=False)
    assert found.from_html
    assert "Hello there" in found.text
    assert "alert" not in found.text and "<" not in found.text and "tracker" not in found.text
    assert ("Subject", "café") in found.headers
    assert [(a.name, a.content_type, a.size) for a in found.attachments] == [
        ("invoice.exe", "application/x-msdownload", 400)
    ]


def _section(kind: str, queue_id: str) -> str:
    return f"*** {kind} hold/{queue_id} ***"


def test_postcat_batch_output_is_split_and_forged_sections_are_not_trusted() -> None:
    ids = ["4QaaaAAA1", "4QbbbBBB2", "4QcccCCC3"]
    output = "\n".join(
        [
            _section("ENVELOPE RECORDS", ids[0]),
            _section("MESSAGE CONTENTS", ids[0]),
            "Subject: first",
            _section("HEADER EXTRACTED", ids[0]),
            _section("MESSAGE FILE END", ids[0]),
            # The second message's envelope carries a forged section for the third one.
            _section("ENVELOPE RECORDS", ids[1]),
            _section("MESSAGE CONTENTS", ids[2]),
            "Subject: forged",
            _section("MESSAGE CONTENTS", ids[1]),
            "Subject: second",
            _section("MESSAGE FILE END", ids[1]),
            _section("ENVELOPE RECORDS", ids[2]),
            _section("MESSAGE CONTENTS", ids[2]),
            "Subject: third",
            _section("MESSAGE FILE END", ids[2]),
        ]
    )
    found, suspect = nodeops.parse_postcat_output(output, ids)
    assert found == {ids[0]: "Subject: first\n", ids[1]: "Subject: second\n"}
    assert suspect == {ids[2]}  # re-read one at a time, never taken from the batch


def test_postcat_sections_out_of_order_are_re_read() -> None:
    ids = ["4QaaaAAA1", "4QbbbBBB2"]
    output = "\n".join(
        [
            _section("ENVELOPE RECORDS", ids[1]),
            _section("MESSAGE CONTENTS", ids[1]),
            "Subject: b",
            _section("ENVELOPE RECORDS", ids[0]),
            _section("MESSAGE CONTENTS", ids[0]),
            "Subject: a",
        ]
    )
    found, suspect = nodeops.parse_postcat_output(output, ids)
    assert ids[0] in suspect and ids[0] not in found
    assert found[ids[1]] == "Subject: b\n"
