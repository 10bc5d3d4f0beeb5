#!/bin/sh
# bootstrapcore.sh: enrol this server into UMS.
#
# Run as root on a freshly installed RockyLinux / RHEL / AlmaLinux 8 or 9, or Debian 12:
#
#     cd /tmp
#     wget {{ script_url_comment|safe }}
#     sh bootstrapcore.sh TOKEN [--ca-file PATH] [--ssh-port N]
#
# It installs the UMS controller's SSH public key for root, collects this server's facts
# (host name, addresses, SSH port and host keys, OS, CPUs, memory, disks) and registers
# them with the portal over HTTPS, verifying the portal's certificate (--ca-file for a
# private CA). The server then waits as "pending" until an administrator approves it.
# Running it again is harmless: the key is not added twice and the portal recognises the
# server by its SSH host keys.

UMS_BASE_URL={{ base_url_sh|safe }}
UMS_CONTROLLER_KEY={{ controller_key_sh|safe }}
{% verbatim %}
REGISTER_PATH=/api/v1/nodes/register/
PROG=bootstrapcore
MAX_DISKS=32
MAX_HOST_KEYS=8
MAX_ADDRESSES=32

set -u
# Nothing this script writes may be readable by others (the payload holds the token).
umask 077
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
# Parse command output in a predictable language.
LC_ALL=C
export LC_ALL

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
usage() {
    printf 'Usage: sh bootstrapcore.sh TOKEN [--ca-file PATH] [--ssh-port N]\n'
    printf '  TOKEN          the enrolment token from the portal (umsnode_...)\n'
    printf '  --ca-file PATH trust this CA certificate (PEM) for the portal'"'"'s TLS\n'
    printf '  --ssh-port N   the port the controller reaches sshd on (default: from sshd -T, else 22)\n'
}
have() { command -v "$1" >/dev/null 2>&1; }

# ------------------------------------------------------------------------ arguments

TOKEN=""
CA_FILE=""
SSH_PORT=""
while [ $# -gt 0 ]; do
    case $1 in
    --ca-file)
        [ $# -ge 2 ] || die "--ca-file needs a path"
        CA_FILE=$2
        shift 2
        ;;
    --ca-file=*)
        CA_FILE=${1#--ca-file=}
        shift
        ;;
    --ssh-port)
        [ $# -ge 2 ] || die "--ssh-port needs a number"
        SSH_PORT=$2
        shift 2
        ;;
    --ssh-port=*)
        SSH_PORT=${1#--ssh-port=}
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    -*)
        usage >&2
        die "unknown option: $1"
        ;;
    *)
        [ -z "$TOKEN" ] || die "only one token may be given"
        TOKEN=$1
        shift
        ;;
    esac
done

if [ "$(id -u)" != 0 ]; then
    die "run this script as root (it installs the controller's SSH key for root)"
fi
if [ -z "$TOKEN" ]; then
    usage >&2
    die "the enrolment token is missing"
fi
case $TOKEN in
umsnode_*) ;;
*) die "that does not look like an enrolment token (they start with umsnode_)" ;;
esac
case $TOKEN in
*[!A-Za-z0-9_-]*) die "the enrolment token contains unexpected characters; copy it again" ;;
esac
if [ -n "$CA_FILE" ] && [ ! -r "$CA_FILE" ]; then
    die "cannot read the CA file $CA_FILE"
fi

