"""The program that keeps excluded folders and mailboxes out of a domain's ZFS snapshots,
run on the IMAP node with its own Python (standard library only); constant text, its
parameters a JSON document on standard input (data, never code).

Layout (issue 13, item 6): each domain dataset ``<pool>/mail/<domain>`` with folder or
mailbox exclusions has a child dataset ``<pool>/mail/<domain>/.ums-excluded``, mounted at
``<mail_root>/<domain>/.ums-excluded``. ``zfs snapshot`` and ``zfs send`` of the domain
dataset are not recursive (:mod:`backup.snapshots`, :mod:`backup.offnode_zfs`), so what
lives in the child is in no snapshot and no off-node copy. An excluded folder
``<local>/Maildir/.Trash`` is a relative symbolic link ``../../.ums-excluded/<local>/.Trash``;
an excluded mailbox's ``<local>/Maildir`` is ``../.ums-excluded/<local>/Maildir``. Courier
and Dovecot's LDA follow the links; in a snapshot (a clone mounted anywhere) the link
resolves to the clone's own empty ``.ums-excluded`` folder, never to live mail.

Moving a folder in (exclude) — each step safe to kill, the next run finishes it:

1. copy the folder into the excluded dataset (file by file: a temporary name, fsync,
   rename; messages already there by their Maildir unique name are skipped);
2. rename the folder aside to ``<local>/.ums-exclude/out/<name>`` (same dataset: atomic),
   then put the link in its place (made in ``.ums-exclude``, renamed into the Maildir);
3. merge what arrived in the aside folder between 1 and 2 into the excluded copy, then
   delete the aside folder.

Moving back (the exclusion lifted) is the mirror image through ``.ums-exclude/in/<name>``.
At every point each message is in the folder Courier sees, or in the aside/staging
folder that the next run merges: nothing is lost. A message expunged during a move window
(between 1 and 2) can come back once; documented.
"""

from __future__ import annotations

