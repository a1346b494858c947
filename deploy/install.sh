#!/usr/bin/env bash
# Install edge-medical from this offline bundle, with no network:
#   1. verify every file of the bundle against SHA256SUMS (and refuse files it does not list);
#   2. create PREFIX/<bundle id>/venv (--system-site-packages, so the OS's picamera2 is seen),
#      pip-install the bundle's wheels into it with --no-index, then remove pip and setuptools from it;
#   3. load the shipped model once (smoke test), then point PREFIX/current at the new version.
# With --service (root): the edge-medical user (in group video), /var/lib/edge-medical,
# /etc/edge-medical/{edge-live.env,config.json} (kept when they exist) and edge-live.service,
# enabled and (re)started when systemd runs.
#
#   sudo ./install.sh --service              # a Raspberry Pi
#   ./install.sh --prefix ~/edge-medical     # anywhere, no root, no service
#   ./install.sh --verify-only               # check the bundle and stop
set -euo pipefail

usage="usage: install.sh [--prefix DIR] [--python PYTHON] [--extras LIST] [--service] [--force] [--verify-only]"
here=$(cd "$(dirname "$0")" && pwd)
prefix=/opt/edge-medical
python=/usr/bin/python3
extras=
service=0
force=0
verify_only=0

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || die "--prefix needs a folder"; prefix=$2; shift 2 ;;
        --python) [ $# -ge 2 ] || die "--python needs an interpreter"; python=$2; shift 2 ;;
        --extras) [ $# -ge 2 ] || die "--extras needs a list (e.g. edge or edge,camera)"; extras=$2; extras_set=1; shift 2 ;;
        --service) service=1; shift ;;
        --force) force=1; shift ;;
        --verify-only) verify_only=1; shift ;;
        -h|--help) echo "$usage"; exit 0 ;;
        *) echo "$usage" >&2; die "unknown option $1" ;;
    esac
done

# 1. Verify before anything else is done.
cd "$here"
[ -f SHA256SUMS ] && [ -f BUNDLE.txt ] || die "$here is not a complete bundle (SHA256SUMS or BUNDLE.txt missing); nothing installed"
command -v sha256sum >/dev/null || die "sha256sum not found (coreutils); nothing installed"
odd=$(find . -mindepth 1 ! -type f ! -type d -printf '%P ')
[ -z "$odd" ] || die "refusing to install: links or special files in the bundle: ${odd% }; nothing installed"
unlisted=$(find . -type f ! -path ./SHA256SUMS -printf '%P\n' \
    | awk 'NR == FNR { listed[substr($0, 67)]; next } !($0 in listed)' SHA256SUMS - | tr '\n' ' ')
[ -z "$unlisted" ] || die "refusing to install: files not in SHA256SUMS: ${unlisted% }; nothing installed"
if ! checked=$(sha256sum --check --strict --quiet SHA256SUMS 2>&1); then
    failed=$(printf '%s\n' "$checked" | sed -n 's/: FAILED.*$//p' | tr '\n' ' ')
    failed=${failed% }
    die "refusing to install: SHA-256 mismatch in ${failed:-SHA256SUMS (malformed)} (the bundle was modified or is corrupt); nothing installed"
fi
field() { sed -n "s/^$1=//p" BUNDLE.txt; }
id=$(field id); machine=$(field machine); pyver=$(field python); bundle_extras=$(field extras)
[ -n "$id" ] && [ -n "$machine" ] && [ -n "$pyver" ] || die "BUNDLE.txt lacks id, machine or python"
echo "bundle $id ($machine, Python $pyver): all $(wc -l < SHA256SUMS) files match SHA256SUMS"
[ "$verify_only" = 0 ] || exit 0

# 2. Check the target before touching it.
[ -n "${extras_set:-}" ] || extras=$bundle_extras
for extra in ${extras//,/ }; do
    case ",$bundle_extras," in *",$extra,"*) ;; *) die "extra '$extra' is not in this bundle (it has: ${bundle_extras:-none})" ;; esac
done
command -v "$python" >/dev/null || die "$python not found: apt install python3 python3-venv"
found=$("$python" -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.machine())') \
    || die "$python does not run"
[ "$found" = "$pyver $machine" ] || die "this bundle is for Python $pyver on $machine; $python is Python ${found/ / on }"
"$python" -c 'import ensurepip, venv' 2>/dev/null || die "$python cannot create virtual environments: apt install python3-venv"
if [ "$service" = 1 ]; then
    [ "$(id -u)" = 0 ] || die "--service needs root (sudo)"
