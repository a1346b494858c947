#!/usr/bin/env bash
# Verify the offline bundle on arm64 from this x86-64 machine, without changing the host kernel:
#   1. a Debian Bookworm arm64 userland from Debian's own packages (debootstrap --foreign, python3 and
#      python3-venv included, then the second stage under proot + qemu-aarch64-static; binfmt_misc is
#      never registered);
#   2. aarch64 bundles (ai-edge-litert, and tflite-runtime 2.14 + numpy<2) and host bundles with the
#      same pins, built with deploy/build_bundle.py (needs PyPI);
#   3. the bundles installed inside the userland by install.sh with no network (a private network
#      namespace with loopback only), the device bundle with --service;
#   4. edge-classify --json with the shipped int8 models on sample images from ../shared/data, inside
#      the userland as a Pi 4 (Cortex-A72) and as a Pi 5 (Cortex-A76), and on the host with the same
#      runtime and versions: labels and scores compared; then the raw int8 outputs of the runtimes'
#      reference kernels (BUILTIN_REF), which do not depend on the CPU;
#   5. the unit's edge-live command on a folder of cells, as the edge-medical user, inside the userland;
#   6. du of each virtual environment.
# The userland sees no host /proc or /sys: the TFLite runtimes' CPU detection reads a Pi's
# /proc/cpuinfo and CPU lists, written into the userland. Takes minutes (everything arm64 is emulated).
#
#   sudo deploy/verify_arm64.sh [--fresh] [--work DIR] [--samples N]
# Needs root (debootstrap), PyPI and deb.debian.org, and:
#   apt-get install debootstrap qemu-user-static proot python3-seccomp
# Writes WORK/report.txt (default build/arm64). Exit 0 when every label is equal on both sides, the
# reference kernels' outputs are bit-identical, and edge-live ran; score differences of the default
# (optimized, CPU-specific) kernels are reported, not failed.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
work=$repo/build/arm64
data=${DATA:-$repo/../shared/data}
samples=10
fresh=0
mirror=${MIRROR:-http://deb.debian.org/debian}
die() { echo "verify_arm64.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
    case "$1" in
        --fresh) fresh=1; shift ;;
        --work) [ $# -ge 2 ] || die "--work needs a folder"; work=$2; shift 2 ;;
        --samples) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--samples needs a positive number"; samples=$2; shift 2 ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[ "$(uname -m)" = x86_64 ] || die "meant for an x86-64 host (this is $(uname -m))"
[ "$(id -u)" = 0 ] || die "needs root (debootstrap); run with sudo"
for tool in debootstrap qemu-aarch64-static proot unshare; do
    command -v "$tool" >/dev/null || die "$tool not found: apt-get install debootstrap qemu-user-static proot"
done
/usr/bin/python3 -c 'import seccomp' 2>/dev/null || die "python3-seccomp not found: apt-get install python3-seccomp"
[ -d "$data/brain_mri/brain_tumor_dataset/yes" ] && [ -d "$data/cnmc/all" ] \
    || die "sample images not found under $data (set DATA=/path/to/shared/data)"
python=$(command -v python3)
[ -x "$repo/.venv/bin/python" ] && python=$repo/.venv/bin/python

mkdir -p "$work"
work=$(cd "$work" && pwd)
exec 9> "$work/.lock"
flock -n 9 || die "another verify_arm64.sh is running in $work"
rootfs=$work/rootfs
report=$work/report.txt
: > "$report"
say() { echo "$*" | tee -a "$report"; }
indent() { sed 's/^/   /' | tee -a "$report"; }
step_started=0
step() { step_started=$(date +%s); say "== $*"; }
took() { say "   took $(( $(date +%s) - step_started )) s"; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }

# Run a command in the arm64 userland: no network, the syscalls of guest_exec.py refused, a clean
# environment (no PIP_* or EDGE_* from the host), the CPU model in $cpu.
cpu=cortex-a72
guest() {
    unshare --net -- /usr/bin/python3 "$here/guest_exec.py" \
        proot -q "qemu-aarch64-static -cpu $cpu" -r "$rootfs" -w /root \
        /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 "$@"
}