valid_port() {
    case $1 in
    '' | *[!0-9]*) return 1 ;;
    esac
    [ ${#1} -le 5 ] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}
if [ -n "$SSH_PORT" ] && ! valid_port "$SSH_PORT"; then
    die "--ssh-port must be a number from 1 to 65535"
fi

case $UMS_BASE_URL in
https://*) PROTO="=https" ;;
http://*)
    # Only a development portal is served over plain HTTP; production is always HTTPS.
    PROTO="=http"
    say "warning: the portal is reached over plain HTTP (development setup)"
    ;;
*) die "the portal URL baked into this script is not http(s): $UMS_BASE_URL" ;;
esac

# ------------------------------------------------------------------------ OS

os_field() {
    # Read one KEY=value from os-release without executing the file.
    osf_value=$(sed -n "s/^$1=//p" /etc/os-release | head -n 1)
    case $osf_value in
    \"*\")
        osf_value=${osf_value#\"}
        osf_value=${osf_value%\"}
        ;;
    \'*\')
        osf_value=${osf_value#\'}
        osf_value=${osf_value%\'}
        ;;
    esac
    printf '%s' "$osf_value"
}

[ -r /etc/os-release ] || die "cannot read /etc/os-release: unsupported system"
OS_ID=$(os_field ID)
OS_VERSION=$(os_field VERSION_ID)
OS_PRETTY=$(os_field PRETTY_NAME)
OS_MAJOR=${OS_VERSION%%.*}
case $OS_ID in
rocky | rhel | almalinux)
    case $OS_MAJOR in
    8 | 9) ;;
    *) die "unsupported OS: ${OS_PRETTY:-$OS_ID $OS_VERSION} (supported: RockyLinux, RHEL and AlmaLinux 8 or 9, Debian 12)" ;;
    esac
    ;;
debian)
    [ "$OS_MAJOR" = 12 ] ||
        die "unsupported OS: ${OS_PRETTY:-$OS_ID $OS_VERSION} (supported: RockyLinux, RHEL and AlmaLinux 8 or 9, Debian 12)"
    ;;
*)
    die "unsupported OS: ${OS_PRETTY:-${OS_ID:-unknown}} (supported: RockyLinux, RHEL and AlmaLinux 8 or 9, Debian 12)"
    ;;
esac

if have curl; then
    CLIENT=curl
elif have wget; then
    CLIENT=wget
else
    die "neither curl nor wget is installed; install one of them and run this again"
fi

# ------------------------------------------------------------------------ controller key

install_controller_key() {
    ick_home=$(getent passwd root 2>/dev/null | cut -d: -f6)
    [ -n "$ick_home" ] || ick_home=/root
    ick_dir=$ick_home/.ssh
    ick_file=$ick_dir/authorized_keys
    mkdir -p "$ick_dir" || die "cannot create $ick_dir"
    chmod 700 "$ick_dir" || die "cannot set the permissions of $ick_dir"
    if [ ! -e "$ick_file" ]; then
        : >"$ick_file" || die "cannot create $ick_file"
    fi
    chmod 600 "$ick_file" || die "cannot set the permissions of $ick_file"
    # The key is identified by its base64 blob, whatever options or comment a line has.
    ick_blob=$(printf '%s\n' "$UMS_CONTROLLER_KEY" | awk '{ print $2 }')
    if awk -v blob="$ick_blob" '{ for (i = 1; i <= NF; i++) if ($i == blob) found = 1 }
        END { exit !found }' "$ick_file"; then
        say "the controller key is already authorised for root"
    else
        # Keep existing keys; make sure the new line does not glue onto an unterminated one.
        if [ -s "$ick_file" ] && [ -n "$(tail -c 1 "$ick_file")" ]; then
            printf '\n' >>"$ick_file" || die "cannot write $ick_file"
        fi
        printf '%s\n' "$UMS_CONTROLLER_KEY" >>"$ick_file" || die "cannot write $ick_file"
        say "installed the controller key in $ick_file"
    fi
    if have restorecon; then
        # SELinux (Rocky/RHEL): sshd reads only files with the ssh_home_t label.
        restorecon -R "$ick_dir" >/dev/null 2>&1 || true
    fi
}

# ------------------------------------------------------------------------ facts

# Print $1 as a JSON string: quotes, backslashes and control characters escaped.
json_str() {
    printf '%s' "$1" | awk '
        BEGIN {
            for (i = 1; i < 32; i++) ctl[sprintf("%c", i)] = sprintf("\\u%04x", i)
            printf "\""
        }
        {
            if (NR > 1) printf "\\n"
            n = length($0)
            for (i = 1; i <= n; i++) {
                c = substr($0, i, 1)
                if (c == "\\") printf "\\\\"
                else if (c == "\"") printf "\\\""
                else if (c in ctl) printf "%s", ctl[c]
                else printf "%s", c
            }
        }
        END { printf "\"" }'
}

