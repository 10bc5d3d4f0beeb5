"""Per-mailbox rules the IMAP node enforces on its own: IMAP ACL locks, the Maildir++
quota and Trash retention.

The controller renders one list file (:data:`POLICY_LIST`) naming every hosted Maildir
with its retention period and access mode, and installs one constant script
(:data:`POLICY_SCRIPT`) that reads it. Cron runs the script on the node (``enforce``
hourly, ``purge`` daily), so the rules hold while the controller is down; converge also
runs ``enforce`` as soon as the list changes, for the changed lines only
(``--changed``): the script keeps a copy of the list of its last complete run
(:data:`APPLIED_LIST`) and enforces only mailbox lines that are not in it, new or changed.
A full pass touches every Maildir (minutes at 100,000 mailboxes), so it stays with cron
(hourly, which also repairs anything changed behind our back), a new script version and
a changed mail root or owner.

Why the quota is written into each Maildir: Courier-IMAP 5 takes the quota from
``MAILDIRQUOTA`` or, failing that, from the first line of the Maildir's ``maildirsize``;
its login (imaplogin with authlib 0.71) does not export userdb's ``quota`` field, so
without the file imapd accepts any APPEND. ``maildirmake -q`` writes the quota and
recounts the usage; the file stays the mail user's, for imapd and the delivery agent
to keep up to date.

Why the ACL files are locked (root-owned) and not just written: in Courier-IMAP the owner
of a mailbox always holds the ``a`` (administer) right, whatever its ACL says, so a
read-only user could ``SETACL INBOX owner aceilrstwx`` and give every right back. Courier
writes an ACL by renaming a temporary file over ``courierimapacl``; making the folder
directory root-owned with the sticky bit (``1770 root:<mail gid>``) and the ACL file
root-owned leaves every normal operation working (the mail user can still create and
rename its own files there: flags, UID lists, new folders) but makes that rename fail
("Cannot modify ACLs on this mailbox"). Courier's check that the Maildir belongs to the
mail user (``IMAP_MAILBOX_SANITY_CHECK``) has to be off for that; the uid is ours anyway.

Why ``ctime`` for the retention clock: Courier copies a message into Trash keeping its
``mtime`` (that is the IMAP INTERNALDATE, usually the delivery date), so ``mtime`` says
nothing about when the message was deleted; the copy's ``ctime`` is set when it lands
in ``Trash`` (and again when a flag changes there, which only ever delays the purge).

Everything in the list file is data: the script never evaluates it, accepts only a
known mode word and a number of days, and resolves each Maildir (``realpath``) to make
sure it lies strictly inside the mail root before touching anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from deploy.services.base import MailboxData
from deploy.services.postfix import safe

POLICY_LIST = "/etc/courier/ums-mailbox-policy"
POLICY_SCRIPT = "/etc/courier/ums-mailbox-policy.sh"
CRON_FILE = "/etc/cron.d/ums-courier-policy"
#: The list as of the script's last complete ``enforce`` (outside /etc/courier, which
#: converge copies into every stage).
APPLIED_LIST = "/var/lib/courier/ums-mailbox-policy.applied"

_ROOT = re.compile(r"/(?:[A-Za-z0-9_.-]+/)*[A-Za-z0-9_.-]+")

CRON_ENTRY = (
    "# Managed by UMS (deploy/services/courier): per-mailbox IMAP locks and Trash purge.\n"
    "SHELL=/bin/sh\n"
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"
    f"7 * * * * root /bin/sh {POLICY_SCRIPT} enforce >/dev/null\n"
    f"17 3 * * * root /bin/sh {POLICY_SCRIPT} purge >/dev/null\n"
)


def mail_root(value: object) -> str:
    """The operator's mail root as an absolute, plain path (it reaches the node's files)."""
    root = str(value).rstrip("/")
    if not _ROOT.fullmatch(root) or any(part in ("", ".", "..") for part in root.split("/")[1:]):
        raise safe.UnsafeName(f"unsafe mail root {value!r}")
    return root


def access_mode(m: MailboxData) -> str:
    """The ACL mode of a mailbox: read-only wins over cannot-delete."""
    if m.read_only:
        return "read-only"
    if not m.can_delete:
        return "no-delete"
    return "full"


def maildir_path(root: str, m: MailboxData) -> str:
    return f"{root}/{safe.domain(m.domain)}/{safe.local_part(m.local_part)}/Maildir"


def list_header(*, root: str, uid: int, gid: int) -> str:
    """The list's first lines: format version, mail root and owner (checked here)."""
    return f"ums-mailbox-policy\t1\nroot\t{mail_root(root)}\nowner\t{int(uid)}\t{int(gid)}\n"