# Emulate a Pi's 4 cores: the qemu CPU model, and what the Pi's kernel shows of them (cpuinfo in
# XNNPACK reads these to pick its kernels; Cortex-A76 has the dot-product instructions, A72 not).
pi_cpu() {
    local features part variant revision n list
    case "$1" in
        cortex-a72) features="fp asimd evtstrm crc32 cpuid"; part=0xd08; variant=0x0; revision=3 ;;  # Pi 4
        cortex-a76) features="fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
                    part=0xd0b; variant=0x4; revision=1 ;;  # Pi 5
        *) die "unknown CPU model $1" ;;
    esac
    mkdir -p "$rootfs/proc" "$rootfs/sys/devices/system/cpu"
    for n in 0 1 2 3; do
        printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: %s\nCPU implementer\t: 0x41\n' "$n" "$features"
        printf 'CPU architecture: 8\nCPU variant\t: %s\nCPU part\t: %s\nCPU revision\t: %s\n\n' "$variant" "$part" "$revision"
    done > "$rootfs/proc/cpuinfo"
    for list in possible present online; do echo 0-3 > "$rootfs/sys/devices/system/cpu/$list"; done
    cpu=$1
}

started=$(date +%s)
say "verify_arm64.sh $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -srm), $(nproc) cores; work folder $work"

# 1. The arm64 userland (kept between runs; --fresh rebuilds it).
if [ "$fresh" = 1 ] || [ ! -e "$rootfs/.complete" ]; then
    rm -rf "$rootfs"
    step "debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-venv bookworm (first stage, host)"
    debootstrap --foreign --arch=arm64 --variant=minbase --include=python3,python3-venv \
        bookworm "$rootfs" "$mirror" > "$work/debootstrap-1.log" 2>&1 \
        || die "debootstrap first stage failed; see $work/debootstrap-1.log"
    took
    step "debootstrap --second-stage under proot + qemu-aarch64-static (arm64 dpkg, emulated)"
    unshare --net -- /usr/bin/python3 "$here/guest_exec.py" proot -q qemu-aarch64-static -r "$rootfs" -w / \
        /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /debootstrap/debootstrap --second-stage \
        > "$work/debootstrap-2.log" 2>&1 || die "debootstrap second stage failed; see $work/debootstrap-2.log"
    touch "$rootfs/.complete"
    took
else
    say "== reusing the arm64 userland in $rootfs (--fresh rebuilds it)"
fi
pi_cpu cortex-a72
[ "$(guest uname -m)" = aarch64 ] || die "the userland does not run as aarch64"
say "   userland: $(guest sh -c '. /etc/os-release; echo $PRETTY_NAME'), $(guest uname -m), $(guest /usr/bin/python3 --version), $(du -sm "$rootfs" | cut -f1) MB"

