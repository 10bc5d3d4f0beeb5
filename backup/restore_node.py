"""The program a restore runs on the IMAP node: constant Python text, its parameters a
JSON document on standard input (data, never code), run with the node's own Python (the
one the content filter and the probes use: standard library only).

Two operations:

* ``list``: the Maildir++ folders of each mailbox in the snapshot (with message counts)
  and the folder names each live Maildir has now, in one command for a whole domain;
* ``restore``: for one mailbox, bring the chosen folders of the snapshot back, for at
  most ``budget`` seconds, then print how far it got. The controller calls it again
  until it says ``finished``, so the job's progress bar moves and each call is one
  command, whatever the number of messages.

Why it is safe to run again at any point (a killed worker, an SSH session cut, a
resumed job racing an orphaned earlier run):

* an exclusive ``flock`` per (mailbox, job) makes a second run wait for the first;
* a message file is written under a temporary name and renamed to its Maildir name, so
  a half-written file never carries a real name; a message whose Maildir unique name
  (the part before ``:``) is already there is skipped, so nothing is ever copied twice;
* a new folder is built whole in a staging folder beside the Maildir (same file system)
  and renamed into the Maildir in one step: Courier never sees half a folder;
* nothing that exists in the live Maildir is deleted or overwritten, except, in place,
  the flags of a message present in both (the file is renamed to the snapshot's flags).

Tiered messages (:mod:`.tiering`): a link in the snapshot that points into the node's
tier (``tier_roots``) is restored as a plain file with the tier copy's bytes; a live
message that is such a link counts as present.

Courier: new folders get a fresh UID list (``courierimapuiddb`` is not copied), and
are subscribed in ``courierimapsubscribed``; files reach ``cur/``/``new/`` only by
rename, as a delivery agent does; ``maildirsize`` is rewritten with ``maildirmake -q``
(the quota the controller has for the mailbox) so the usage is recounted at once.
"""

from __future__ import annotations

