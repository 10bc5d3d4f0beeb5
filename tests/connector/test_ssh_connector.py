"""SSHConnector against real sshd test nodes (tests.harness): no mocks of paramiko/sshd."""

import hashlib
import os
import posixpath
import subprocess
import threading
import time
import uuid

import pytest

from deploy.connector import (
    AuthenticationFailed,
    CommandTimeout,
    HostKeyMismatch,
    InvalidCommand,
    PermanentConnectorError,
    TransientConnectorError,
    UnknownHostKey,
    fetch_host_key,
)
from deploy.connector.keys import fingerprint_sha256, generate_private_key

pytestmark = pytest.mark.nodes


@pytest.fixture
def node(ssh_cluster):
    return ssh_cluster.nodes[0]


@pytest.fixture
def conn(ssh_connect, node):
    return ssh_connect(node)


def _stat(node, path):
    """(mode, owner, group, inode) of a file as the node sees it."""
    out = node.exec_in_node(["stat", "-c", "%a %U %G %i", path]).stdout.split()
    return int(out[0], 8), out[1], out[2], int(out[3])


# --------------------------------------------------------------------------- run


def test_run_returns_stdout_stderr_and_exit_code(conn, node):
    result = conn.run(["sh", "-c", "hostname; echo oops >&2; exit 3"])
    assert result.exit_code == 3
    assert not result.ok
    assert result.stdout == f"{node.hostname}\n"
    assert result.stderr == "oops\n"
    assert result.argv == ["sh", "-c", "hostname; echo oops >&2; exit 3"]


def test_each_node_is_its_own_machine(ssh_cluster, ssh_connect):
    first, second = ssh_cluster.nodes[:2]
    with ssh_connect(first) as a, ssh_connect(second) as b:
        assert a.run(["hostname"]).stdout.strip() == first.hostname
        assert b.run(["hostname"]).stdout.strip() == second.hostname
        name = f"isolation-{uuid.uuid4().hex}.cf"
        a.put_file(f"/etc/postfix/{name}", b"first only\n")
        assert b.get_file(f"/etc/postfix/{name}") is None
        assert first.path(f"/etc/postfix/{name}").read_bytes() == b"first only\n"
        assert not os.path.exists(f"/etc/postfix/{name}")


HOSTILE_ARGS = [
    "$(id)",
    "`id`",
    "; touch {marker}",
    "&& touch {marker}",
    "| touch {marker}",
    "$(touch {marker})",
    "'; touch {marker}; '",
    '"; touch {marker}; "',
    "line one\nline two\ntouch {marker}",
    "$HOME ${PATH} $$ $?",
    "*",
    "~root",
    "back\\slash",
    "-n",
    "",
    "  spaced  ",
    "grüße ✓",
]


@pytest.mark.parametrize("template", HOSTILE_ARGS)
def test_shell_metacharacters_arrive_literally(conn, template, tmp_path):
    # /tmp is shared between host and nodes, so the host can see a planted file.
    marker = f"/tmp/ums-pwned-{uuid.uuid4().hex}"
    arg = template.replace("{marker}", marker)
    result = conn.run(["printf", "%s", arg])
    assert result.exit_code == 0
    assert result.stdout == arg
    assert not os.path.exists(marker)


def test_many_arguments_keep_their_boundaries(conn):
    args = [a.replace("{marker}", "/tmp/x") for a in HOSTILE_ARGS]
    result = conn.run(["printf", "<%s>", *args])
    assert result.stdout == "".join(f"<{a}>" for a in args)


@pytest.mark.parametrize(
    "argv",
    ["echo hi", ("echo", "hi"), ["echo", 1], ["echo", b"hi"], ["echo", "a\0b"], []],
    ids=["string", "tuple", "int", "bytes", "nul", "empty"],
)
def test_malformed_argv_is_refused_before_connecting(ssh_connect, node, argv):
    conn = ssh_connect(node)
    with pytest.raises(InvalidCommand) as excinfo:
        conn.run(argv)
    assert isinstance(excinfo.value, PermanentConnectorError)
    assert conn.connections_opened == 0