fi
target=$prefix/$id
if [ -e "$target" ]; then
    [ "$force" = 1 ] || die "$target exists (this bundle is installed); --force reinstalls it"
    rm -rf "$target"
fi

# 3. Install into a fresh versioned folder; remove it again if anything fails.
mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd); target=$prefix/$id
trap 'status=$?; if [ $status != 0 ]; then rm -rf "$target"; echo "install.sh: failed; $target removed, $prefix/current unchanged" >&2; fi' EXIT
echo "installing into $target"
"$python" -m venv --system-site-packages "$target/venv"
requirement="edge-medical${extras:+[$extras]}==$(field version)"
# --isolated: no pip.conf or PIP_* variable can add an index; --ignore-installed: the venv gets the
# bundle's exact wheels even where the OS has another version (e.g. Debian's numpy).
"$target/venv/bin/python" -m pip --isolated install --no-index --find-links "$here/wheels" --ignore-installed \
    --no-warn-script-location --disable-pip-version-check -q "$requirement" $(sed 1d requirements.txt)
# pip (and setuptools before Python 3.12) only put the wheels in: removed, 23 MB less with Python 3.11
# (docs/DEPLOY.md). Every bundle gets a new venv, so this one is never installed into again.
# setuptools first: pip removes itself last.
site=$("$target/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
for tool in setuptools pip; do
    [ ! -d "$site/$tool" ] || "$target/venv/bin/python" -m pip --isolated uninstall -y -q "$tool"
done
cp BUNDLE.txt SHA256SUMS requirements.txt "$target/"
cp -r systemd etc "$target/"
smoke=$("$target/venv/bin/python" -c '
import numpy as np
from edge.classifier import Classifier
with Classifier("leukemia_int8", check_quality=False) as c:
    r = c.classify(np.zeros((96, 96, 3), np.uint8))
print(f"{c.model_path.name} loads with {c.runtime} (numpy {np.__version__})")') \
    || die "the installed environment cannot run the shipped model (see the error above)"
echo "smoke test: $smoke"
if [ "$service" = 1 ]; then
    [ -x "$target/venv/bin/edge-live" ] || die "this bundle has no edge-live command, so --service cannot run it"
    "$target/venv/bin/python" -c 'import cv2' 2>/dev/null \
        || die "--service needs the camera extra (edge-live draws its overlay with OpenCV): a bundle with --extras edge,camera"
fi
previous=$(readlink "$prefix/current" 2>/dev/null || true)
ln -sfn "$id" "$prefix/current.new"
mv -Tf "$prefix/current.new" "$prefix/current"
trap - EXIT
echo "$prefix/current -> $id${previous:+ (was $previous; roll back: sudo ln -sfn $previous $prefix/current)}"

if [ "$service" = 1 ]; then
    getent group video >/dev/null || groupadd --system video
    if ! id -u edge-medical >/dev/null 2>&1; then
        useradd --system --user-group --home-dir /var/lib/edge-medical --no-create-home \
            --shell /usr/sbin/nologin --comment "edge-medical live classification" edge-medical
    fi
    usermod -a -G video edge-medical
    install -d -m 0750 -o edge-medical -g edge-medical /var/lib/edge-medical
    install -d -m 0755 /etc/edge-medical
    for conf in edge-live.env config.json edge-dicom.env; do  # the operator's settings survive updates
        [ -e "etc/$conf" ] || continue
        [ -e "/etc/edge-medical/$conf" ] || install -m 0644 "etc/$conf" "/etc/edge-medical/$conf"
    done
    if [ -e systemd/edge-dicom.service ]; then  # the DICOM node: installed, enabled by the operator
        sed "s#/opt/edge-medical/#$prefix/#g" systemd/edge-dicom.service > /etc/systemd/system/edge-dicom.service
        chmod 0644 /etc/systemd/system/edge-dicom.service
        echo "edge-dicom.service installed (a bundle with the dicom extra runs it): systemctl enable --now edge-dicom"
    fi
    sed "s#/opt/edge-medical/#$prefix/#g" systemd/edge-live.service > /etc/systemd/system/edge-live.service
    chmod 0644 /etc/systemd/system/edge-live.service
    if [ -d /run/systemd/system ]; then
        systemctl daemon-reload
        systemctl enable edge-live.service
        systemctl restart edge-live.service
        echo "edge-live.service enabled and (re)started: journalctl -u edge-live -f"
    else
        echo "systemd is not running here: the unit is installed; start it later with systemctl enable --now edge-live"
    fi
fi
echo "done: $prefix/current/venv/bin/edge-classify --help"
