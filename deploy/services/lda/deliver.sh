#!/bin/sh
# Managed by UMS (deploy/services/lda): replaced on every converge.
#
# Postfix's pipe(8) runs this as the mail user instead of dovecot-lda itself:
#   deliver <mail root> <domain> <local part> <dovecot-lda> <its arguments...>
# It runs the LDA unchanged (stdin is the message) and keeps its exit status: the
# outcome of a delivery is the LDA's alone.
#
# Afterwards it copies the subscriptions the LDA made into Courier's list. Folders a
# Sieve "fileinto" creates are subscribed by the LDA (lda_mailbox_autosubscribe) in
# Dovecot's own "subscriptions" file, which Courier-IMAP never reads; Courier lists its
# subscriptions in "courierimapsubscribed", one "INBOX.<folder>" per line.
#
# Crash safety: Dovecot's file is first renamed aside (atomic; an LDA subscribing at
# the same moment writes a fresh one, merged next time), Courier's list is rewritten
# through a temporary file and rename, and only then the renamed file is removed. A run
# killed at any point leaves the pending names on disk for the next delivery; merging
# twice changes nothing. A failure here never fails the delivery.
root=$1 domain=$2 user=$3
shift 3
"$@"
rc=$?
[ "$rc" -eq 0 ] || exit "$rc"
case "$domain/$user" in
  */*/* | .* | */.* | *..*) exit 0 ;;
esac
md="$root/$domain/$user/Maildir"
# Nothing to merge on almost every delivery: decided without starting any process.
if [ ! -f "$md/subscriptions" ]; then
  set -- "$md"/subscriptions.ums-merging.*
  [ -f "$1" ] || exit 0
fi
(
  umask 077
  # One merge at a time per mailbox.
  exec 9>>"$md/.ums-subscriptions.lock" || exit 0
  flock -w 30 9 || exit 0
  if [ -f "$md/subscriptions" ]; then
    mv -f -- "$md/subscriptions" "$md/subscriptions.ums-merging.$$" || exit 0
  fi
  set -- "$md"/subscriptions.ums-merging.*
  [ -f "$1" ] || exit 0
  tmp="$md/courierimapsubscribed.ums-tmp"
  # Dovecot's format 2: a "V<tab>2" header, an empty line, then one folder per line with
  # the hierarchy separator written as a tab. Names are IMAP's modified UTF-7, as in
  # Courier's list. Escaped names (\001) cannot be Courier folders; they are skipped.
  {
    [ -f "$md/courierimapsubscribed" ] && awk 1 "$md/courierimapsubscribed"
    awk '
      /^V\t[0-9]+$/ || $0 == "" || index($0, "\001") || $0 == "INBOX" { next }
      { gsub("\t", "."); print "INBOX." $0 }
    ' "$@"
  } | awk '$0 != "" && !seen[$0]++' >"$tmp" || exit 0
  chmod 0644 -- "$tmp" && mv -f -- "$tmp" "$md/courierimapsubscribed" || exit 0
  rm -f -- "$@"
) >/dev/null 2>&1
exit 0