def test_input_is_fed_to_stdin(conn):
    assert conn.run(["cat"], input=b"hello\nworld\n").stdout == "hello\nworld\n"


def test_large_input_and_output_do_not_deadlock(conn):
    # cat echoes 4 MiB back while we are still sending: both directions must flow.
    data = os.urandom(2 * 1024 * 1024).hex().encode()
    result = conn.run(["sh", "-c", "tee /dev/stderr | sha256sum"], input=data, timeout=60)
    assert result.exit_code == 0
    assert result.stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert result.stderr.encode() == data


def test_command_without_input_sees_end_of_file(conn):
    # If stdin stayed open this would hang until the timeout.
    assert conn.run(["cat"], timeout=20).stdout == ""


def test_concurrent_short_commands_never_lose_the_shared_connection(conn):
    # Converge checks run on several channels of one connection at once. Commands that
    # exit at once used to race paramiko's stdin EOF against the CLOSE answer, and OpenSSH
    # drops the whole connection on an EOF for a freed channel.
    from concurrent.futures import ThreadPoolExecutor

    def burst(_):
        return [conn.run(["true"]).exit_code for _ in range(150)]

    conn.connect()  # connecting is not thread-safe; converge connects before it fans out
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = [code for chunk in pool.map(burst, range(8)) for code in chunk]
    assert codes == [0] * 1200
    assert conn.connections_opened == 1


def test_command_that_exits_without_reading_its_input_is_fine(conn):
    for _ in range(20):
        assert conn.run(["true"], input=b"x" * 100_000).exit_code == 0
    assert conn.run(["cat"], input=b"").stdout == ""
    assert conn.connections_opened == 1


def test_connection_is_reused_across_commands_and_files(conn):
    seen = {conn.run(["printenv", "SSH_CONNECTION"]).stdout for _ in range(5)}
    conn.put_file("/tmp/ums-reuse-probe", b"x")
    conn.get_file("/tmp/ums-reuse-probe")
    conn.run(["rm", "-f", "/tmp/ums-reuse-probe"])
    seen.add(conn.run(["printenv", "SSH_CONNECTION"]).stdout)
    # Same client port every time: one TCP connection.
    assert len(seen) == 1
    assert conn.connections_opened == 1


def test_command_timeout_kills_the_remote_command(conn):
    marker = f"{time.time_ns() % 1000000}.25"  # unique sleep argument to find it by
    with pytest.raises(CommandTimeout) as excinfo:
        conn.run(["sleep", marker], timeout=1)
    assert excinfo.value.timeout == 1
    assert isinstance(excinfo.value, TransientConnectorError)
    pattern = f"^sleep {marker}$"
    for _ in range(200):
        if subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 1:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the timed-out command is still running on the node")
    # The connection survives a killed command.
    assert conn.run(["true"]).exit_code == 0
    assert conn.connections_opened == 1


# --------------------------------------------------------------------------- files


def test_put_file_creates_with_mode_and_get_file_reads_back(conn, node):
    path = f"/etc/postfix/put-{uuid.uuid4().hex}.cf"
    data = b"myhostname = node\n\x00binary\xff"
    conn.put_file(path, data, mode=0o640)
    assert conn.get_file(path) == data
    assert node.path(path).read_bytes() == data
    assert _stat(node, path)[0] == 0o640


def test_put_file_without_mode_keeps_existing_mode_and_owner(conn, node):
    path = f"/etc/postfix/keep-{uuid.uuid4().hex}.cf"
    conn.put_file(path, b"v1\n", mode=0o600, owner="nobody", group="nogroup")
    assert _stat(node, path)[:3] == (0o600, "nobody", "nogroup")
    conn.put_file(path, b"v2\n")
    mode, owner, group, _ = _stat(node, path)
    assert (mode, owner, group) == (0o600, "nobody", "nogroup")
    assert conn.get_file(path) == b"v2\n"


def test_new_file_without_mode_gets_0644(conn, node):
    path = f"/etc/postfix/default-{uuid.uuid4().hex}.cf"
    conn.put_file(path, b"x")
    assert _stat(node, path)[:3] == (0o644, "root", "root")


