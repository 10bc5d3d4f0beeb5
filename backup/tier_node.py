"""The program a tiering pass runs on the IMAP node: constant Python text, its parameters a
JSON document on standard input (data, never code; S3 credentials travel there, never in
an argument list), run with the node's own Python (standard library only).

Operations:

* ``mount``: make sure the tier is mounted (an ``s3fs`` FUSE mount of the S3 tier; a
  folder tier must already be a mounted NFS/CIFS/FUSE folder and is only checked);
* ``tier``: walk the domains' Maildirs; move every regular message file idle for
  ``idle_days`` to the tier and leave a symbolic link in its place; with ``recall``,
  bring back messages read since they were tiered; for at most ``budget`` seconds, then
  report how far it got (the controller calls again until ``finished``); the finishing
  call reports bytes and messages per domain on the store and on the tier;
* ``held`` / ``remove``: count or delete the tier copies of a mailbox or domain (for a
  permanent purge, :mod:`backup.tier_holder`).

Why it is safe to kill at any point and run again:

* the copy is written to ``<tier>/<domain>/<local>/<folder>/<unique>`` (an S3 tier: the
  flat key ``<domain>%<local>%<folder>%<unique>``; until a link points to it, a copy is a
  spare that a re-run rewrites); a batch of up to 200 copies is made
  durable with one
  ``syncfs`` of the tier (an ``fsync`` per file where syncfs is missing), each copy read
  back and compared (size and SHA-256) with what was read from the original; only then
  is a link made in the Maildir's ``tmp/`` and renamed over the message's name: one
  atomic step replaces the file by the link. Before
  that rename the message exists as the original (a tier copy is a spare, overwritten by
  the next run); after it, as the link to a verified copy. Never both, never neither;
* a recall copies back into ``tmp/``, fsyncs, verifies, renames over the link, and only
  then deletes the tier copy;
* an ``flock`` per node makes a second pass wait for the first.

A link that Courier renamed (a flag change) stays a link to the same copy; an expunge
deletes the link, and the tier copy stays (snapshots taken while the message was tiered
still point to it: see :mod:`backup.tiering`).
"""

from __future__ import annotations

