"""Operator node settings are checked by value, not only by type, before anything renders.

``postfix check`` let ``"relay_networks": ["10.9.0.0/99"]`` through (then every RCPT got
451) and a newline in ``postfix_maillog_file`` reached main.cf: these are refused here
with the key and the reason, at start-up (the system check) and by converge itself.
The node-level consequences (job error, live files untouched, mail flowing) are in
``test_faults.py``.
"""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from deploy import converge, desired, node_settings
from deploy.checks import check_node_settings
from deploy.services.base import DesiredState, NodeView
from deploy.services.postfix import SERVICE as POSTFIX
from deploy.services.postfix import safe

NODE = NodeView(1, "mx1.example.org", "10.0.0.5", ("smtp",), "debian", 1)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"relay_networks": ["10.9.0.0/99"]}, "relay_networks: '10.9.0.0/99' is not a network"),
        ({"relay_networks": ["10.9.0.1/16"]}, "has host bits set"),
        ({"relay_networks": ["10.9.0.0/16, 0.0.0.0/0"]}, "is not a network"),
        ({"relay_networks": [10]}, "every network must be text"),
        ({"postfix_maillog_file": "/var/log/mail\nmynetworks = 0/0"}, "control character"),
        ({"postfix_maillog_file": "/tmp/maillog"}, "not under an allowed prefix"),
        ({"postfix_maillog_file": "/var/log/../../etc/passwd"}, "'..' component"),
        ({"lda_log_file": "relative.log"}, "lda_log_file: 'relative.log' is not an absolute"),
        ({"mail_root": "/etc/postfix"}, "mail_root: '/etc/postfix' is not under an allowed"),
        ({"mail_uid": 0}, "mail_uid: 0 is outside"),
        ({"tls_min_version": "SSLv3"}, "tls_min_version: 'SSLv3' is not one of"),
        ({"tls_versions": []}, "at least one TLS version"),
        ({"mail_user": "vmail;rm"}, "not a plain user name"),
        ({"spam_subject_tag": "[SPAM]\r\nBcc: x"}, "spam_subject_tag: contains a control"),
        ({"web_backend_ports": {"webmail": 70000}}, "not a port number"),
        ({"web_hostnames": {"webmail": "mail example"}}, "is not a host name"),
        ({"mail_store_compression": "gzip-99"}, "is not a ZFS compression"),
        ({"greylist_delay": True}, "greylist_delay must be a number, got a boolean"),
        ({"mail_roots": "/srv"}, "unknown option 'mail_roots'"),
    ],
)
def test_bad_values_are_refused_naming_key_and_reason(options: dict, expected: str) -> None:
    found = node_settings.problems(options)
    assert len(found) == 1 and expected in found[0], found


def test_defaults_and_usual_values_pass() -> None:
    assert node_settings.problems(desired.DEFAULT_SETTINGS) == []
    assert (
        node_settings.problems(
            {
                "relay_networks": ["10.9.0.0/16", "2001:db8::/32", "192.0.2.7"],
                "postfix_maillog_file": "/var/log/mail.log",
                "lda_log_file": "/dev/stdout",
                "mail_root": "/srv/mail",
                "tls_versions": ["TLSv1.2", "TLSv1.3"],
                "spam_subject_tag": "[SPAM] ",
                "web_backend_ports": {"webmail": 8080},
                "mail_store_dedup": "auto",
            }
        )
        == []
    )


def test_every_reason_is_reported_at_once() -> None:
    found = node_settings.problems(
        {"relay_networks": ["x"], "postfix_maillog_file": "/tmp/x", "mail_gid": -1}
    )
    assert [p.split(":")[0].split()[0] for p in found] == [
        "relay_networks",
        "postfix_maillog_file",
        "mail_gid",
    ]


def test_the_startup_check_names_the_key_and_the_reason(settings) -> None:
    settings.UMS_CONVERGE = {"relay_networks": ["10.9.0.0/99"]}
    errors = check_node_settings()
    assert [e.id for e in errors] == ["deploy.E001"]
    assert "UMS_NODE_SETTINGS: relay_networks: '10.9.0.0/99' is not a network" in errors[0].msg
    with pytest.raises(SystemCheckError, match=r"10\.9\.0\.0/99"):
        call_command("check")


def test_converge_refuses_bad_settings_before_touching_the_node() -> None:
    """Refused before the first command: the connection is never used."""

    class Unreachable:
        def run(self, *args, **kwargs):  # pragma: no cover - must not be called
            raise AssertionError("converge used the node despite refused settings")

    state = DesiredState(node=NODE, settings={"relay_networks": ["10.9.0.0/99"]})
    with pytest.raises(converge.ConvergeError, match=r"relay_networks: '10\.9\.0\.0/99'"):
        converge.converge(Unreachable(), state)  # type: ignore[arg-type]


def test_rendered_main_cf_values_carry_no_control_characters() -> None:
    """The renderer's own last line of defence, for values that bypass the settings
    check (a state built by hand, a future parameter)."""
    state = DesiredState(node=NODE, settings={"postfix_maillog_file": "/var/log/m\nx = y"})
    with pytest.raises(safe.UnsafeName, match="control character"):
        POSTFIX.main_cf(state)
    state = DesiredState(node=NODE, settings={"relay_networks": ["10.9.0.0/99"]})
    with pytest.raises(safe.UnsafeName, match="refusing relay network"):
        POSTFIX.main_cf(state)
    with pytest.raises(converge.ConvergeError, match="postfix: cannot render"):
        converge.render(POSTFIX, state)