# A whole number or 0: facts that are not numbers never reach the JSON unquoted.
num_or_zero() {
    case $1 in
    '' | *[!0-9]*) printf '0' ;;
    *) printf '%s' "$1" ;;
    esac
}

valid_hostname() {
    case $1 in
    '' | localhost | localhost.* | *[!A-Za-z0-9.-]*) return 1 ;;
    esac
    return 0
}

fact_hostname() {
    fh_name=$(hostname 2>/dev/null)
    if [ -z "$fh_name" ] && [ -r /proc/sys/kernel/hostname ]; then
        fh_name=$(cat /proc/sys/kernel/hostname)
    fi
    case $fh_name in
    *.*) ;;
    *)
        # A short name: ask the resolver for the full one. That can hang on broken DNS
        # for tens of seconds, hence only when needed and bounded where timeout exists.
        if have timeout; then
            fh_full=$(timeout 10 hostname -f 2>/dev/null)
        else
            fh_full=$(hostname -f 2>/dev/null)
        fi
        if valid_hostname "$fh_full"; then
            fh_name=$fh_full
        fi
        ;;
    esac
    printf '%s' "$fh_name"
}

fact_addresses() {
    if have ip; then
        ip -o addr show scope global 2>/dev/null | awk '{ split($4, a, "/"); print a[1] }'
    else
        hostname -I 2>/dev/null | tr ' ' '\n' | sed '/^$/d'
    fi | head -n "$MAX_ADDRESSES"
}

fact_cpus() {
    if have nproc; then
        nproc 2>/dev/null
    else
        grep -c '^processor' /proc/cpuinfo 2>/dev/null
    fi
}

fact_memory_mb() {
    awk '/^MemTotal:/ { printf "%d", $2 / 1024; exit }' /proc/meminfo 2>/dev/null
}

# One line per real file system: device, type, size, used, available (KiB), mount point,
# separated by tabs. Memory-backed and container layers are not disks.
fact_disks() {
    if df -P -k -T / >/dev/null 2>&1; then
        df -P -k -T 2>/dev/null
    else
        # No -T (not GNU df): insert a "-" type column so the fields line up.
        df -P -k 2>/dev/null | awk '
            { printf "%s -", $1; for (i = 2; i <= NF; i++) printf " %s", $i; print "" }'
    fi | awk -v max="$MAX_DISKS" '
        NR == 1 { next }
        $2 == "tmpfs" || $2 == "devtmpfs" || $2 == "overlay" || $2 == "squashfs" { next }
        $3 + 0 == 0 { next }
        {
            mount = $7
            for (i = 8; i <= NF; i++) mount = mount " " $i
            if (seen[mount]++) next
            if (++count > max) exit
            printf "%s\t%s\t%s\t%s\t%s\t%s\n", $1, $2, $3, $4, $5, mount
        }'
}

fact_host_keys() {
    fhk_count=0
    for fhk_file in /etc/ssh/ssh_host_*_key.pub; do
        [ -r "$fhk_file" ] || continue
        fhk_line=$(head -n 1 "$fhk_file")
        case $fhk_line in
        ssh-ed25519\ * | ecdsa-sha2-nistp*\ * | ssh-rsa\ *) ;;
        *) continue ;;
        esac
        fhk_count=$((fhk_count + 1))
        [ "$fhk_count" -le "$MAX_HOST_KEYS" ] || break
        printf '%s\n' "$fhk_line" | awk '{ print $1 " " $2 }'
    done
}

fact_ssh_port() {
    if [ -n "$SSH_PORT" ]; then
        printf '%s' "$SSH_PORT"
        return
    fi
    fsp_port=""
    if have sshd; then
        fsp_port=$(sshd -T 2>/dev/null | awk '$1 == "port" { print $2; exit }')
    fi
    if valid_port "$fsp_port"; then
        printf '%s' "$fsp_port"
    else
        printf '22'
    fi
}