# 2. Bundles: the device bundle, a tflite-runtime one, and host bundles with the same pins.
step "building bundles (deploy/build_bundle.py, wheels from PyPI)"
rm -rf "$work/bundles"
build() {
    "$python" "$here/build_bundle.py" --out "$work/bundles/$1" "${@:2}" > "$work/build-$1.log" 2>&1 \
        || die "bundle $1 failed; see $work/build-$1.log"
    ls "$work/bundles/$1"/*.tar.gz
}
arm_litert=$(build arm-litert --platform aarch64 --extras edge,camera)
arm_tflite=$(build arm-tflite --platform aarch64 --runtime tflite-runtime --extras '')
host_litert=$(build host-litert --platform host --extras edge)
host_tflite=$(build host-tflite --platform host --runtime tflite-runtime --extras '')
for archive in "$arm_litert" "$arm_tflite" "$host_litert" "$host_tflite"; do
    say "   $(basename "$archive") $(du -m "$archive" | cut -f1) MB, $(tar tzf "$archive" | grep -c '\.whl$') wheels"
done
took

# Sample images, the same files on both sides.
rm -rf "$work/samples" "$rootfs/root/samples" "$rootfs/root/bundles"
"$python" - "$data" "$work/samples" "$samples" <<'EOF'
import shutil, sys
from pathlib import Path
data, out, count = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
for kind, folders in (("brain", ["brain_mri/brain_tumor_dataset/yes", "brain_mri/brain_tumor_dataset/no"]),
                      ("cnmc", ["cnmc/all", "cnmc/hem"])):
    for folder in folders:
        files = sorted(p for p in (data / folder).iterdir() if p.is_file())
        for path in files[::max(1, len(files) // count)][:count]:  # spread over the folder, the same every run
            target = out / kind / f"{Path(folder).name}_{path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
EOF
cp -r "$work/samples" "$rootfs/root/samples"
mkdir -p "$rootfs/root/bundles"
for archive in "$arm_litert" "$arm_tflite"; do tar xzf "$archive" -C "$rootfs/root/bundles"; done
arm_litert_dir=/root/bundles/$(basename "$arm_litert" .tar.gz)
arm_tflite_dir=/root/bundles/$(basename "$arm_tflite" .tar.gz)
say "   samples: $(ls "$work/samples/brain" | wc -l) brain MRI, $(ls "$work/samples/cnmc" | wc -l) C-NMC cells"

# 3. Install inside the userland, offline.
rm -rf "$rootfs/opt/edge-medical" "$rootfs/opt/edge-only-litert" "$rootfs/opt/edge-only-tflite"
say "   network in the userland: $(guest /usr/bin/python3 -c 'import socket
try:
    socket.create_connection(("deb.debian.org", 80), 5); print("REACHABLE")
except OSError as error:
    print(f"none ({error})")')"
step "install.sh --service (edge,camera; ai-edge-litert) in the arm64 userland, no network"
guest "$arm_litert_dir/install.sh" --service > "$work/install-arm-litert.log" 2>&1 \
    || { indent < "$work/install-arm-litert.log"; die "install failed; see $work/install-arm-litert.log"; }
indent < "$work/install-arm-litert.log"
took
step "install.sh --extras edge (edge-only, ai-edge-litert) in the arm64 userland"
guest "$arm_litert_dir/install.sh" --prefix /opt/edge-only-litert --extras edge > "$work/install-arm-edge-litert.log" 2>&1 \
    || { indent < "$work/install-arm-edge-litert.log"; die "install failed; see $work/install-arm-edge-litert.log"; }
indent < "$work/install-arm-edge-litert.log"
took
step "install.sh (edge-only, tflite-runtime 2.14 + numpy<2) in the arm64 userland"
guest "$arm_tflite_dir/install.sh" --prefix /opt/edge-only-tflite > "$work/install-arm-edge-tflite.log" 2>&1 \
    || { indent < "$work/install-arm-edge-tflite.log"; die "install failed; see $work/install-arm-edge-tflite.log"; }
indent < "$work/install-arm-edge-tflite.log"
took
say "   service files: $(cd "$rootfs" && ls -d etc/systemd/system/edge-live.service etc/edge-medical/* var/lib/edge-medical | tr '\n' ' ')"
say "   service user: $(guest id edge-medical)"

# Host environments from the host bundles (same versions, same pins), with the same installer.
step "install.sh of the host bundles on this x86-64 machine (/usr/bin/python3)"
rm -rf "$work/host"
for pair in "litert:$host_litert" "tflite:$host_tflite"; do
    name=${pair%%:*}; archive=${pair#*:}
    mkdir -p "$work/host/$name"
    tar xzf "$archive" -C "$work/host/$name"
    "$work/host/$name"/edge-medical-*/install.sh --prefix "$work/host/$name/opt" --python /usr/bin/python3 \
        > "$work/install-host-$name.log" 2>&1 || die "host install failed; see $work/install-host-$name.log"
done
took

# 4. Classify on both sides, compare.
step "edge-classify --json, shipped int8 models: arm64 (emulated Pi 4 and Pi 5 CPUs) and x86-64"
mkdir -p "$work/results"
for runtime in litert tflite; do
    for pair in brain:brain_int8 cnmc:leukemia_int8; do
        set_name=${pair%%:*}; model=${pair#*:}
        timing=""
        for model_cpu in cortex-a72 cortex-a76; do
            pi_cpu "$model_cpu"
            t0=$(ms)
            guest "/opt/edge-only-$runtime/current/venv/bin/edge-classify" --model "$model" --json "/root/samples/$set_name" \
                > "$work/results/arm64-$model_cpu-$runtime-$model.jsonl" 2> "$work/results/arm64-$model_cpu-$runtime-$model.err" || true
            timing="$timing arm64 $model_cpu $(( $(ms) - t0 )) ms,"
        done
        pi_cpu cortex-a72
        t0=$(ms)
        env -i PATH=/usr/bin:/bin HOME="$work" "$work/host/$runtime/opt/current/venv/bin/edge-classify" --model "$model" \
            --json "$work/samples/$set_name" > "$work/results/x86_64-$runtime-$model.jsonl" 2> "$work/results/x86_64-$runtime-$model.err" || true
        say "   $runtime $model, $(ls "$work/samples/$set_name" | wc -l) images, whole command:$timing x86-64 $(( $(ms) - t0 )) ms"
    done
done
# install.sh removes pip from the venv: the versions of the venv's own packages come from importlib.metadata
freeze='import sysconfig; from importlib import metadata
print(*(d.metadata["Name"] + "==" + d.version for d in metadata.distributions(path=[sysconfig.get_path("purelib")])), sep="\n")'
for runtime in litert tflite; do
    say "   versions ($runtime) arm64: $(guest /opt/edge-only-$runtime/current/venv/bin/python -c "$freeze" 2>/dev/null | grep -iE '^(ai-edge-litert|tflite-runtime|numpy|pillow)==' | tr '\n' ' ')"
    say "   versions ($runtime) x86-64: $("$work/host/$runtime/opt/current/venv/bin/python" -c "$freeze" 2>/dev/null | grep -iE '^(ai-edge-litert|tflite-runtime|numpy|pillow)==' | tr '\n' ' ')"
done
took

step "raw int8 outputs with the reference kernels (OpResolverType.BUILTIN_REF), arm64 (Cortex-A72) and x86-64"
read -r -d '' reference_code <<'EOF' || true
import importlib, json, sys
from pathlib import Path
from edge.images import load_image
from edge.interpreter import interpreter_class, quantize
from edge.metadata import read_metadata
from edge.model_store import resolve_model
from edge.preprocess import preprocess
runtime, cls = interpreter_class()
path = resolve_model(sys.argv[1])
spec = read_metadata(path)["preprocessing"]
interpreter = cls(model_path=str(path),
                  experimental_op_resolver_type=importlib.import_module(cls.__module__).OpResolverType.BUILTIN_REF)
interpreter.allocate_tensors()
inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
for image in sorted(Path(sys.argv[2]).iterdir()):
    interpreter.set_tensor(inp["index"], quantize(preprocess(load_image(image), spec)[None], inp))
    interpreter.invoke()
    print(json.dumps({"path": image.name, "runtime": runtime, "output": interpreter.get_tensor(out["index"]).ravel().tolist()}))
EOF
pi_cpu cortex-a72
for runtime in litert tflite; do
    for pair in brain:brain_int8 cnmc:leukemia_int8; do
        set_name=${pair%%:*}; model=${pair#*:}
        guest "/opt/edge-only-$runtime/current/venv/bin/python" -c "$reference_code" "$model" "/root/samples/$set_name" \
            > "$work/results/reference-arm64-$runtime-$model.jsonl" 2> "$work/results/reference-arm64-$runtime-$model.err" || true
        env -i PATH=/usr/bin:/bin HOME="$work" "$work/host/$runtime/opt/current/venv/bin/python" -c "$reference_code" "$model" \
            "$work/samples/$set_name" > "$work/results/reference-x86_64-$runtime-$model.jsonl" \
            2> "$work/results/reference-x86_64-$runtime-$model.err" || true
    done
done
took
compare_status=0
"$python" - "$work/results" > "$work/compare.txt" <<'EOF' || compare_status=1
import json, sys
from pathlib import Path
results = Path(sys.argv[1])

def load(path):
    return {Path(row["path"]).name: row for row in map(json.loads, path.read_text().splitlines())}

status = 0
for runtime in ("litert", "tflite"):
    for model in ("brain_int8", "leukemia_int8"):
        x86 = load(results / f"x86_64-{runtime}-{model}.jsonl")
        for cpu in ("cortex-a72", "cortex-a76"):
            arm = load(results / f"arm64-{cpu}-{runtime}-{model}.jsonl")
            errors = [r for r in (*arm.values(), *x86.values()) if "error" in r]
            if not arm or set(arm) != set(x86) or errors:
                print(f"{runtime} {model} arm64 {cpu}: INCOMPLETE (arm64 {len(arm)}, x86-64 {len(x86)} results, "
                      f"{len(errors)} errors; see {results}/*.err)")
                status = 1
                continue
            labels = sum(arm[n]["label"] == x86[n]["label"] for n in arm)
            scores = sum(arm[n]["probabilities"] == x86[n]["probabilities"] for n in arm)
            diff = max(abs(arm[n]["probabilities"][k] - x86[n]["probabilities"][k]) for n in arm for k in arm[n]["probabilities"])
            verdict = ("labels and scores EQUAL" if labels == scores == len(arm) else
                       "labels EQUAL, scores DIFFER" if labels == len(arm) else "labels DIFFER")
            print(f"{runtime} {model} arm64 {cpu} vs x86-64: {len(arm)} images, labels equal {labels}/{len(arm)}, "
                  f"scores equal {scores}/{len(arm)}, max |score difference| {diff:.6f}: {verdict}")
            for name in sorted(arm):
                if arm[name]["probabilities"] != x86[name]["probabilities"] or arm[name]["label"] != x86[name]["label"]:
                    print(f"   {name}: arm64 {arm[name]['label']} {arm[name]['probability']:.6f}, "
                          f"x86-64 {x86[name]['label']} {x86[name]['probability']:.6f}")
            status |= labels != len(arm)
        arm, x86 = (load(results / f"reference-{side}-{runtime}-{model}.jsonl") for side in ("arm64", "x86_64"))
        same = sum(arm[n]["output"] == x86[n]["output"] for n in arm if n in x86)
        ok = bool(arm) and set(arm) == set(x86) and same == len(arm)
        print(f"{runtime} {model} reference kernels arm64 vs x86-64: raw int8 outputs identical {same}/{len(x86)}: "
              f"{'EQUAL' if ok else 'DIFFERENT'}")
        status |= not ok
sys.exit(status)
EOF
indent < "$work/compare.txt"

# 5. The unit's command (edge-live.env's settings, a folder source) as the service user.
step "edge-live as edge-live.service runs it, as user edge-medical, 4 cell images (arm64, emulated)"
rm -rf "$rootfs/var/lib/edge-medical/frames"
mkdir -p "$rootfs/var/lib/edge-medical/frames"
cp "$work/samples/cnmc/"* "$rootfs/var/lib/edge-medical/frames/"
chown -R --reference="$rootfs/var/lib/edge-medical" "$rootfs/var/lib/edge-medical/frames"
rm -f "$rootfs/var/lib/edge-medical/results.jsonl"
# systemd's rules: ${VAR} is one argument ("${VAR}" in sh), $VAR is split at whitespace (as in sh).
# The wrapper reads the environment file as root and switches to the service user in its last exec
# (under proot, a process that is not root cannot exec another program: EACCES).
exec_start=$(sed -n 's/^ExecStart=//p' "$rootfs/etc/systemd/system/edge-live.service" | sed 's/\${\([A-Za-z_]*\)}/"${\1}"/g')
{
    echo '#!/bin/sh'
    echo '# edge-live.service: ExecStart with /etc/edge-medical/edge-live.env, a folder replayed until 4 frames are classified'
    echo 'while IFS="=" read -r key value; do'
    echo '    case "$key" in ""|"#"*) continue ;; esac'
    echo '    export "$key=$value"'
    echo 'done < /etc/edge-medical/edge-live.env'
    echo 'export EDGE_SOURCE=/var/lib/edge-medical/frames EDGE_LIVE_ARGS="$EDGE_LIVE_ARGS --max-frames 4 --fps 0 --loop"'
    echo 'export HOME=/var/lib/edge-medical'
    echo 'cd /var/lib/edge-medical'
    echo "exec setpriv --reuid=edge-medical --regid=edge-medical --init-groups $exec_start"
} > "$rootfs/usr/local/bin/edge-live-unit-check"
chmod 0755 "$rootfs/usr/local/bin/edge-live-unit-check"
live_status=0
guest /usr/local/bin/edge-live-unit-check > "$work/edge-live.log" 2>&1 || live_status=$?
frames=$(grep -c '"frame"' "$rootfs/var/lib/edge-medical/results.jsonl" 2>/dev/null || true)
say "   exit $live_status, ${frames:-0} frames in /var/lib/edge-medical/results.jsonl (owner $(guest stat -c %U /var/lib/edge-medical/results.jsonl 2>/dev/null || echo none)); log $work/edge-live.log:"
tail -n 3 "$work/edge-live.log" | indent
took

# 6. Sizes.
step "installed sizes (du -sb of each venv; MB = 10^6 bytes)"
for prefix in edge-only-litert edge-only-tflite edge-medical; do
    venv=$rootfs/opt/$prefix/current/venv
    site=$(echo "$venv"/lib/python3.*/site-packages)
    total=$(du -sb "$venv" | cut -f1)
    # install.sh removes pip and setuptools: du then finds none of them (exit 1), and the total of nothing is 0
    tooling=$( (du -scb "$site"/pip "$site"/pip-* "$site"/setuptools "$site"/setuptools-* "$site"/_distutils_hack 2>/dev/null || true) | tail -1 | cut -f1)
    say "   /opt/$prefix: $(( total / 1000000 )) MB; pip+setuptools $(( tooling / 1000000 )) MB of it; without them $(( (total - tooling) / 1000000 )) MB"
done
say "   largest in /opt/edge-only-litert: $(du -sb "$rootfs"/opt/edge-only-litert/current/venv/lib/python3.*/site-packages/* | sort -rn | head -6 | awk '{n = split($2, p, "/"); printf "%s %d MB; ", p[n], $1 / 1e6}')"
took

say "== total $(( $(date +%s) - started )) s; report $report"
if [ "$compare_status" != 0 ] || [ "$live_status" != 0 ] || [ "${frames:-0}" -lt 4 ]; then
    say "RESULT: differences or failures, see above"
    exit 1
fi
say "RESULT: labels equal on arm64 and x86-64 for both runtimes, models and CPU models; reference kernels bit-identical; edge-live ran as the service user (score differences of the default kernels, if any, are listed above)"
