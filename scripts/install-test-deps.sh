#!/usr/bin/env bash
# Install the Debian packages the integration tests drive as real programs:
# tinyproxy (forward proxy), nginx (reverse proxy in front of the gateway),
# prometheus (promtool + server), chromium + chromium-driver (browser tests),
# wrk (load), openssl and curl.
#
# Usage:  bash scripts/install-test-deps.sh          (as root, or via sudo)
#         bash scripts/install-test-deps.sh --check  (report what is missing, install nothing;
#                                                     exit 1 if anything is missing)
#
# Idempotent: each package is checked with `dpkg -s` first; when everything is
# already installed the script does no network access and returns at once.
# `apt-get update` runs only when something is missing.
#
# Services: the packaged nginx/tinyproxy/prometheus daemons are NOT wanted
# (the tests start their own instances on free 127.0.0.1 ports). Installation
# runs behind a policy-rc.d that forbids starting services, and any instance
# that is running afterwards is stopped, so nothing keeps ports 80/8888/9090.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PACKAGES=(tinyproxy nginx prometheus chromium chromium-driver wrk openssl curl)
SERVICES=(nginx tinyproxy prometheus)

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    if ! is_installed "$pkg"; then
        missing+=("$pkg")
    fi
done

if [[ "${1:-}" == "--check" ]]; then
    if ((${#missing[@]})); then
        echo "install-test-deps: missing: ${missing[*]}" >&2
        exit 1
    fi
    echo "install-test-deps: all test packages present"
    exit 0
fi

# Stop (and on systemd, disable) the packaged daemons of the packages this run
# installed; services of packages that were already there are left alone.
stop_services() {
    local svc bin
    local -a bins=()
    for svc in "$@"; do
        if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
            systemctl disable --now "$svc" >/dev/null 2>&1 || true
        fi
        if [[ -x "/etc/init.d/$svc" ]]; then
            "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
        fi
    done
    # Belt and braces for init-less containers: a daemon a postinst started
    # without going through invoke-rc.d. Only the packaged binaries' own pids.
    for svc in "$@"; do
        case "$svc" in
            nginx) bins+=(/usr/sbin/nginx) ;;
            tinyproxy) bins+=(/usr/bin/tinyproxy) ;;
            prometheus) bins+=(/usr/bin/prometheus) ;;
        esac
    done
    local pid
    for bin in "${bins[@]}"; do
        for pid in $(pidof "$bin" 2>/dev/null || true); do
            # Leave instances started by tests (they run with a -c/-p/--config
            # pointing at a temp dir) alone: only stop the system-config ones.
            if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -Eq '/tmp/|pytest'; then
                continue
            fi
            kill "$pid" 2>/dev/null || true
        done
    done
}

if ((${#missing[@]} == 0)); then
    echo "install-test-deps: all test packages already installed"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -n DEBIAN_FRONTEND=noninteractive bash "$0" "$@"
    fi
    echo "install-test-deps: must run as root to install: ${missing[*]}" >&2
    exit 1
fi

echo "install-test-deps: installing: ${missing[*]}"

# Forbid service starts during installation, unless a policy is already set.
POLICY=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e "$POLICY" ]]; then
    printf '#!/bin/sh\n# install-test-deps.sh: no service starts during install\nexit 101\n' >"$POLICY"
    chmod 755 "$POLICY"
    added_policy=1
fi
cleanup() {
    if ((added_policy)); then
        rm -f "$POLICY"
    fi
}
trap cleanup EXIT

apt-get -o DPkg::Lock::Timeout=300 update -q </dev/null
apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}" </dev/null

installed_services=()
for svc in "${SERVICES[@]}"; do
    for pkg in "${missing[@]}"; do
        [[ "$pkg" == "$svc" ]] && installed_services+=("$svc")
    done
done
if ((${#installed_services[@]})); then
    stop_services "${installed_services[@]}"
fi

still_missing=()
for pkg in "${PACKAGES[@]}"; do
    is_installed "$pkg" || still_missing+=("$pkg")
done
if ((${#still_missing[@]})); then
    echo "install-test-deps: still missing after install: ${still_missing[*]}" >&2
    exit 1
fi
for tool in tinyproxy nginx promtool prometheus chromium chromedriver wrk openssl curl; do
    if ! command -v "$tool" >/dev/null 2>&1 && [[ ! -x "/usr/sbin/$tool" ]]; then
        echo "install-test-deps: package installed but '$tool' not found on PATH" >&2
        exit 1
    fi
done
echo "install-test-deps: done"