def policy_list(mailboxes: Iterable[MailboxData], *, root: str, uid: int, gid: int) -> bytes:
    """Tab-separated records the node script reads; every field validated here."""
    lines = [list_header(root=root, uid=uid, gid=gid)]
    for m in mailboxes:
        # 0 (not offered by the API, possible in older rows) keeps Trash forever.
        days = max(int(m.retention_days), 0)
        quota = max(int(m.quota_mb), 0) * 1024 * 1024
        lines.append(f"mailbox\t{days}\t{access_mode(m)}\t{quota}\t{maildir_path(root, m)}\n")
    return "".join(lines).encode()


# A constant script: it reads the list as data (no eval, no sourcing), quotes every
# expansion and refuses any Maildir that does not resolve to a path inside the root.
POLICY_SCRIPT_TEXT = r"""#!/bin/sh
# Managed by UMS (deploy/services/courier/policy.py). Do not edit: converge rewrites it.
#
#   ums-mailbox-policy.sh enforce [--list FILE] [--changed] [--applied FILE]
#       lock read-only / cannot-delete mailboxes with Courier IMAP ACLs, unlock the rest,
#       write each Maildir's quota (maildirsize) when it differs. After a complete run
#       the list is kept as --applied (default below); with --changed only mailbox lines
#       that are not in that copy are enforced (all of them when there is no copy yet or
#       the root/owner lines differ).
#   ums-mailbox-policy.sh purge [--list FILE] [--now EPOCH] [--dry-run]
#       delete messages that have been in a mailbox's Trash longer than its retention
#       period (by ctime: the time they were moved there); nothing else is touched.
#       --now evaluates the periods as of another moment (tests, catch-up runs).
set -u
umask 022
LIST=/etc/courier/ums-mailbox-policy
APPLIED=/var/lib/courier/ums-mailbox-policy.applied
NOW=$(date +%s)
DRY=0
CHANGED=0
TAB=$(printf '\t')
usage() {
  echo "usage: $0 enforce|purge [--list FILE] [--changed] [--applied FILE]" \
    "[--now EPOCH] [--dry-run]" >&2
  exit 2
}
[ $# -ge 1 ] || usage
CMD=$1; shift
while [ $# -gt 0 ]; do
  case $1 in
    --list) [ $# -ge 2 ] || usage; LIST=$2; shift 2 ;;
    --now) [ $# -ge 2 ] || usage; NOW=$2; shift 2 ;;
    --dry-run) DRY=1; shift ;;
    --changed) CHANGED=1; shift ;;
    --applied) [ $# -ge 2 ] || usage; APPLIED=$2; shift 2 ;;
    *) usage ;;
  esac
done
case $CMD in enforce|purge) ;; *) usage ;; esac
MAILDIRMAKE=$(command -v maildirmake.courier || command -v maildirmake) || {
  echo "maildirmake (Courier) not found" >&2; exit 1; }
case $NOW in ''|*[!0-9]*) echo "--now must be seconds since the epoch" >&2; exit 2 ;; esac
[ -r "$LIST" ] || { echo "cannot read $LIST" >&2; exit 1; }

# What this run reads: the whole list, or (enforce --changed) its header lines plus the
# mailbox lines the last complete run did not apply exactly as they are now.
SOURCE=$LIST
if [ "$CMD" = enforce ] && [ "$CHANGED" = 1 ] && [ -f "$APPLIED" ] &&
  [ "$(grep -v '^mailbox' -- "$APPLIED")" = "$(grep -v '^mailbox' -- "$LIST")" ]; then
  SOURCE=$(mktemp) || exit 1
  trap 'rm -f -- "$SOURCE"' EXIT
  awk -F "$TAB" 'NR == FNR { done[$0] = 1; next } $1 != "mailbox" || !($0 in done)' \
    "$APPLIED" "$LIST" > "$SOURCE" || exit 1
fi

ROOT=
UID_=
GID_=
STATUS=0
warn() { echo "$*" >&2; STATUS=1; }

# Prints the resolved path of $1 if it exists and lies strictly inside $ROOT.
inside() {
  _real=$(realpath -e -- "$1" 2>/dev/null) || return 1
  case $_real in "$ROOT"/*) printf '%s\n' "$_real" ;; *) return 1 ;; esac
}

# Folders of a Maildir: real directories named .Something holding a cur/ (no symlinks).
folders() {
  for _f in "$1"/.[!.]*; do
    [ -d "$_f" ] && [ ! -L "$_f" ] && [ -d "$_f/cur" ] && printf '%s\n' "$_f"
  done
}

write_acl() {  # dir rights
  _tmp=$(mktemp -- "$1/ums-acl.XXXXXX") || return 1
  printf 'owner %s\n' "$2" > "$_tmp" && chmod 0644 -- "$_tmp" &&
    mv -f -- "$_tmp" "$1/courierimapacl" || { rm -f -- "$_tmp"; return 1; }
}

# The Maildir itself, then its folders, one per line (folder names may hold spaces).
each_dir() { printf '%s\n' "$1"; folders "$1"; }

lock() {  # maildir rights
  each_dir "$1" | while IFS= read -r _d; do
    write_acl "$_d" "$2" && chown "0:$GID_" -- "$_d" && chmod 1770 -- "$_d" || exit 1
  done || return 1
  # Courier keeps ACLs of not-yet-existing folders here; only root may write them now.
  if [ ! -d "$1/courierimaphieracl" ] || [ "$(stat -c %u -- "$1/courierimaphieracl")" != 0 ]; then
    rm -rf -- "$1/courierimaphieracl" && mkdir -m 0755 -- "$1/courierimaphieracl" || return 1
  fi
}

unlock() {  # maildir: back to Courier's defaults (the owner holds every right)
  [ "$(stat -c %u -- "$1")" = 0 ] || return 0
  # Folders created while locked carry a copy of the restricted ACL: drop them all.
  each_dir "$1" | while IFS= read -r _d; do
    rm -f -- "$_d/courierimapacl" || exit 1
    if [ "$(stat -c %u -- "$_d")" = 0 ]; then
      chown "$UID_:$GID_" -- "$_d" && chmod 0700 -- "$_d" || exit 1
    fi
  done || return 1
  rm -rf -- "$1/courierimaphieracl"
}

quota() {  # maildir bytes (0: none) [force]: keep maildirsize's quota line in step
  if [ "$2" = 0 ]; then
    rm -f -- "$1/maildirsize"
    return
  fi
  if [ -z "${3:-}" ] && [ -f "$1/maildirsize" ] && [ ! -L "$1/maildirsize" ] &&
    [ "$(head -n 1 -- "$1/maildirsize")" = "${2}S" ]; then
    return 0
  fi
  rm -f -- "$1/maildirsize"
  "$MAILDIRMAKE" -q "${2}S" "$1" && chown -h "$UID_:$GID_" -- "$1/maildirsize"
}

purge() {  # maildir days (0: keep forever) quota
  [ "$2" -gt 0 ] || return 0
  _cutoff=$((NOW - $2 * 86400))
  _removed=0
  for _sub in cur new; do
    _dir="$1/.Trash/$_sub"
    [ -d "$_dir" ] || continue
    _real=$(inside "$_dir") || { warn "skipping $_dir: outside $ROOT"; continue; }
    if [ "$_real" != "$_dir" ]; then
      # A Trash (or mailbox) left out of backups is a link into the domain's
      # .ums-excluded dataset (backup/exclude_layout.py): that one place only.
      _home=${1%/Maildir}
      _x="${_home%/*}/.ums-excluded/${_home##*/}"
      case $_real in
        "$_x/.Trash/$_sub" | "$_x/Maildir/.Trash/$_sub") ;;
        *) warn "skipping $_dir: not a plain directory"; continue ;;
      esac
    fi
    if [ "$DRY" = 1 ]; then
      find "$_real" -mindepth 1 -maxdepth 1 -type f ! -newerct "@$_cutoff" -print
      continue
    fi
    _n=$(find "$_real" -mindepth 1 -maxdepth 1 -type f ! -newerct "@$_cutoff" \
      -print -delete | wc -l)
    _removed=$((_removed + _n))
  done
  # Files removed behind imapd's back: recount the usage in the Maildir++ quota file.
  [ "$_removed" -gt 0 ] && { quota "$1" "$3" force || warn "recounting quota of $1 failed"; }
  [ "$_removed" -gt 0 ] && echo "$1: $_removed message(s) purged from Trash"
  return 0
}

while IFS="$TAB" read -r kind a b q c; do
  case $kind in
    ums-mailbox-policy) [ "$a" = 1 ] || { echo "unknown list version $a" >&2; exit 1; } ;;
    root)
      [ -d "$a" ] || exit 0  # no mail store yet: no Maildir to enforce anything on
      ROOT=$(realpath -e -- "$a") || exit 1
      [ "$ROOT" != / ] || { echo "refusing / as the mail root" >&2; exit 1; } ;;
    owner)
      case $a$b in ''|*[!0-9]*) echo "bad owner line" >&2; exit 1 ;; esac
      UID_=$a; GID_=$b ;;
    mailbox)
      [ -n "$ROOT" ] && [ -n "$UID_" ] || { echo "list has no root/owner line" >&2; exit 1; }
      case $a in ''|*[!0-9]*) warn "bad retention '$a' for $c"; continue ;; esac
      case $q in ''|*[!0-9]*) warn "bad quota '$q' for $c"; continue ;; esac
      case $b in
        full) rights= ;;
        read-only) rights=alrs ;;
        no-delete) rights=acilrsw ;;
        *) warn "bad mode '$b' for $c"; continue ;;
      esac
      [ -d "$c" ] || continue  # not created yet: nothing to enforce
      md=$(inside "$c") || { warn "skipping $c: outside $ROOT"; continue; }
      [ "$md" = "$c" ] || { warn "skipping $c: resolves elsewhere ($md)"; continue; }
      if [ "$CMD" = purge ]; then
        purge "$md" "$a" "$q" || warn "purge failed for $md"
        continue
      fi
      if [ -n "$rights" ]; then
        lock "$md" "$rights" || warn "locking $md failed"
      else
        unlock "$md" || warn "unlocking $md failed"
      fi
      quota "$md" "$q" || warn "setting the quota of $md failed" ;;
    '') ;;
    *) warn "unknown line '$kind'" ;;
  esac
done < "$SOURCE"
if [ "$CMD" = enforce ] && [ "$STATUS" = 0 ]; then
  # Remember what is now in force, for the next --changed run. Not after a failure:
  # the failed lines (and those after them) are then tried again.
  mkdir -p -- "$(dirname -- "$APPLIED")" && cp -- "$LIST" "$APPLIED.tmp" &&
    mv -f -- "$APPLIED.tmp" "$APPLIED" || warn "cannot record the applied list in $APPLIED"
fi
exit $STATUS
"""