# The portal's host (no scheme, port or path), then an IP address for it.
portal_host() {
    ph_rest=${UMS_BASE_URL#*://}
    ph_rest=${ph_rest%%/*}
    case $ph_rest in
    \[*)
        ph_rest=${ph_rest#\[}
        ph_rest=${ph_rest%%\]*}
        ;;
    *) ph_rest=${ph_rest%%:*} ;;
    esac
    printf '%s' "$ph_rest"
}

portal_ip() {
    pi_host=$(portal_host)
    case $pi_host in
    *:* | *[!0-9.]*) ;;
    *)
        printf '%s' "$pi_host"
        return
        ;;
    esac
    case $pi_host in
    *:*)
        printf '%s' "$pi_host"
        return
        ;;
    esac
    getent ahosts "$pi_host" 2>/dev/null | awk 'NR == 1 { print $1; exit }'
}

# The address this server uses to talk to the portal: the controller reaches it there.
fact_ssh_address() {
    fsa_ip=$(portal_ip)
    fsa_src=""
    if [ -n "$fsa_ip" ] && have ip; then
        fsa_src=$(ip route get "$fsa_ip" 2>/dev/null |
            awk '{ for (i = 1; i < NF; i++) if ($i == "src") { print $(i + 1); exit } }')
    fi
    if [ -z "$fsa_src" ]; then
        fsa_src=$(fact_addresses | head -n 1)
    fi
    printf '%s' "$fsa_src"
}

# ------------------------------------------------------------------------ register

WORKDIR=""
# shellcheck disable=SC2317  # called by the traps below
cleanup() {
    if [ -n "$WORKDIR" ]; then
        rm -rf "$WORKDIR"
    fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM HUP

build_payload() {
    printf '{"token":%s' "$(json_str "$TOKEN")"
    printf ',"hostname":%s' "$(json_str "$HOST_NAME")"
    printf ',"sshAddress":%s' "$(json_str "$SSH_ADDRESS")"
    printf ',"sshPort":%s' "$(num_or_zero "$PORT")"
    printf ',"osId":%s' "$(json_str "$OS_ID")"
    printf ',"osVersion":%s' "$(json_str "$OS_VERSION")"
    printf ',"osPrettyName":%s' "$(json_str "$OS_PRETTY")"
    printf ',"cpus":%s' "$(num_or_zero "$(fact_cpus)")"
    printf ',"memoryMb":%s' "$(num_or_zero "$(fact_memory_mb)")"
    printf ',"addresses":['
    bp_sep=""
    for bp_addr in $(fact_addresses); do
        printf '%s%s' "$bp_sep" "$(json_str "$bp_addr")"
        bp_sep=","
    done
    printf '],"hostKeys":['
    bp_sep=""
    while IFS= read -r bp_key; do
        [ -n "$bp_key" ] || continue
        printf '%s%s' "$bp_sep" "$(json_str "$bp_key")"
        bp_sep=","
    done <"$WORKDIR/hostkeys"
    printf '],"disks":['
    bp_sep=""
    bp_tab=$(printf '\t')
    while IFS=$bp_tab read -r bp_dev bp_type bp_size bp_used bp_avail bp_mount; do
        [ -n "$bp_mount" ] || continue
        printf '%s{"device":%s,"fstype":%s,"mount":%s,"sizeKb":%s,"usedKb":%s,"availKb":%s}' \
            "$bp_sep" "$(json_str "$bp_dev")" "$(json_str "$bp_type")" "$(json_str "$bp_mount")" \
            "$(num_or_zero "$bp_size")" "$(num_or_zero "$bp_used")" "$(num_or_zero "$bp_avail")"
        bp_sep=","
    done <"$WORKDIR/disks"
    printf ']}\n'
}

# POST the payload; prints the HTTP status, the body goes to $WORKDIR/response.
post_payload() {
    pp_url=$UMS_BASE_URL$REGISTER_PATH
    if [ "$CLIENT" = curl ]; then
        # Certificates are always verified: there is deliberately no "insecure" switch.
        set -- --silent --show-error --proto "$PROTO" --proto-redir "$PROTO" \
            --connect-timeout 20 --max-time 120 \
            --header "Content-Type: application/json" --header "Accept: application/json" \
            --data-binary "@$WORKDIR/payload" --output "$WORKDIR/response" \
            --write-out '%{http_code}'
        if [ -n "$CA_FILE" ]; then
            set -- "$@" --cacert "$CA_FILE"
        fi
        curl "$@" "$pp_url" 2>"$WORKDIR/client.err"
        return $?
    fi
    set -- --quiet --timeout=120 --tries=1 --max-redirect=0 --content-on-error \
        --server-response --output-document="$WORKDIR/response" \
        --header="Content-Type: application/json" --header="Accept: application/json" \
        --post-file="$WORKDIR/payload"
    if [ "$PROTO" = "=https" ]; then
        set -- "$@" --https-only
    fi
    if [ -n "$CA_FILE" ]; then
        set -- "$@" --ca-certificate="$CA_FILE"
    fi
    wget "$@" "$pp_url" 2>"$WORKDIR/client.err"
    pp_rc=$?
    pp_status=$(awk '$1 ~ /^HTTP\// { code = $2 } END { print code }' "$WORKDIR/client.err")
    if [ -n "$pp_status" ]; then
        printf '%s' "$pp_status"
        return 0
    fi
    return "$pp_rc"
}

# The "message" of the portal's JSON answer (enough of a parser for that one field).
response_message() {
    [ -s "$WORKDIR/response" ] || return 0
    tr -d '\n' <"$WORKDIR/response" |
        sed -n 's/.*"message"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' | head -n 1
}

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/bootstrapcore.XXXXXX") || die "cannot create a temporary directory"

install_controller_key

HOST_NAME=$(fact_hostname)
[ -n "$HOST_NAME" ] || die "cannot determine this server's host name"
PORT=$(fact_ssh_port)
SSH_ADDRESS=$(fact_ssh_address)
[ -n "$SSH_ADDRESS" ] || die "cannot determine this server's address (no route to the portal?)"
fact_host_keys >"$WORKDIR/hostkeys"
[ -s "$WORKDIR/hostkeys" ] ||
    die "no SSH host keys in /etc/ssh (is openssh-server installed and started once?)"
fact_disks >"$WORKDIR/disks"
build_payload >"$WORKDIR/payload" || die "cannot write the registration data"

say "registering $HOST_NAME ($SSH_ADDRESS, ssh port $PORT, ${OS_PRETTY:-$OS_ID $OS_VERSION}) with $UMS_BASE_URL"
STATUS=$(post_payload)
RC=$?
MESSAGE=$(response_message)
if [ "$RC" != 0 ]; then
    # The client's first line says what went wrong; the rest is its generic advice.
    ERR=$(grep -v '^[[:space:]]*HTTP/' "$WORKDIR/client.err" 2>/dev/null | sed '/^[[:space:]]*$/d' | head -n 1 | cut -c 1-300)
    case $CLIENT:$RC in
    curl:35 | curl:51 | curl:58 | curl:60 | curl:77 | curl:83 | curl:90 | wget:5)
        die "cannot verify the portal's TLS certificate${ERR:+ ($ERR)}. If the portal uses a private CA, pass --ca-file PATH."
        ;;
    esac
    die "cannot reach the portal at $UMS_BASE_URL ($CLIENT exit code $RC${ERR:+: $ERR})"
fi
case $STATUS in
201)
    say "registered as pending; approve it in the portal (it appears there within 30 s)."
    [ -z "$MESSAGE" ] || say "$MESSAGE"
    exit 0
    ;;
200)
    say "${MESSAGE:-already registered; nothing changed.}"
    exit 0
    ;;
400)
    say "the portal refused the registration data:"
    head -c 4000 "$WORKDIR/response" >&2
    printf '\n' >&2
    die "${MESSAGE:-invalid registration data}"
    ;;
*)
    die "registration refused (HTTP $STATUS): ${MESSAGE:-no explanation from the portal}"
    ;;
esac
{% endverbatim %}