PROGRAM = r"""
import fcntl, hashlib, json, os, re, shutil, subprocess, sys, time

args = json.loads(sys.stdin.read())
started = time.monotonic()
SUBS = ("cur", "new")
SAFE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=,:@-]*$")


def fail(message):
    print(json.dumps({"error": message}))
    sys.exit(3)


def safe_name(name):
    if not SAFE.match(name) or name in (".", ".."):
        fail("bad name %r" % name)
    return name


def is_mounted(point):
    try:
        with open("/proc/self/mounts") as handle:
            return any(line.split()[1] == point for line in handle if len(line.split()) > 1)
    except OSError:
        return os.path.ismount(point)


def do_mount():
    mount = args["mount"]
    point = mount["point"]
    if mount["kind"] == "folder":
        if not os.path.isdir(point):
            fail("the tier folder %s does not exist on the node" % point)
        return point
    if is_mounted(point):
        return point
    tool = shutil.which("s3fs")
    if tool is None:
        fail("s3fs is not installed on the node")
    os.makedirs(point, mode=0o700, exist_ok=True)
    secret = os.path.join(os.path.dirname(point), "." + os.path.basename(point) + ".passwd")
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(mount["access_key"] + ":" + mount["secret_key"] + "\n")
    bucket = mount["bucket"] + (":/" + mount["prefix"].strip("/") if mount.get("prefix") else "")
    options = [
        "url=" + mount["url"],
        "use_path_request_style",
        "passwd_file=" + secret,
        "allow_other",
        "uid=%d" % mount["uid"],
        "gid=%d" % mount["gid"],
        "umask=0077",
        "mp_umask=0077",
    ]
    try:
        result = subprocess.run(
            [tool, bucket, point, "-o", ",".join(options)], capture_output=True, text=True
        )
        if result.returncode != 0:
            fail("s3fs failed: %s" % (result.stderr or result.stdout).strip()[-500:])
        for _ in range(100):
            if is_mounted(point):
                break
            time.sleep(0.1)
        else:
            fail("s3fs did not mount %s" % point)
    finally:
        os.unlink(secret)  # read at start-up only: no secret stays on the node's disk
    return point


def folders(maildir):
    found = []
    if os.path.isdir(os.path.join(maildir, "cur")):
        found.append(("INBOX", maildir))
    try:
        names = sorted(os.listdir(maildir))
    except OSError:
        return found
    for name in names:
        path = os.path.join(maildir, name)
        if (name.startswith(".") and name not in (".", "..") and not name.startswith(".ums-")
                and not os.path.islink(path) and os.path.isdir(os.path.join(path, "cur"))):
            found.append((name, path))
    return found


def delivered(name):
    # Maildir unique names start with the delivery time in seconds.
    head = name.split(".", 1)[0]
    return int(head) if head.isdigit() and len(head) < 12 else 0


def sha(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some FUSE file systems refuse fsync on a folder: the file's fsync stands
    finally:
        os.close(fd)


def copy_kept(src, dst, synced):
    # Whole file to dst, times and mode kept (Courier's INTERNALDATE is mtime); the
    # SHA-256 of what was read. ``synced``: fsync here (else the batch's syncfs does).
    digest = hashlib.sha256()
    with open(src, "rb") as reader, open(dst, "wb") as writer:
        for block in iter(lambda: reader.read(1 << 20), b""):
            digest.update(block)
            writer.write(block)
        writer.flush()
        if synced:
            os.fsync(writer.fileno())
    st = os.stat(src)
    try:
        os.chmod(dst, st.st_mode & 0o777)
        os.chown(dst, st.st_uid, st.st_gid)
    except OSError:
        pass  # an s3fs tier maps every file to the mount's owner
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return digest.hexdigest()


def sync_tier(root):
    # One syncfs(2) of the tier's file system makes a whole batch of copies durable (one
    # journal commit instead of one per message); False where it is not available.
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(root, os.O_RDONLY)
        try:
            return libc.syncfs(fd) == 0
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        return False


class OutOfTime(Exception):
    pass


STATS = {"tiered": 0, "recalled": 0, "bytes": 0}
STATE = {}
MADE = set()
BATCH = 200


def out_of_time():
    return time.monotonic() - started > args["budget"]


def tick():
    if (STATS["tiered"] or STATS["recalled"]) and out_of_time():
        raise OutOfTime()


def make_dirs(tier_dir, st):
    # Courier reads through the link as the mailbox's user: every folder the pass makes
    # under the tier root belongs to the message's owner, mode 0700 (like the Maildir).
    missing = []
    path = tier_dir
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        try:
            os.chown(path, st.st_uid, st.st_gid)
        except OSError:
            pass  # an s3fs tier maps every file to the mount's owner


def tier_place(tier_root, domain, local, folder, unique):
    # (folder, file name) of a message's tier copy. The folder name comes from listdir
    # (no "/", never "." or ".."; Maildir++ names may hold spaces and "&"). A folder tier
    # mirrors the Maildirs; an S3 tier is flat, one key per message under the mount's
    # root ("%" is in no domain, local part or Maildir unique name): S3 has no folders,
    # and s3fs would store a marker object per folder and look each level up.
    local = safe_name(local)
    if args["mount"]["kind"] == "s3":
        return tier_root, "%".join((domain, local, folder, unique))
    return os.path.join(tier_root, domain, local, folder), unique


def copy_out(path, st, tier_dir, unique, synced):
    # Step 1 of tiering one message: the tier copy under its real name; its checksum.
    # Written under its final name: until a link points to it, a copy is only a spare
    # that the next run rewrites, so a temporary name would buy nothing (and cost a rename).
    if tier_dir not in MADE:
        make_dirs(tier_dir, st)  # nothing to make for an S3 tier (its root)
        MADE.add(tier_dir)
    final = os.path.join(tier_dir, unique)
    digest = copy_kept(path, final, synced)
    return final, digest


def link_in(path, st, final, digest):
    # Step 2, once the copy is durable: read it back, then the link replaces the file.
    if os.stat(final).st_size != st.st_size or sha(final) != digest:
        fail("the tier copy of %s does not read back the same" % path)
    folder, sub, name = path.rsplit("/", 2)
    unique = name.split(":", 1)[0]
    link = os.path.join(folder, "tmp", unique + ".ums-tier-link")
    if os.path.lexists(link):
        os.unlink(link)
    os.symlink(final, link)
    os.lchown(link, st.st_uid, st.st_gid)
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        now = None
    if now is None or now.st_ino != st.st_ino:
        os.unlink(link)  # Courier renamed or expunged it meanwhile: the next pass sees it
        return False
    os.rename(link, path)
    # The link's mtime marks when it was tiered: a later flag change (Courier renames the
    # link) moves only its ctime, which is how a recall tells a read message.
    try:
        os.utime(path, follow_symlinks=False)
    except OSError:
        pass
    STATS["tiered"] += 1
    STATS["bytes"] += st.st_size
    return True


def tier_batch(batch, tier_root, usage):
    # Copies first, one syncfs for all (fsync per file where syncfs is missing), then
    # every link: a message is replaced only by a link to a durable, verified copy.
    if "syncfs" not in STATE:
        STATE["syncfs"] = sync_tier(tier_root)  # once: nothing is dirty yet, cheap
    synced = not STATE["syncfs"]
    copies = []
    for domain, path, st, tier_dir, unique in batch:
        try:
            copies.append((domain, path, st) + copy_out(path, st, tier_dir, unique, synced))
        except FileNotFoundError:
            continue  # expunged or renamed since the walk
    if not synced and not sync_tier(tier_root):
        fail("cannot make the tier copies durable")
    for domain, path, st, final, digest in copies:
        if link_in(path, st, final, digest):
            row = usage[domain]
            row["primary_bytes"] -= st.st_size
            row["primary_messages"] -= 1
            row["tier_bytes"] += st.st_size
            row["tier_messages"] += 1


def recall_one(path, target):
    tick()
    folder, sub, name = path.rsplit("/", 2)
    unique = name.split(":", 1)[0]
    temp = os.path.join(folder, "tmp", unique + ".ums-recall")
    link = os.lstat(path)
    copy_kept(target, temp, True)
    os.chown(temp, link.st_uid, link.st_gid)
    os.chmod(temp, 0o600)
    if os.stat(temp).st_size != os.stat(target).st_size or sha(temp) != sha(target):
        os.unlink(temp)
        fail("the recalled copy of %s does not read back the same" % path)
    if os.lstat(path).st_ino != link.st_ino:
        os.unlink(temp)
        return False
    os.rename(temp, path)
    fsync_dir(os.path.dirname(path))
    os.unlink(target)
    STATS["recalled"] += 1
    return True


def walk(tier_root):
    # Every message of the domains: (domain, local, folder, path, lstat, unique).
    root = args["root"]
    for domain in args["domains"]:
        base = os.path.join(root, safe_name(domain))
        try:
            locals_ = sorted(e.name for e in os.scandir(base)
                             if e.is_dir(follow_symlinks=False) and not e.name.startswith("."))
        except OSError:
            continue
        for local in locals_:
            maildir = os.path.join(base, local, "Maildir")
            for folder, path in folders(maildir):
                for sub in SUBS:
                    try:
                        entries = list(os.scandir(os.path.join(path, sub)))
                    except OSError:
                        continue
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # expunged while we looked
                        yield domain, local, folder, entry.path, st, entry.name.split(":", 1)[0]


def tier_target(path, tier_root):
    # The tier copy a link points to, or None for anything else.
    target = os.readlink(path)
    if os.path.isabs(target) and target.startswith(tier_root + "/") and "/../" not in target:
        return target
    return None


def do_tier():
    tier_root = do_mount().rstrip("/")
    lock = open(os.path.join(args["lock_dir"], "ums-tier.lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    cutoff = args["now"] - args["idle_days"] * 86400
    recall = bool(args.get("recall"))
    usage = {d: {"primary_bytes": 0, "primary_messages": 0, "tier_bytes": 0, "tier_messages": 0}
             for d in args["domains"]}
    todo, back = [], []
    for domain, local, folder, path, st, unique in walk(tier_root):
        row = usage[domain]
        if os.path.islink(path) or (st.st_mode & 0o170000) == 0o120000:
            target = tier_target(path, tier_root)
            if target is None:
                continue
            try:
                size = os.stat(target).st_size
            except OSError:
                continue
            row["tier_bytes"] += size
            row["tier_messages"] += 1
            if recall and st.st_ctime > st.st_mtime + 2:
                back.append((domain, path, target, size))
            continue
        if (st.st_mode & 0o170000) != 0o100000:
            continue
        row["primary_bytes"] += st.st_size
        row["primary_messages"] += 1
        # Last activity: delivery (the name), the newest of mtime (delivery or APPEND's
        # INTERNALDATE) and ctime (every flag change renames the file); atime is not used.
        last = max(st.st_mtime, st.st_ctime, delivered(unique))
        if last <= cutoff:
            todo.append((domain, path, st) + tier_place(tier_root, domain, local, folder, unique))
    total = len(todo) + len(back)
    try:
        for first in range(0, len(todo), BATCH):
            if first and out_of_time():
                raise OutOfTime()
            tier_batch(todo[first:first + BATCH], tier_root, usage)
        for domain, path, target, size in back:
            if recall_one(path, target):
                usage[domain]["primary_bytes"] += size
                usage[domain]["primary_messages"] += 1
                usage[domain]["tier_bytes"] -= size
                usage[domain]["tier_messages"] -= 1
    except OutOfTime:
        done = STATS["tiered"] + STATS["recalled"]
        print(json.dumps(dict(STATS, finished=False, remaining=total - done, done=done)))
        return
    print(json.dumps(dict(STATS, finished=True, remaining=0, done=total, usage=usage)))


def held(tier_root):
    # The tier copies of one mailbox (``local``) or a whole domain: [path, ...]. Copies
    # whose links were expunged are here too: that is what a permanent purge must find.
    domain = safe_name(args["domain"])
    local = safe_name(args["local"]) if args.get("local") else None
    found = []
    if args["mount"]["kind"] == "s3":
        prefix = domain + "%" + (local + "%" if local else "")
        with os.scandir(tier_root) as entries:
            for entry in entries:
                if entry.name.startswith(prefix) and entry.is_file(follow_symlinks=False):
                    found.append(entry.path)
        return found
    top = os.path.join(tier_root, domain, local) if local else os.path.join(tier_root, domain)
    for base, _dirs, files in os.walk(top):
        found.extend(os.path.join(base, name) for name in files)
    return found


def do_held():
    paths = held(do_mount().rstrip("/"))
    size = 0
    for path in paths:
        try:
            size += os.stat(path).st_size
        except OSError:
            pass
    print(json.dumps({"copies": len(paths), "bytes": size}))


def do_remove():
    # Permanent purge: every tier copy of the mailbox (or domain) goes; idempotent.
    tier_root = do_mount().rstrip("/")
    paths = held(tier_root)
    for path in paths:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    if args["mount"]["kind"] != "s3":
        domain = os.path.join(tier_root, safe_name(args["domain"]))
        top = os.path.join(domain, safe_name(args["local"])) if args.get("local") else domain
        shutil.rmtree(top, ignore_errors=True)
    print(json.dumps({"removed": len(paths)}))


OPERATIONS = {
    "mount": lambda: print(json.dumps({"point": do_mount()})),
    "tier": do_tier,
    "held": do_held,
    "remove": do_remove,
}
if args.get("op") not in OPERATIONS:
    fail("unknown operation")
try:
    OPERATIONS[args["op"]]()
except OSError as exc:
    fail("%s: %s" % (exc.strerror or exc, exc.filename or ""))
"""
