"""The program the used-space collection runs on an IMAP node: constant Python text, its
parameters a JSON document on standard input (data, never code), run with the node's own
Python (standard library only). One command per node, whatever its number of mailboxes.

Input: ``{"root": mail root, "domains": [domain names] or null (every folder under root)}``.
Output: ``{"boxes": {"domain/local": [bytes, messages]}}``.

Per mailbox, the Maildir++ ``maildirsize`` file is used when it can be trusted: it parses,
it is small (the Maildir++ rule: over 5120 bytes it is due a recount), and it is newer than
every ``cur``/``new`` folder of the Maildir (so no delivery or deletion happened after it was
last written; a writer that does not keep it up to date loses this test at once). Otherwise
the folders are walked: a message's size is the ``,S=`` of its name when there is one, else
the file's size (through the link for a tiered message). Only reads: nothing on the node changes.
"""

from __future__ import annotations

PROGRAM = r"""
import json, os, re, sys

args = json.loads(sys.stdin.read())
root = args["root"]
SIZE = re.compile(r",S=(\d+)")


def folders(maildir):
    found = [maildir]
    try:
        with os.scandir(maildir) as entries:
            for entry in entries:
                if (entry.name.startswith(".") and entry.name not in (".", "..")
                        and entry.is_dir(follow_symlinks=False)):
                    found.append(entry.path)
    except OSError:
        pass
    return found


def walk(maildir):
    size = count = 0
    for folder in folders(maildir):
        for sub in ("cur", "new"):
            try:
                entries = os.scandir(os.path.join(folder, sub))
            except OSError:
                continue
            with entries:
                for entry in entries:
                    if entry.name.startswith("."):
                        continue
                    found = SIZE.search(entry.name)
                    if found:
                        size += int(found.group(1))
                    else:
                        try:
                            # A tiered message is a link to its copy on the tier
                            # (backup/tier_node.py): its size is the copy's.
                            size += entry.stat(follow_symlinks=entry.is_symlink()).st_size
                        except OSError:
                            continue  # expunged while we looked
                    count += 1
    return size, count


def from_maildirsize(maildir):
    path = os.path.join(maildir, "maildirsize")
    try:
        info = os.stat(path)
        if info.st_size > 5120:
            return None
        for folder in folders(maildir):
            for sub in ("cur", "new"):
                try:
                    if os.stat(os.path.join(folder, sub)).st_mtime_ns >= info.st_mtime_ns:
                        return None
                except FileNotFoundError:
                    continue
        with open(path) as handle:
            lines = handle.read().splitlines()[1:]
    except (OSError, UnicodeDecodeError):
        return None
    size = count = 0
    for line in lines:
        parts = line.split()
        if len(parts) != 2:
            return None
        try:
            size += int(parts[0])
            count += int(parts[1])
        except ValueError:
            return None
    if size < 0 or count < 0:
        return None
    return size, count


def domains():
    if args.get("domains") is not None:
        return args["domains"]
    try:
        return sorted(e.name for e in os.scandir(root) if e.is_dir(follow_symlinks=False))
    except OSError:
        return []


boxes = {}
for domain in domains():
    if "/" in domain or domain.startswith("."):
        continue
    base = os.path.join(root, domain)
    try:
        locals_ = [e.name for e in os.scandir(base) if e.is_dir(follow_symlinks=False)]
    except OSError:
        continue
    for local in locals_:
        maildir = os.path.join(base, local, "Maildir")
        if not os.path.isdir(os.path.join(maildir, "cur")) and not os.path.isdir(
                os.path.join(maildir, "new")):
            continue
        boxes[domain + "/" + local] = list(from_maildirsize(maildir) or walk(maildir))
print(json.dumps({"boxes": boxes}))
"""