def test_put_file_replaces_by_rename_and_leaves_no_temp_files(conn, node):
    directory = f"/etc/postfix/atomic-{uuid.uuid4().hex}"
    node.exec_in_node(["mkdir", directory])
    path = f"{directory}/main.cf"
    conn.put_file(path, b"old\n")
    inode_before = _stat(node, path)[3]
    conn.put_file(path, b"new\n")
    # A new inode: the file was swapped, not rewritten in place.
    assert _stat(node, path)[3] != inode_before
    assert node.exec_in_node(["ls", "-A", directory]).stdout.split() == ["main.cf"]


def test_readers_never_see_a_partial_file(ssh_connect, node):
    """A reader looping on the node only ever sees one of the complete versions."""
    directory = f"/etc/postfix/readers-{uuid.uuid4().hex}"
    node.exec_in_node(["mkdir", directory])
    path, stop = f"{directory}/big.map", f"{directory}/stop"
    versions = [os.urandom(512 * 1024), os.urandom(512 * 1024)]
    digests = {hashlib.sha256(v).hexdigest() for v in versions}
    writer, reader = ssh_connect(node), ssh_connect(node)
    writer.put_file(path, versions[0])
    outputs = {}

    def read_loop():
        outputs["result"] = reader.run(
            ["sh", "-c", 'while [ ! -e "$2" ]; do sha256sum "$1"; done', "sh", path, stop],
            timeout=120,
        )

    thread = threading.Thread(target=read_loop)
    thread.start()
    try:
        for i in range(30):
            writer.put_file(path, versions[i % 2])
    finally:
        writer.put_file(stop, b"")
        thread.join(130)
    result = outputs["result"]
    seen = {line.split()[0] for line in result.stdout.splitlines()}
    assert seen, "the reader loop read nothing"
    assert seen <= digests
    assert result.stderr == ""


def test_get_file_of_missing_file_is_none(conn):
    assert conn.get_file(f"/etc/postfix/missing-{uuid.uuid4().hex}") is None


def test_file_sha256_matches_and_is_none_when_missing(conn):
    path = f"/tmp/ums-sha-{uuid.uuid4().hex}"
    data = os.urandom(100_000)
    conn.put_file(path, data)
    try:
        assert conn.file_sha256(path) == hashlib.sha256(data).hexdigest()
    finally:
        conn.run(["rm", "-f", path])
    assert conn.file_sha256(path) is None


def test_put_file_into_missing_directory_fails_cleanly(conn, node):
    directory = f"/etc/postfix/no-such-dir-{uuid.uuid4().hex}"
    with pytest.raises(PermanentConnectorError):
        conn.put_file(f"{directory}/x.cf", b"x")
    assert conn.get_file(f"{directory}/x.cf") is None


def test_put_file_cleans_up_temp_file_when_chown_fails(conn, node):
    directory = f"/etc/postfix/chown-{uuid.uuid4().hex}"
    node.exec_in_node(["mkdir", directory])
    with pytest.raises(Exception):  # noqa: B017 - CommandFailed from chown
        conn.put_file(f"{directory}/x.cf", b"x", owner="no-such-user-ums")
    assert node.exec_in_node(["ls", "-A", directory]).stdout == ""


def test_relative_remote_path_is_refused(conn):
    with pytest.raises(InvalidCommand):
        conn.put_file("etc/postfix/main.cf", b"x")


# --------------------------------------------------------------------------- trust


def test_fetch_host_key_returns_the_nodes_key(node):
    presented = fetch_host_key(node.address, node.port, timeout=5)
    assert presented == node.host_key
    assert fingerprint_sha256(presented) == fingerprint_sha256(node.host_key)


def test_pinned_key_mismatch_is_refused_and_nothing_runs(ssh_cluster, ssh_connect):
    node, other = ssh_cluster.nodes[0], ssh_cluster.nodes[1]
    marker = f"/tmp/ums-mismatch-{uuid.uuid4().hex}"
    conn = ssh_connect(node, known_host_keys=other.known_host_keys, retries=2)
    with pytest.raises(HostKeyMismatch) as excinfo:
        conn.run(["touch", marker])
    assert excinfo.value.presented == fingerprint_sha256(node.host_key)
    assert excinfo.value.expected == [fingerprint_sha256(other.host_key)]
    assert excinfo.value.presented_key == node.host_key
    assert not os.path.exists(marker)
    assert conn.connections_opened == 0


