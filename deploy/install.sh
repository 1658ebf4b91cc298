#!/usr/bin/env bash
# Install basisd from this checkout: the basisd system user, a virtualenv at /opt/basisd/venv with the package,
# the catalog at /opt/basisd/configs, /etc/basisd (config, env file, credentials) and the systemd units.
# Run it again at any time (after a git pull, say): it reinstalls the package and the shipped files and keeps
# what the operator owns (/etc/basisd/basisd.yaml, basisd.env and every secret).
#
#   sudo deploy/install.sh                     install on this host
#   deploy/install.sh --dry-run                print what it would do; change nothing
#   BASISD_ROOT=/tmp/stage deploy/install.sh   install below another root (packaging, tests): no user, no
#                                              chown and no systemctl there, each skip said out loud
#
# Options: --root DIR (as BASISD_ROOT), --python PY (the venv's interpreter, Python >= 3.11; default python3,
# or BASISD_PYTHON), --dry-run, --help. pip reads its own PIP_* variables (PIP_INDEX_URL, PIP_NO_DEPS, ...).
set -euo pipefail
# Whatever the caller's umask, the venv and catalog must be readable by the basisd user; private files get
# their modes explicitly below.
umask 022

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=${BASISD_ROOT:-/}
PYTHON=${BASISD_PYTHON:-python3}
DRY_RUN=0