PROGRAM = r"""
import fcntl, json, os, shutil, subprocess, sys, time

args = json.loads(sys.stdin.read())
started = time.monotonic()
SUBS = ("cur", "new")


def fail(message):
    print(json.dumps({"error": message}))
    sys.exit(3)


def inside(path, root):
    # ``path`` must lie strictly inside ``root`` with no symbolic link on the way (the
    # root itself may be one: /var/mail is a link to /var/spool/mail on RockyLinux).
    rel = os.path.relpath(path, root)
    real = os.path.realpath(path)
    if rel.startswith("..") or rel == "." or real != os.path.join(os.path.realpath(root), rel):
        fail("refusing %s: not a plain path inside %s" % (path, root))
    return real


def folders(maildir):
    # Maildir++: the Maildir itself ("" = INBOX) and every .Name directory holding cur/.
    found = []
    if os.path.isdir(os.path.join(maildir, "cur")):
        found.append("")
    try:
        names = sorted(os.listdir(maildir))
    except FileNotFoundError:
        return found
    for name in names:
        path = os.path.join(maildir, name)
        if (name.startswith(".") and name not in (".", "..") and not os.path.islink(path)
                and os.path.isdir(os.path.join(path, "cur"))):
            found.append(name)
    return found


TIER_ROOTS = [r.rstrip("/") + "/" for r in args.get("tier_roots") or () if r.startswith("/")]


def tiered(path):
    # A link the tiering pass left (backup/tier_node.py): absolute, into the node's tier,
    # to a regular file there. Any other link is ignored.
    try:
        target = os.readlink(path)
    except OSError:
        return False
    if not os.path.isabs(target) or "/../" in target or "/./" in target:
        return False
    if not any(target.startswith(root) for root in TIER_ROOTS):
        return False
    return os.path.isfile(target)


def messages(folder):
    # {unique name: (sub, file name)}; the unique name is the file name before ":". Only
    # regular files and links into the tier: any other link in a snapshot must never pull
    # another file into a mailbox. A tiered message is copied back from its tier copy.
    found = {}
    for sub in SUBS:
        path = os.path.join(folder, sub)
        if os.path.islink(path) or not os.path.isdir(path):
            continue
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_file(follow_symlinks=False) or (
                    entry.is_symlink() and tiered(entry.path)
                ):
                    found[entry.name.split(":", 1)[0]] = (sub, entry.name)
    return found


def path_of(maildir, name):
    return os.path.join(maildir, name) if name else maildir


def do_list():
    result = {}
    for box in args["mailboxes"]:
        source, live = box["source"], box["maildir"]
        counts = {}
        if os.path.isdir(source):
            for name in folders(source):
                counts[name] = len(messages(path_of(source, name)))
        result[box["key"]] = {"source": counts, "live": folders(live)}
    print(json.dumps(result))


def owner_of(path):
    st = os.stat(path)
    return st.st_uid, st.st_gid


def make_folder(path, owner, subfolder):
    os.makedirs(path, exist_ok=True)
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
        os.chown(os.path.join(path, sub), *owner)
        os.chmod(os.path.join(path, sub), 0o700)
    if subfolder:
        marker = os.path.join(path, "maildirfolder")
        open(marker, "a").close()
        os.chown(marker, *owner)
    os.chown(path, *owner)
    os.chmod(path, 0o700)


class OutOfTime(Exception):
    pass


STATS = {"copied": 0, "flags": 0}


def tick():
    # At least one message per call, however small the budget: every call makes progress.
    if STATS["copied"] and time.monotonic() - started > args["budget"]:
        raise OutOfTime()


def copy_in(src_file, folder, sub, name):
    # Under a temporary name in tmp/, then renamed: the real name only ever holds a whole file.
    temp = os.path.join(folder, "tmp", name.split(":", 1)[0] + ".ums-restore")
    shutil.copy2(src_file, temp)  # follows a tier link: the bytes, not the link
    if os.path.islink(src_file):
        st = os.lstat(src_file)  # the link keeps the message's owner, the copy may not
        os.chmod(temp, 0o600)
    else:
        st = os.stat(src_file)
    os.chown(temp, st.st_uid, st.st_gid)
    os.rename(temp, os.path.join(folder, sub, name))


def fill(src, dst, flags):
    # Copy the messages of src that dst lacks (by unique name); with flags, give messages
    # present in both the snapshot's flags. Counts go to STATS.
    if src is None:
        return
    have = messages(dst)
    for unique, (sub, name) in sorted(messages(src).items()):
        current = have.get(unique)
        if current is None:
            tick()
            copy_in(os.path.join(src, sub, name), dst, sub, name)
            STATS["copied"] += 1
        elif flags and sub == "cur" and current != (sub, name):
            os.rename(os.path.join(dst, current[0], current[1]), os.path.join(dst, sub, name))
            STATS["flags"] += 1
    keywords = os.path.join(src, "courierimapkeywords")
    target = os.path.join(dst, "courierimapkeywords")
    if flags or os.path.islink(keywords) or not os.path.isdir(keywords):
        return
    # IMAP keywords of the messages (Courier's own files): regular files only.
    owner = owner_of(os.path.join(dst, "cur"))
    os.makedirs(target, exist_ok=True)
    os.chown(target, *owner)
    with os.scandir(keywords) as entries:
        for entry in entries:
            if entry.is_file(follow_symlinks=False):
                shutil.copy2(entry.path, os.path.join(target, entry.name))
                os.chown(os.path.join(target, entry.name), *owner)


def publish(staged, live):
    # A whole staged folder becomes visible in one rename; if the name exists by now
    # (a re-run after the rename, or a folder created meanwhile) its files move in instead.
    if not os.path.exists(live):
        os.rename(staged, live)
        return
    have = messages(live)
    for unique, (sub, name) in messages(staged).items():
        if unique not in have:
            os.rename(os.path.join(staged, sub, name), os.path.join(live, sub, name))
    shutil.rmtree(staged)


def subscribe(maildir, names, owner):
    path = os.path.join(maildir, "courierimapsubscribed")
    try:
        with open(path) as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        lines = []
    wanted = [("INBOX" + n) for n in names if ("INBOX" + n) not in lines]
    if not wanted:
        return
    temp = path + ".ums-restore"
    with open(temp, "w") as handle:
        handle.write("".join(line + "\n" for line in lines + wanted))
    os.chown(temp, *owner)
    os.chmod(temp, 0o644)
    os.rename(temp, path)


def recount_quota(maildir, quota, owner):
    # Courier-IMAP takes the quota from maildirsize's first line and trusts the usage in
    # it: files added behind its back must be recounted, as the policy script does.
    path = os.path.join(maildir, "maildirsize")
    if quota is None:
        return
    if os.path.lexists(path):
        os.unlink(path)
    if quota <= 0:
        return
    tool = shutil.which("maildirmake.courier") or shutil.which("maildirmake")
    if tool is None:
        fail("maildirmake (Courier) not found: cannot recount the quota")
    subprocess.run([tool, "-q", "%dS" % quota, maildir], check=True)
    os.chown(path, *owner)


def do_restore():
    root = args["root"]
    maildir = inside(args["maildir"], root)
    stage = inside(args["stage"], root)
    source = inside(args["source"], args["source_root"])
    if os.path.dirname(stage) != os.path.dirname(maildir):
        fail("the staging folder must sit beside the Maildir")
    if not os.path.isdir(os.path.join(maildir, "cur")):
        fail("the mailbox has no Maildir on this node")
    lock = open(stage + ".lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)  # an orphaned earlier run finishes first
    owner = owner_of(os.path.join(maildir, "cur"))
    in_place = args["mode"] == "in_place"
    plan = args["folders"]  # [[snapshot folder or None (empty), live folder], ...]
    for src_name, dst_name in plan:
        for name in (src_name or "", dst_name):
            if name and (not name.startswith(".") or "/" in name or name in (".", "..")):
                fail("bad folder name %r" % name)
    total = sum(len(messages(path_of(source, s))) for s, _d in plan if s is not None)
    created = os.path.join(stage, "created")
    try:
        os.makedirs(stage, exist_ok=True)
        for src_name, dst_name in plan:
            src = path_of(source, src_name) if src_name is not None else None
            live = path_of(maildir, dst_name)
            if os.path.isdir(os.path.join(live, "cur")):
                fill(src, live, in_place)
            else:
                staged = os.path.join(stage, dst_name or "INBOX")
                part = staged + ".part"
                if not os.path.isdir(staged):
                    make_folder(part, owner, bool(dst_name))
                    fill(src, part, False)
                    os.rename(part, staged)
                with open(created, "a") as handle:  # subscribed at the end, even after a crash
                    handle.write(dst_name + "\n")
                publish(staged, live)
    except OutOfTime:
        done = progress(plan, source, maildir, stage)
        print(json.dumps(dict(STATS, finished=False, total=total, done=done)))
        return
    try:
        with open(created) as handle:
            new_folders = sorted({line for line in handle.read().splitlines() if line})
    except FileNotFoundError:
        new_folders = []
    subscribe(maildir, new_folders, owner)
    recount_quota(maildir, args.get("quota"), owner)
    shutil.rmtree(stage, ignore_errors=True)
    os.unlink(stage + ".lock")
    print(json.dumps(dict(STATS, finished=True, total=total, done=total, folders=new_folders)))


def progress(plan, source, maildir, stage):
    # Messages of the plan already at their destination (staged, in flight or live).
    done = 0
    for src_name, dst_name in plan:
        if src_name is None:
            continue
        wanted = set(messages(path_of(source, src_name)))
        there = set()
        staged = os.path.join(stage, dst_name or "INBOX")
        for folder in (path_of(maildir, dst_name), staged, staged + ".part"):
            there |= set(messages(folder))
        done += len(wanted & there)
    return done


def do_abort():
    # The job failed for good: its staging folders (never visible to Courier) go.
    for stage in args["stages"]:
        stage = inside(stage, args["root"])
        if os.path.basename(stage).startswith(".ums-restore-"):
            # Over a ZFS quota with snapshots, even unlink needs room: truncating the
            # copies first frees their blocks (no snapshot holds them).
            for base, _dirs, files in os.walk(stage):
                for name in files:
                    path = os.path.join(base, name)
                    if not os.path.islink(path):
                        os.truncate(path, 0)
            shutil.rmtree(stage)
            if os.path.lexists(stage + ".lock"):
                os.unlink(stage + ".lock")
    print(json.dumps({"finished": True}))


OPERATIONS = {"list": do_list, "abort": do_abort, "restore": do_restore}
if args.get("op") not in OPERATIONS:
    fail("unknown operation")
try:
    OPERATIONS[args["op"]]()
except OSError as exc:  # a sentence for the job, not a traceback (a full disk, a quota)
    fail("%s: %s" % (exc.strerror or exc, exc.filename or ""))
"""