def test_regenerated_host_key_is_refused(ssh_nodes, ssh_connect):
    node = ssh_nodes(1).nodes[0]
    old_key = node.host_key
    conn = ssh_connect(node)
    assert conn.run(["true"]).ok
    conn.close()
    new_key = node.regenerate_host_key()
    assert new_key != old_key
    with pytest.raises(HostKeyMismatch):
        conn.run(["true"])
    assert ssh_connect(node, known_host_keys=[new_key]).run(["true"]).ok


def test_unknown_host_key_is_refused(node, ssh_connect):
    conn = ssh_connect(node, known_host_keys=[])
    with pytest.raises(UnknownHostKey) as excinfo:
        conn.run(["true"])
    assert excinfo.value.presented == fingerprint_sha256(node.host_key)
    assert conn.connections_opened == 0


def test_first_contact_mode_accepts_and_reports_the_key(node, ssh_connect):
    conn = ssh_connect(node, known_host_keys=[], accept_any_host_key_and_report=True)
    assert conn.run(["hostname"]).stdout.strip() == node.hostname
    assert conn.presented_host_keys == [node.host_key]


def test_pinned_key_of_another_type_still_matches(node, ssh_connect):
    # A pin list with an unrelated key first must not stop the right key from matching.
    decoy = generate_private_key()
    pins = [f"{decoy.get_name()} {decoy.get_base64()}", node.host_key]
    assert ssh_connect(node, known_host_keys=pins).run(["true"]).ok


def test_wrong_controller_key_is_a_permanent_auth_failure(node, ssh_connect):
    conn = ssh_connect(node, pkey=generate_private_key(), retries=3, backoff=5)
    with pytest.raises(AuthenticationFailed):
        conn.connect()


# --------------------------------------------------------------------------- outages


def test_stopped_node_is_transient_after_retries_and_recovers(ssh_nodes, ssh_connect):
    node = ssh_nodes(1).nodes[0]
    conn = ssh_connect(node, retries=2, backoff=0.01)
    assert conn.run(["true"]).ok
    node.stop()
    with pytest.raises(TransientConnectorError) as excinfo:
        conn.run(["true"])
    assert excinfo.value.attempts == 3
    node.start()
    assert conn.run(["true"]).ok
    assert conn.connections_opened == 2


def test_unreachable_port_is_transient(node, ssh_connect):
    # Nothing listens on port 1 of the node.
    conn = ssh_connect(node, retries=1, backoff=0.01)
    conn.port = 1
    with pytest.raises(TransientConnectorError) as excinfo:
        conn.connect()
    assert excinfo.value.attempts == 2


def test_connection_lost_mid_command_is_transient_and_not_rerun(ssh_nodes, ssh_connect):
    node = ssh_nodes(1).nodes[0]
    conn = ssh_connect(node, retries=0)
    counter = "/root/ums-run-count"
    conn.run(["true"])
    errors = []

    def run_long():
        try:
            conn.run(["sh", "-c", f"echo run >> {counter}; sleep 30"], timeout=60)
        except Exception as exc:
            errors.append(exc)

    thread = threading.Thread(target=run_long)
    thread.start()
    for _ in range(200):
        if node.path(counter).exists():
            break
        time.sleep(0.05)
    node.stop()
    thread.join(30)
    assert len(errors) == 1
    assert isinstance(errors[0], TransientConnectorError)
    assert node.path(counter).read_text() == "run\n"


def test_sftp_paths_are_plain_strings_not_shell(conn):
    # put_file never goes through a shell: a name full of metacharacters is just a name.
    name = "/tmp/ums-$(id);touch x" + uuid.uuid4().hex
    conn.put_file(name, b"odd")
    try:
        assert conn.get_file(name) == b"odd"
        assert posixpath.basename(name) in conn.run(["ls", "/tmp"]).stdout
    finally:
        conn.run(["rm", "-f", "--", name])
