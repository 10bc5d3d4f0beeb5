#!/usr/bin/env bash
# Install the Debian packages the test suite drives for real (see
# ../shared/notes/real-components.md). Needs root; skips what is already installed.
set -euo pipefail

packages=(chromium gettext openssh-server iproute2 util-linux iputils-ping nginx shellcheck curl wget postfix courier-imap courier-pop courier-authdaemon courier-authlib-userdb libsasl2-modules sasl2-bin zfs-fuse spamassassin spamc clamav clamav-daemon openssl python3)
# python3: the Nextcloud stand-in (tests/standins/nextcloud) runs inside test nodes with
# the system interpreter (the venv's interpreter may live under /root, private in nodes).
# Identity (issue 7): slapd and ldap-utils for the LDAPS tests' own directory; python-ldap
# builds from source against libldap2-dev and libsasl2-dev (the Makefile runs this script
# before it installs ums[ldap]).
packages+=(slapd ldap-utils libldap2-dev libsasl2-dev)
# Content filtering (issue 5): Debian 12 ships the SpamAssassin daemon as its own package.
packages+=(spamd)
# Delivery with Sieve and auto-responders (issue 5): Dovecot's LDA and Pigeonhole.
packages+=(dovecot-core dovecot-sieve)
# Backup targets (issue 13): a real smbd for the CIFS target tests.
packages+=(samba smbclient)
# SAML against a real identity provider (issue 18): SimpleSAMLphp under PHP's web server,
# behind nginx for TLS.
packages+=(simplesamlphp php8.2-cli php8.2-xml php8.2-mbstring)
# ACME for load balancer names (issue 15): Pebble, Let's Encrypt's test CA (with pebble-challtestsrv).
packages+=(pebble)
# ACME DNS-01 (issue 15): BIND 9 as the zone's server taking RFC 2136 updates.
packages+=(bind9)
# DKIM signing (issue 15): OpenDKIM as the SMTP nodes' signing milter.
packages+=(opendkim opendkim-tools)
# Inbound SPF and DMARC (issue 15): OpenDMARC (SPF through its libspf2) and the public
# suffix list it finds organisational domains with.
packages+=(opendmarc publicsuffix)
# Webmail (issue 16): Debian's Roundcube with SQLite, run under PHP-FPM behind nginx.
packages+=(roundcube roundcube-core roundcube-sqlite3 php-fpm php-sqlite3)
# SRS for forwards to other providers (issue 15): postsrsd on the SMTP nodes.
packages+=(postsrsd)
# Calendars and contacts (issue 16): Radicale as the cloud-files nodes' CalDAV/CardDAV server.
packages+=(radicale)
# Storage tiering (issue 14 part 4): s3fs mounts an S3 tier inside the IMAP test node.
packages+=(s3fs)
# Office (issue 16): the Collabora Online stand-in (tests/standins/collabora) converts
# documents to PDF with Debian's headless LibreOffice, the engine Collabora runs on
# (writer without the GUI: about 10 MB to download, ~120 MB installed with its libraries).
packages+=(libreoffice-writer-nogui)
# Cloud DB replication (tests/clouddb): mariadbd, mariadb-install-db, mariadb-dump, the client.
packages+=(mariadb-server mariadb-client)
# HTTP throughput benchmark (issue 19, benchmarks/throughput.py): wrk as the load generator.
packages+=(wrk)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "Missing Debian packages (${missing[*]}); run 'make test' as root to install them." >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt_install() {
    apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@"
}
# Postfix asks how to configure itself; converge owns main.cf (issue 5).
if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
fi
# slapd would build a default directory; the tests start their own slapd with their own config.
if printf '%s\n' "${missing[@]}" | grep -qx slapd; then
    echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
fi
# Roundcube's dbconfig-common would ask for a database; converge makes its own SQLite one.
if printf '%s\n' "${missing[@]}" | grep -qx roundcube-core; then
    printf '%s\n' "roundcube-core roundcube/dbconfig-install boolean true" \
        "roundcube-core roundcube/database-type select sqlite3" | debconf-set-selections
fi
echo "Installing ${missing[*]} ..."
apt_install "${missing[@]}" >/dev/null || { apt-get -o DPkg::Lock::Timeout=600 update >/dev/null && apt_install "${missing[@]}" >/dev/null; }