usage() { sed -n '2,13s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
say() { printf 'basisd install: %s\n' "$*"; }
did() { [ "$DRY_RUN" = 1 ] || say "$@"; }  # reports a change, which a dry run did not make
die() { printf 'basisd install: error: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case $1 in
        --root) [ $# -ge 2 ] || die "--root needs a directory"; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#--root=}; shift ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; PYTHON=$2; shift 2 ;;
        --python=*) PYTHON=${1#--python=}; shift ;;
        --dry-run|-n) DRY_RUN=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

case $ROOT in
    /*) ;;
    *) die "the root must be an absolute path, not '$ROOT'" ;;
esac
ROOT=${ROOT%/}          # "/" becomes "", so "$ROOT/etc" is /etc
ON_HOST=0
[ -z "$ROOT" ] && ON_HOST=1

OPT=$ROOT/opt/basisd
VENV=$OPT/venv
ETC=$ROOT/etc/basisd
UNITS=$ROOT/etc/systemd/system
# What the installed config names, whatever the install root.
CATALOG_AT_RUNTIME=/opt/basisd/configs
CONTROL_SOCKET_AT_RUNTIME=/run/basisd/control.sock

# Every change goes through run: --dry-run prints it instead.
run() {
    if [ "$DRY_RUN" = 1 ]; then
        printf '[dry-run]'; printf ' %q' "$@"; printf '\n'
    else
        "$@"
    fi
}

# install -d with an owner only on the host (below another root the invoking user owns everything).
make_dir() {  # mode owner:group path
    if [ "$ON_HOST" = 1 ]; then
        run install -d -m "$1" -o "${2%:*}" -g "${2#*:}" "$3"
    else
        run install -d -m "$1" "$3"
    fi
}

copy_if_absent() {  # mode owner:group source target
    if [ -e "$4" ]; then
        say "kept $4 (exists)"
    elif [ "$ON_HOST" = 1 ]; then
        run install -m "$1" -o "${2%:*}" -g "${2#*:}" "$3" "$4"; did "created $4"
    else
        run install -m "$1" "$3" "$4"; did "created $4"
    fi
}

# --- preconditions --------------------------------------------------------------------------------------

if [ "$ON_HOST" = 1 ] && [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
    die "run as root (sudo), or set BASISD_ROOT / --root to install below another directory"
fi
command -v "$PYTHON" >/dev/null || die "no interpreter '$PYTHON' (use --python or BASISD_PYTHON)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than Python 3.11"
if [ ! -f "$SRC/pyproject.toml" ] || [ ! -f "$SRC/systemd/basisd.service" ]; then
    die "$SRC is not a basisd checkout"
fi
[ "$ON_HOST" = 1 ] || say "installing below $ROOT (not /)"

# --- the user -------------------------------------------------------------------------------------------

if [ "$ON_HOST" = 0 ]; then
    say "skipped: creating the basisd user and group (the root is $ROOT, not /)"
else
    NOLOGIN=/usr/sbin/nologin
    [ -x "$NOLOGIN" ] || NOLOGIN=/sbin/nologin
    [ -x "$NOLOGIN" ] || NOLOGIN=/bin/false
    if getent group basisd >/dev/null; then say "kept group basisd (exists)"; else run groupadd --system basisd; fi
    if getent passwd basisd >/dev/null; then
        say "kept user basisd (exists)"
    else
        run useradd --system --gid basisd --home-dir /var/lib/basisd --no-create-home --shell "$NOLOGIN" \
            --comment "basisd strategy daemon" basisd
    fi
fi

# --- /opt/basisd: the virtualenv and the shipped files (replaced on every run) ------------------------

make_dir 0755 root:root "$OPT"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
then
    say "kept virtualenv $VENV (exists)"
else
    run "$PYTHON" -m venv "$VENV"
fi

# pip builds in the source tree (build/, *.egg-info): build from a copy so the checkout stays as it was.
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/basisd-install.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
tar -C "$SRC" -cf - --exclude=./.git --exclude=./.venv --exclude=./build --exclude=./dist --exclude=./tests \
    --exclude=./backtest-out --exclude='*.egg-info' --exclude=__pycache__ --exclude='.*_cache' \
    --exclude=.hypothesis . | tar -C "$STAGE" -xf -
run "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$STAGE"
did "installed basisd into $VENV"

run rm -rf "$OPT/configs"
run cp -R "$SRC/configs" "$OPT/configs"
run chmod -R u=rwX,go=rX "$OPT/configs"
run install -m 0644 "$SRC/README.md" "$OPT/README.md"
did "installed the catalog ($OPT/configs) and README.md"

# --- /etc/basisd: the operator's files, created once and never overwritten ----------------------------

make_dir 0750 root:basisd "$ETC"
# The default config: the synthetic replay (no keys, no network), so a fresh install can be started and
# watched (READY=1, watchdog, metrics, halt) before a live config replaces it. It names the shipped catalog,
# and the control socket where the unit's RuntimeDirectory= puts it: `basisd halt --config` runs in a shell,
# which has no $RUNTIME_DIRECTORY to find it by.
CONFIG_TEMPLATE=$STAGE/basisd.yaml.template
{
    printf '# /etc/basisd/basisd.yaml, from configs/replay.yaml by deploy/install.sh (never overwritten).\n'
    printf '# Validate edits with: /opt/basisd/venv/bin/basisd check-config /etc/basisd/basisd.yaml\n'
    awk -v catalog="$CATALOG_AT_RUNTIME" -v socket="$CONTROL_SOCKET_AT_RUNTIME" '
        { print }
        /^strategy:[[:space:]]*$/ { print "  catalog_dir: " catalog "   # the shipped catalog" }
        /^control:[[:space:]]*$/ { print "  socket: " socket; has_control = 1 }
        END { if (!has_control) { print "control:"; print "  socket: " socket "   # the unit'"'"'s RuntimeDirectory" } }
    ' "$SRC/configs/replay.yaml"
} >"$CONFIG_TEMPLATE"
grep -q "catalog_dir: $CATALOG_AT_RUNTIME" "$CONFIG_TEMPLATE" || die "configs/replay.yaml has no strategy: section"
copy_if_absent 0640 root:basisd "$CONFIG_TEMPLATE" "$ETC/basisd.yaml"
# systemd reads the env file as root before dropping privileges: the daemon's user never needs to.
copy_if_absent 0600 root:root "$SRC/deploy/basisd.env.example" "$ETC/basisd.env"
# LoadCredential= reads these as root; the basisd user can never list them, let alone read them.
make_dir 0700 root:root "$ETC/credentials"
make_dir 0700 root:root "$ETC/credentials/basisd"

# --- the units ------------------------------------------------------------------------------------------

make_dir 0755 root:root "$UNITS"
run install -m 0644 "$SRC/systemd/basisd.service" "$SRC/systemd/basisd@.service" "$UNITS/"
did "installed basisd.service and basisd@.service into $UNITS"

if [ "$ON_HOST" = 0 ]; then
    say "skipped: systemctl daemon-reload (the root is $ROOT, not /)"
elif [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null; then
    say "skipped: systemctl daemon-reload (systemd is not running this host); run it once it does"
else
    run systemctl daemon-reload
fi

if [ "$DRY_RUN" = 1 ]; then
    say "dry run: nothing was changed"
else
    say "done. Next: put secrets in $ETC/credentials/basisd/ (binance_api_key, ...), check the config with"
    say "  /opt/basisd/venv/bin/basisd check-config /etc/basisd/basisd.yaml, then systemctl enable --now basisd"
fi
