#!/usr/bin/env bash
# Install the Debian packages the test-suite needs, when they are missing:
#   mariadb-server, mariadb-client  the suite starts its own private mariadbd (bench/mariadb.py)
#   chromium                        the browser tests
#   tmux                            the CLI's terminal session test
#   wrk                             the HTTP load generator of bench/api_reads.py (its smoke test)
# A no-op when everything is present. It never starts a service: the suite runs its own server.
# Runs as root in CI; as another user it uses `sudo -n` when that works, and fails otherwise.
#
# Usage: scripts/install-test-deps.sh [--dry-run]
#   --dry-run  say what is missing and what would be run, change nothing
set -euo pipefail

readonly PROG="install-test-deps"
dry_run=0
case "${1:-}" in
    "") ;;
    --dry-run) dry_run=1 ;;
    -h | --help)
        sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "$PROG: unknown argument: $1 (try --help)" >&2
        exit 2
        ;;
esac

have_mariadb_server() { command -v mariadbd >/dev/null 2>&1 || test -x /usr/sbin/mariadbd; }
have_mariadb_client() { command -v mariadb >/dev/null 2>&1 || test -x /usr/bin/mariadb; }
have_chromium() { command -v chromium >/dev/null 2>&1; }
have_tmux() { command -v tmux >/dev/null 2>&1; }
have_wrk() { command -v wrk >/dev/null 2>&1; }

missing=()
have_mariadb_server || missing+=(mariadb-server)
have_mariadb_client || missing+=(mariadb-client)
have_chromium || missing+=(chromium)
have_tmux || missing+=(tmux)
have_wrk || missing+=(wrk)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "$PROG: nothing to install (mariadb-server, mariadb-client, chromium, tmux and wrk are present)"
    exit 0
fi

if [ "$dry_run" -eq 1 ]; then
    echo "$PROG: missing: ${missing[*]}"
    echo "$PROG: would run: apt-get update && apt-get install -y ${missing[*]}"
    exit 0
fi

if [ "$EUID" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n -- bash "$(readlink -f "${BASH_SOURCE[0]}")"
    fi
    echo "$PROG: need root to install ${missing[*]}; run this script as root or with sudo" >&2
    exit 1
fi

# Debian's maintainer scripts start a freshly installed server unless policy-rc.d forbids it
# (exit 101); both invoke-rc.d and deb-systemd-invoke honour it. Only add one for the duration
# of the install, and only if the machine has none (container images usually ship one).
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    printf '#!/bin/sh\n# added by %s while it installs packages\nexit 101\n' "$PROG" >"$policy"
    chmod 0755 "$policy"
fi

echo "$PROG: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y "${missing[@]}"
echo "$PROG: installed ${missing[*]}"
