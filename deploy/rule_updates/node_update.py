"""Runs ON the SMTP node (system python3, standard library only), sent by the controller
as ``python3 -c <this file> <json arguments>``; prints one JSON result line.

SpamAssassin channels: ``<mirror>/spamassassin/<channel>/latest`` holds the newest
version number (what sa-update would read from the channel's DNS TXT record, which a
private mirror does not have); ``<version>.tar.gz`` with ``.sha256``/``.sha512`` and the
detached signature ``.tar.gz.asc`` next to it is sa-update's own format. The channel's
public key (configured on the controller, ``keys``) is imported into sa-update's keyring
(``sa-update --import``, ``sa_gpghomedir``) and a newer version is installed with
``sa-update --gpgkey <fingerprint> --install``, which refuses an archive that is unsigned
or signed by any other key; a channel without a configured key is refused before
sa-update runs. It goes into a *copy* of the update directory, linted (sa-update's own lint, then
``spamassassin --lint`` with the site configuration and the copy), swapped in, and spamd
re-reads it (SIGHUP) and must answer a check; otherwise the previous directory and
include file are put back and spamd re-reads those. The update directory is our own, not
SpamAssassin's default one: that one, once it exists, replaces the packaged rules, so a
private channel alone would silently drop every stock rule. The channels are loaded
through ``ums_channels.cf`` in the site configuration directory (written here only).

ClamAV signatures: ``<mirror>/clamav/<file>`` (.ndb, .hdb, .hsb, .ldb, .fp, .ign2) with a
``.sha256`` next to it. A changed file must load on its own and must not flag a clean
sample (``clamscan -d``) before it replaces the live one; clamd then reloads and must
answer and scan; otherwise the previous file is put back and clamd reloads again.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

CLEAN_SAMPLE = b"From: probe@ums.invalid\r\nSubject: clean\r\n\r\nNothing to see here.\r\n"


def fetch(url, limit=64 * 1024 * 1024):
    # The controller allows http(s) mirror URLs only (deploy.rule_updates.mirror_url).
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310
        data = response.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"{url} is larger than {limit} bytes")
    return data


def checked(url):
    """The file at ``url`` after its ``.sha256`` matched (or ``.sha512``)."""
    data = fetch(url)
    for algo in ("sha256", "sha512"):
        try:
            want = fetch(url + "." + algo, 1024).decode().split()[0].lower()
        except Exception:  # noqa: S112 - absent: try the other checksum, else refuse below
            continue
        if hashlib.new(algo, data).hexdigest() != want:
            raise ValueError(f"{url} does not match its {algo}")
        return data, algo
    raise ValueError(f"{url} has no .sha256 or .sha512 next to it")


def run(argv, timeout=600):
    # Python 3.6 (RockyLinux 8's platform-python) has neither capture_output nor text.
    proc = subprocess.run(  # noqa: UP022
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        universal_newlines=True,  # noqa: UP021
        timeout=timeout,
        check=False,
    )
    return proc.returncode, (proc.stdout + proc.stderr)[-3000:]


def write_atomic(path, data):
    tmp = path + ".ums-tmp"
    with open(tmp, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


# ----------------------------------------------------------------------- SpamAssassin


def channel_file(updatedir, channel):
    return os.path.join(updatedir, re.sub(r"[^A-Za-z0-9-]", "_", channel) + ".cf")


def installed_version(updatedir, channel):
    try:
        with open(channel_file(updatedir, channel)) as handle:
            first = handle.readline()
    except OSError:
        return 0
    match = re.match(r"# UPDATE version (\d+)", first)
    return int(match.group(1)) if match else 0


def include_file(updatedir, channels):
    lines = ["# Written by the UMS rule updater: the installed update channels."]
    for channel in channels:
        path = channel_file(updatedir, channel)
        if os.path.exists(path):
            lines.append("include " + path)
    return ("\n".join(lines) + "\n").encode()


def spamd_pid(pidfile):
    try:
        with open(pidfile) as handle:
            pid = int(handle.read().strip())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def spamd_answers(port, wait):
    """spamd answers a CHECK with a score (children restart after SIGHUP)."""
    deadline = time.monotonic() + wait
    request = b"CHECK SPAMC/1.5\r\nContent-length: %d\r\n\r\n" % len(CLEAN_SAMPLE)
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(request + CLEAN_SAMPLE)
                sock.shutdown(socket.SHUT_WR)
                reply = b""
                while True:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            if b" EX_OK" in reply and b"Spam:" in reply:
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def reload_spamd(args):
    pid = spamd_pid(args["spamd_pidfile"])
    if pid is None:
        return True  # not running: it reads the new rules when it starts
    os.kill(pid, signal.SIGHUP)
    time.sleep(1)
    return spamd_answers(args["spamd_port"], args["wait"])


def import_key(work, gpghome, channel, key):
    """The channel's key into sa-update's keyring (importing twice changes nothing)."""
    path = os.path.join(work, re.sub(r"[^A-Za-z0-9-]", "_", channel) + ".key")
    with open(path, "w") as handle:
        handle.write(key)
    code, out = run(["sa-update", "--gpghomedir", gpghome, "--import", path])
    return code, ("" if code == 0 else "importing the channel key failed: " + out)


def update_spamassassin(args, mirror):
    channels = args["channels"]
    updatedir = args["sa_updatedir"]
    siteconfig = args["sa_siteconfig"]
    include = os.path.join(siteconfig, "ums_channels.cf")
    keys = args.get("keys") or {}
    gpghome = args["sa_gpghomedir"]
    result = {}
    work = tempfile.mkdtemp(prefix="ums-sa-")
    try:
        wanted = []
        for channel in channels:
            current = installed_version(updatedir, channel)
            entry = result[channel] = {"version": current}
            base = f"{mirror}/spamassassin/{channel}/"
            try:
                latest = int(fetch(base + "latest", 64).decode().strip())
                entry["available"] = latest
                if latest <= current:
                    entry["status"] = "current"
                    continue
                data, _algo = checked(f"{base}{latest}.tar.gz")
                path = os.path.join(work, f"{latest}.tar.gz")
                with open(path, "wb") as handle:
                    handle.write(data)
                if channel not in keys:
                    raise ValueError("no signing key is configured for this channel")
                try:
                    signature = fetch(f"{base}{latest}.tar.gz.asc", 64 * 1024)
                except Exception as exc:
                    raise ValueError(f"unsigned: no {latest}.tar.gz.asc on the mirror") from exc
                with open(path + ".asc", "wb") as handle:
                    handle.write(signature)
                for algo in ("sha256", "sha512"):
                    with open(path + "." + algo, "w") as handle:
                        handle.write(hashlib.new(algo, data).hexdigest() + "\n")
                wanted.append((channel, latest, path))
            except Exception as exc:
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        if not wanted:
            return result
        stage = updatedir.rstrip("/") + ".ums-stage"
        shutil.rmtree(stage, ignore_errors=True)
        if os.path.isdir(updatedir):
            shutil.copytree(updatedir, stage, symlinks=True)
        else:
            os.makedirs(stage)
        staged = []
        for channel, latest, path in wanted:
            code, out = import_key(work, gpghome, channel, keys[channel]["key"])
            if code == 0:
                trust = []
                for fingerprint in keys[channel]["fingerprints"]:
                    trust += ["--gpgkey", fingerprint]
                code, out = run(
                    [
                        "sa-update",
                        "--gpghomedir",
                        gpghome,
                        *trust,
                        "--channel",
                        channel,
                        "--install",
                        path,
                        "--updatedir",
                        stage,
                    ]
                )
            if code == 0:
                staged.append((channel, latest))
            else:
                result[channel].update(status="failed", error="sa-update refused it: " + out)
        if not staged:
            shutil.rmtree(stage, ignore_errors=True)
            return result
        # The whole configuration spamd would load: site files with the staged channels.
        site = os.path.join(work, "site")
        # Without sa-update's keyring: gpg-agent's sockets in it cannot be copied.
        shutil.copytree(
            siteconfig,
            site,
            symlinks=True,
            ignore=shutil.ignore_patterns(os.path.basename(gpghome)),
        )
        write_atomic(os.path.join(site, "ums_channels.cf"), include_file(stage, channels))
        code, out = run(["spamassassin", "--lint", "--siteconfigpath", site])
        if code != 0:
            shutil.rmtree(stage, ignore_errors=True)
            for channel, _latest in staged:
                result[channel].update(status="failed", error="lint failed: " + out)
            return result
        previous = updatedir.rstrip("/") + ".ums-prev"
        shutil.rmtree(previous, ignore_errors=True)
        try:
            with open(include, "rb") as handle:
                old_include = handle.read()
        except OSError:
            old_include = None
        if os.path.isdir(updatedir):
            os.rename(updatedir, previous)
        os.rename(stage, updatedir)
        write_atomic(include, include_file(updatedir, channels))
        if reload_spamd(args):
            shutil.rmtree(previous, ignore_errors=True)
            for channel, latest in staged:
                result[channel].update(status="updated", version=latest)
            return result
        # Rolled back: spamd did not answer with the new rules.
        shutil.rmtree(updatedir, ignore_errors=True)
        if os.path.isdir(previous):
            os.rename(previous, updatedir)
        if old_include is None:
            os.unlink(include)
        else:
            write_atomic(include, old_include)
        answers = reload_spamd(args)
        for channel, _latest in staged:
            result[channel].update(
                status="failed",
                error="spamd did not answer after the update; previous rules restored"
                + ("" if answers else " (and spamd does not answer with them either)"),
            )
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if keys and os.path.isdir(gpghome):
            # The agent gpg started for the import would otherwise outlive the run.
            # No gpgconf (OSError): nothing started an agent we could stop.
            with contextlib.suppress(OSError):
                run(["gpgconf", "--homedir", gpghome, "--kill", "gpg-agent"], timeout=60)


# ----------------------------------------------------------------------------- ClamAV


def clamd_command(command, port, data=None):
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        if data is None:
            sock.sendall(b"z" + command + b"\0")
        else:
            sock.sendall(b"zINSTREAM\0" + len(data).to_bytes(4, "big") + data + b"\0\0\0\0")
        reply = b""
        while not reply.endswith(b"\0"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply.rstrip(b"\0").decode(errors="replace")


def clamd_running(port):
    try:
        return clamd_command(b"PING", port) == "PONG"
    except OSError:
        return False


def reload_clamd(port, wait):
    """RELOAD, then clamd must answer PING and scan a clean sample as OK."""
    try:
        clamd_command(b"RELOAD", port)
    except OSError:
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            if (
                clamd_command(b"PING", port) == "PONG"
                and clamd_command(None, port, CLEAN_SAMPLE) == "stream: OK"
            ):
                return True
        except OSError:
            pass
        time.sleep(0.5)
    return False


def update_clamav(args, mirror):
    dbdir = args["clamav_dbdir"]
    result = {}
    changed = []
    work = tempfile.mkdtemp(prefix="ums-clam-")
    try:
        sample = os.path.join(work, "clean.eml")
        with open(sample, "wb") as handle:
            handle.write(CLEAN_SAMPLE)
        for name in args["signatures"]:
            live = os.path.join(dbdir, name)
            entry = result[name] = {}
            try:
                data, _algo = checked(f"{mirror}/clamav/{name}")
                digest = hashlib.sha256(data).hexdigest()
                entry["sha256"] = digest
                try:
                    with open(live, "rb") as handle:
                        if hashlib.sha256(handle.read()).hexdigest() == digest:
                            entry["status"] = "current"
                            continue
                except OSError:
                    pass
                alone = os.path.join(work, "db-" + name)
                os.makedirs(alone)
                with open(os.path.join(alone, name), "wb") as handle:
                    handle.write(data)
                code, out = run(["clamscan", "--no-summary", "-d", alone, sample])
                if code != 0:
                    why = "it flags a clean message" if code == 1 else "it does not load"
                    raise ValueError(f"{why}: {out.strip()}")
                changed.append((name, live, data))
            except Exception as exc:
                entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")
        if not changed:
            return result
        for _name, live, data in changed:
            if os.path.exists(live):
                shutil.copy2(live, live + ".ums-prev")
            write_atomic(live, data)
            os.chmod(live, 0o644)  # clamd reads it as its own user
        running = clamd_running(args["clamd_port"])
        if not running or reload_clamd(args["clamd_port"], args["wait"]):
            for name, live, _data in changed:
                result[name]["status"] = "updated"
                if os.path.exists(live + ".ums-prev"):
                    os.unlink(live + ".ums-prev")
            return result
        for name, live, _data in changed:
            if os.path.exists(live + ".ums-prev"):
                os.replace(live + ".ums-prev", live)
            else:
                os.unlink(live)
            result[name].update(
                status="failed",
                error="clamd did not answer after the reload; previous signatures restored",
            )
        reload_clamd(args["clamd_port"], args["wait"])
        return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    args = json.loads(sys.argv[1])
    mirror = args["mirror"].rstrip("/")
    out = {}
    if args.get("channels"):
        out["spamassassin"] = update_spamassassin(args, mirror)
    if args.get("signatures"):
        out["clamav"] = update_clamav(args, mirror)
    print(json.dumps(out))


main()