PROGRAM = r"""
import errno, fcntl, json, os, shutil, sys

args = json.loads(sys.stdin.read())
ROOT = args["root"].rstrip("/")
STORE = ".ums-excluded"
WORK = ".ums-exclude"
FOLDERS = list(args.get("folders") or ())
MAILBOXES = {m.lower() for m in args.get("mailboxes") or ()}
STATS = {"excluded": [], "included": [], "merged": 0, "problems": []}
# A move copies a folder across datasets of the same pool before the original goes, so it
# needs the folder's size free, and mail must keep arriving meanwhile: a move that would
# leave less than RESERVE (or a twentieth of the file system) free is not started, and one that
# still runs out of space removes what it copied. Either fails the job with the numbers.
RESERVE = 16 << 20
SHORT = []
COPIED = []


def fail(message):
    print(json.dumps({"error": message}))
    sys.exit(3)


def bad(name):
    return not name or "/" in name or name in (".", "..") or "\0" in name


def folder_excluded(name):
    # name: a Maildir++ folder without its dot ("Trash", "Trash.Old")
    return any(name == f or name.startswith(f + ".") for f in FOLDERS)


def unique(name):
    return name.split(":", 1)[0]


def fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def keep_owner(src_st, path):
    try:
        os.lchown(path, src_st.st_uid, src_st.st_gid)
    except OSError:
        pass


def make_dir(path, like):
    if not os.path.isdir(path):
        os.makedirs(path, exist_ok=True)
    st = os.stat(like)
    os.chmod(path, st.st_mode & 0o7777)
    keep_owner(st, path)


def copy_file(src, dst):
    # Whole file under a temporary name, fsync, then rename: dst is complete or absent.
    st = os.lstat(src)
    part = dst + ".ums-part"
    if os.path.lexists(part):
        os.unlink(part)
    if (st.st_mode & 0o170000) == 0o120000:  # a tiered message's link stays a link
        os.symlink(os.readlink(src), part)
    else:
        with open(src, "rb") as reader, open(part, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
            writer.flush()
            os.fsync(writer.fileno())
        os.chmod(part, st.st_mode & 0o7777)
    keep_owner(st, part)
    if (st.st_mode & 0o170000) != 0o120000:
        os.utime(part, ns=(st.st_atime_ns, st.st_mtime_ns))  # Courier's INTERNALDATE
    os.rename(part, dst)
    COPIED.append(dst)


def tree_bytes(path):
    # Bytes the regular files under path take on disk (links count nothing).
    total = 0
    for here, _dirs, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(here, name))
            except OSError:
                continue
            if (st.st_mode & 0o170000) == 0o100000:
                total += st.st_blocks * 512
    return total


def room_for(src, into):
    # True when copying src into the file system of into leaves the reserve free.
    need = tree_bytes(src)
    if need == 0:
        return True
    st = os.statvfs(into)
    free, size = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    keep = max(RESERVE, size // 20)
    if need + keep <= free:
        return True
    SHORT.append(
        "%s: %d MiB to move, %d MiB free, %d MiB kept for mail"
        % (src, need >> 20, free >> 20, keep >> 20)
    )
    return False


def copy_or_undo(src, dst):
    # merge(src, dst) where src stays where it is: out of space, the copies this call made
    # are removed again (src still holds every one of them) and False is returned.
    del COPIED[:]
    try:
        merge(src, dst)
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        for path in COPIED:
            try:
                os.unlink(path)
            except OSError:
                pass
        for here, _dirs, files in os.walk(dst):
            for name in files:
                if name.endswith(".ums-part"):
                    os.unlink(os.path.join(here, name))
        SHORT.append("%s: out of space while copying (copies removed)" % src)
        return False


def messages(folder):
    # {unique: (sub, name)} of the messages in a Maildir folder's cur/ and new/.
    found = {}
    for sub in ("cur", "new"):
        try:
            names = os.listdir(os.path.join(folder, sub))
        except OSError:
            continue
        for name in names:
            if not name.startswith(".") and not name.endswith(".ums-part"):
                found[unique(name)] = (sub, name)
    return found


def merge(src, dst):
    # Every message of src that dst lacks (by unique name) goes into dst; other files of
    # src (Courier's uid list, keywords) are copied when dst has none. Nothing is deleted.
    make_dir(dst, src)
    have = messages(dst)
    for entry in sorted(os.listdir(src)):
        path, target = os.path.join(src, entry), os.path.join(dst, entry)
        if entry in ("cur", "new", "tmp"):
            make_dir(target, path)
            continue
        if os.path.isdir(path) and not os.path.islink(path):
            merge(path, target)
        elif not os.path.lexists(target) and not entry.endswith(".ums-part"):
            copy_file(path, target)
    for uniq, (sub, name) in sorted(messages(src).items()):
        there = have.get(uniq)
        if there is None:
            copy_file(os.path.join(src, sub, name), os.path.join(dst, sub, name))
            STATS["merged"] += 1
    fsync_dir(dst)


def remove(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.isdir(path):
        shutil.rmtree(path)


def empty_folder(path, home, subfolder):
    st = os.stat(home)
    for sub in ("", "cur", "new", "tmp"):
        part = os.path.join(path, sub) if sub else path
        os.makedirs(part, mode=0o700, exist_ok=True)
        keep_owner(st, part)
    if subfolder:
        marker = os.path.join(path, "maildirfolder")
        open(marker, "a").close()
        keep_owner(st, marker)


def put_link(at, target, work, prefix="link-"):
    # The link is made in the work folder (same file system) and renamed into place.
    os.makedirs(work, exist_ok=True)
    temp = os.path.join(work, prefix + os.path.basename(at))
    if os.path.lexists(temp):
        os.unlink(temp)
    os.symlink(target, temp)
    keep_owner(os.stat(os.path.dirname(at)), temp)
    os.rename(temp, at)
    fsync_dir(os.path.dirname(at))


def ours(path, target):
    return os.path.islink(path) and os.readlink(path) == target


def exclude(src, dst, target, work, name):
    aside = os.path.join(work, "out", name)
    home = os.path.dirname(work)
    if not os.path.isdir(os.path.dirname(dst)):
        make_dir(os.path.dirname(dst), home)  # <store>/<local>, owned like the home
    if ours(src, target):
        if os.path.isdir(aside):  # killed after the link: finish the merge
            merge(aside, dst)
            shutil.rmtree(aside)
        elif not os.path.isdir(dst):
            # A link without its folder: a promoted replica or a rebuilt node got the
            # dataset (and its links) but never the excluded data. An empty folder keeps
            # Courier and the LDA working; the old content is not recoverable from here.
            empty_folder(dst, home, name != "Maildir")
            STATS["problems"].append("%s pointed at nothing: made it an empty folder" % src)
        return
    if os.path.islink(src):
        STATS["problems"].append("%s is a link UMS did not make: left alone" % src)
        return
    if os.path.isdir(src):
        if not room_for(src, os.path.dirname(dst)):
            return  # left in place (so still in snapshots); the job fails and says why
        if not copy_or_undo(src, dst):  # 1. the copy (again after a kill: what is missing)
            return
        if os.path.isdir(aside):  # an earlier run's aside folder: its mail goes too
            merge(aside, dst)
            shutil.rmtree(aside)
        os.makedirs(os.path.dirname(aside), exist_ok=True)
        os.rename(src, aside)  # 2. aside, then the link
    elif not os.path.isdir(aside) and not os.path.isdir(dst):
        return
    if not os.path.isdir(dst):
        make_dir(dst, aside)
    put_link(src, target, work)
    if os.path.isdir(aside):  # 3. what arrived meanwhile
        merge(aside, dst)
        shutil.rmtree(aside)
    STATS["excluded"].append(os.path.relpath(src, os.path.join(ROOT, args["domain"])))


def include(src, dst, target, work, name):
    stage = os.path.join(work, "in", name)
    aside = os.path.join(work, "out", name)
    if not os.path.lexists(src) and os.path.isdir(aside):
        os.rename(aside, src)  # an exclusion killed between its two renames, now lifted
    if ours(src, target):
        if os.path.isdir(dst):
            if not room_for(dst, os.path.dirname(work)) or not copy_or_undo(dst, stage):
                return  # stays excluded until there is room to bring it back
        os.unlink(src)
        if not os.path.isdir(stage):
            return
    elif os.path.islink(src):
        STATS["problems"].append("%s is a link UMS did not make: left alone" % src)
        return
    if not os.path.lexists(src) and os.path.isdir(stage):
        os.rename(stage, src)
        fsync_dir(os.path.dirname(src))
        STATS["included"].append(os.path.relpath(src, os.path.join(ROOT, args["domain"])))
    if os.path.isdir(src) and not os.path.islink(src):
        for left in (stage, aside, dst):
            if os.path.isdir(left):
                merge(left, src)
                shutil.rmtree(left)


def listing(path):
    try:
        return os.listdir(path)
    except OSError:
        return []


def folders_of(local, maildir, store_local, work):
    names = set()
    for name in listing(maildir):
        full = os.path.join(maildir, name)
        if name.startswith(".") and not bad(name) and not name.startswith(".ums-") and (
                os.path.isdir(full) or os.path.islink(full)):
            names.add(name)
    for base in (store_local, os.path.join(work, "out"), os.path.join(work, "in")):
        for name in listing(base):
            if name.startswith(".") and not bad(name) and not name.startswith(".ums-"):
                names.add(name)
    return sorted(names)


def adopt_renamed(maildir, store_local, local, work):
    # An IMAP RENAME of a linked folder renames the link only (".Trash" -> ".Old", still
    # pointing at ".ums-excluded/<local>/.Trash"): give the excluded copy the new name
    # too (one rename inside the excluded dataset), so each folder has its own place.
    prefix = "../../%s/%s/" % (STORE, local)
    for name in listing(maildir):
        path = os.path.join(maildir, name)
        if not os.path.islink(path) or bad(name) or not name.startswith("."):
            continue
        target = os.readlink(path)
        old = target[len(prefix):]
        if not target.startswith(prefix) or old == name or bad(old):
            continue
        if os.path.lexists(os.path.join(maildir, old)) or os.path.lexists(
                os.path.join(store_local, name)):
            continue  # the old name is in use again, or the new one taken: left as it is
        os.rename(os.path.join(store_local, old), os.path.join(store_local, name))
        put_link(path, prefix + name, work)


def do_folders(domain_dir, store, local, want_any):
    maildir = os.path.join(domain_dir, local, "Maildir")
    store_local = os.path.join(store, local)
    work = os.path.join(domain_dir, local, WORK)
    adopt_renamed(maildir, store_local, local, work)
    for name in folders_of(local, maildir, store_local, work):
        src, dst = os.path.join(maildir, name), os.path.join(store_local, name)
        target = "../../%s/%s/%s" % (STORE, local, name)
        if want_any and folder_excluded(name[1:]):
            exclude(src, dst, target, work, name)
        else:
            include(src, dst, target, work, name)


def do_mailbox(domain_dir, store, local, want):
    src = os.path.join(domain_dir, local, "Maildir")
    dst = os.path.join(store, local, "Maildir")
    target = "../%s/%s/Maildir" % (STORE, local)
    work = os.path.join(domain_dir, local, WORK)
    if want:
        exclude(src, dst, target, work, "Maildir")
    else:
        include(src, dst, target, work, "Maildir")


def main():
    domain = args["domain"]
    if bad(domain) or domain.startswith("."):
        fail("bad domain %r" % domain)
    domain_dir = os.path.join(ROOT, domain)
    store = os.path.join(domain_dir, STORE)
    wanted = bool(FOLDERS or MAILBOXES)
    if not os.path.ismount(store):
        if wanted:
            # Never into the domain dataset itself: that is what snapshots hold.
            fail("%s is not a mounted dataset" % store)
        if not os.path.isdir(store):
            print(json.dumps(STATS))
            return
    lock = open(os.path.join(store, ".lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    locals_ = set(e for e in listing(domain_dir) if not e.startswith(".") and not bad(e))
    locals_ |= set(e for e in listing(store) if not e.startswith(".") and not bad(e))
    for local in sorted(locals_):
        home = os.path.join(domain_dir, local)
        if not os.path.isdir(home) or os.path.islink(home):
            continue  # a mailbox purged meanwhile: its excluded part is the purge's
        if local.lower() in MAILBOXES:
            do_folders(domain_dir, store, local, False)  # whole Maildir goes: folders first
            do_mailbox(domain_dir, store, local, True)
        else:
            do_mailbox(domain_dir, store, local, False)
            do_folders(domain_dir, store, local, True)
        work = os.path.join(home, WORK)
        for sub in ("out", "in"):
            try:
                os.rmdir(os.path.join(work, sub))
            except OSError:
                pass
        try:
            os.rmdir(work)
        except OSError:
            pass
    if SHORT:
        STATS["error"] = "not enough free space to move: " + "; ".join(SHORT)
    print(json.dumps(STATS))


try:
    main()
except OSError as exc:
    fail("%s: %s" % (exc.strerror or exc, exc.filename or ""))
"""
