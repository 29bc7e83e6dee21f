#!/usr/bin/env bash
# make bench: kiln and rootless buildah build the same Dockerfiles side by
# side, each in private stores, interleaved (kiln, buildah, kiln, buildah…),
# and we print medians of wall time, peak memory and the ratio kiln/buildah
# (below 1 means kiln is faster) against issue 11's targets. The table, the
# machine and the command are also written into a marked section of
# BENCHMARKS.md.
#
# usage: bench/bench.sh KILN [WORKDIR]
# env:   BENCH_CASES=a,b,…   cases to run (default: all; see CASES below)
#        BENCH_REPS=N        runs per expensive case (default 3)
#        BENCH_REPS_CHEAP=N  runs per cheap case: cached11, runtrue10 (default 5)
#        BENCH_KEEP=1        keep WORKDIR (stores, images, logs) afterwards
#        BENCH_MD=FILE       where to write the results ("" = nowhere; default BENCHMARKS.md)
#        BENCH_USER=NAME     the unprivileged user both tools run as when we
#                            are root (default kilnbench, created if missing)
#        BENCH_KILN_FLAGS    extra flags for every `kiln build` (e.g. --compression-level 1)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kiln=$(realpath "$1")
work=${2:-target/bench}
reps=${BENCH_REPS:-3}
reps_cheap=${BENCH_REPS_CHEAP:-5}
md=${BENCH_MD-BENCHMARKS.md}
ALL_CASES="cached11 cold11 changed11 runtrue10 files30k rand512 text256 ctx200 cmulti copyfrom apt"
cases=${BENCH_CASES:-$ALL_CASES}
cases=${cases//,/ }
started_at=$(date +%s)
command_line="${BENCH_CASES:+BENCH_CASES=$BENCH_CASES }${BENCH_REPS:+BENCH_REPS=$BENCH_REPS }make bench"

need() { command -v "$1" >/dev/null || { echo "bench: $1 is missing: apt-get install $2" >&2; exit 1; }; }
need buildah buildah; need python3 python3; need setpriv util-linux
[ -x /bin/busybox ] || { echo "bench: /bin/busybox is missing: apt-get install busybox-static" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing: apt-get install time" >&2; exit 1; }
for c in $cases; do
    case " $ALL_CASES " in *" $c "*) ;; *) echo "bench: unknown case $c; cases: $ALL_CASES" >&2; exit 2;; esac
done

wipe() { # wipe DIR…: remove dirs that may hold files owned by subordinate ids
    if [ "$(id -u)" = 0 ]; then rm -rf "$@"; else
        rm -rf "$@" 2>/dev/null || buildah unshare rm -rf "$@"
    fi
}
rm -rf "$work" 2>/dev/null || wipe "$work"
mkdir -p "$work"
work=$(realpath "$work")
cleanup() {
    if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "bench: kept $work"; else wipe "$work"; fi
}
trap cleanup EXIT

# Both tools run as an unprivileged user: rootless is what kiln is for, and
# buildah as root would not be rootless buildah.
if [ "$(id -u)" = 0 ]; then
    user=${BENCH_USER:-kilnbench}
    if ! id -u "$user" >/dev/null 2>&1; then
        useradd -m -s /bin/sh -U "$user"
    fi
    for f in /etc/subuid /etc/subgid; do
        if ! grep -q "^$user:" "$f"; then
            # One 65536-id range past every range the file already hands out.
            start=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' "$f")
            echo "$user:$start:65536" >> "$f"
        fi
    done
    chown "$user:" "$work"
    runas=(setpriv --reuid "$user" --regid "$user" --init-groups --)
    measure_as=(--user "$user")
else
    user=$(id -un)
    runas=()
    measure_as=()
fi
mkdir -p "$work/home" "$work/xdg"
chmod 700 "$work/xdg"
[ "$(id -u)" = 0 ] && chown "$user:" "$work/home" "$work/xdg"
# What every tool invocation runs under: the user, a clean environment.
user_env=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    HOME="$work/home" XDG_RUNTIME_DIR="$work/xdg" TMPDIR="$work/home" BUILDAH_ISOLATION=chroot)
as_user=("${runas[@]}" env -i "${user_env[@]}")
# The same for a timed run, set up by measure.py itself: a wrapper's start-up
# (setpriv, env, bash) would be a third of a cached rebuild's time.
for e in "${user_env[@]}"; do measure_as+=(--env "$e"); done
u() { "${as_user[@]}" "$@"; } # run as the user, untimed

# Where each tool keeps its images for case $case_dir.
kiln_cmd() { echo "$kiln" --root "$case_dir/kiln-store"; }
buildah_cmd() { echo buildah --root "$case_dir/buildah-store" --runroot "$case_dir/buildah-run" --storage-driver overlay; }
# build TOOL TAG [FLAGS…] CTX: the build command line (as words).
build() {
    local tool=$1 tag=$2; shift 2
    if [ "$tool" = kiln ]; then
        echo "$(kiln_cmd) build -t $tag ${BENCH_KILN_FLAGS:-} $*"
    else
        echo "$(buildah_cmd) bud --layers -t $tag $*"
    fi
}
# export TOOL TAG DIR: write the image as an OCI layout with gzip layers.
export_cmd() {
    if [ "$1" = kiln ]; then echo "$(kiln_cmd) export-layout $3 $2"
    else echo "$(buildah_cmd) push --compression-format gzip $2 oci:$3"; fi
}
reset_stores() { wipe "$case_dir/kiln-store" "$case_dir/buildah-store" "$case_dir/buildah-run" "$case_dir/out"; }

results="$work/results"
: > "$results"
# timed CASE VARIANT TOOL CMDLINE: run CMDLINE (a shell command line, as the
# user) once under measure.py; record wall, tree and own peak RSS.
timed() {
    local case=$1 variant=$2 tool=$3 cmdline=$4 out
    local log="$case_dir/$tool-$case-$variant.log"
    out=$(python3 "$here/measure.py" "$tool" "${measure_as[@]}" --shell "$cmdline" 2>>"$log" </dev/null) || {
        echo "bench: $case/$variant with $tool failed; log: $log" >&2; tail -n 20 "$log" >&2; exit 1; }
    echo "$case $variant $tool $out" >> "$results"
}
note() { echo "note $1 $2 $3 $4" >> "$results"; } # note CASE METRIC TOOL VALUE
biggest_blob() { find "$1/blobs" -type f -printf '%s\n' | sort -n | tail -n 1; }
cheap=0
reps_of() { if [ "$cheap" = 1 ]; then echo "$reps_cheap"; else echo "$reps"; fi; }

# The scratch base both tools start from: Debian's static busybox.
base_ctx() {
    mkdir -p "$1"
    cp /bin/busybox "$1/busybox"
    cat > "$1/Dockerfile.base" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /tmp && chmod 1777 /tmp
EOF
}
dockerfile() { # dockerfile CTX: the base plus stdin
    { cat "$1/Dockerfile.base"; cat; } > "$1/Dockerfile"
}
warm_base() { # warm_base TOOL CTX: build the base so its layers are cached
    u bash -c "$(build "$1" bench/base -f "$2/Dockerfile.base" "$2")" >/dev/null 2>&1
}

# ---- cases -----------------------------------------------------------------
# Each case_X sets up its context, then loops reps with kiln and buildah
# interleaved; untimed preparation happens between timed runs.

eleven_ctx() {
    local ctx=$case_dir/ctx
    mkdir -p "$ctx/src"
    cp /bin/busybox "$ctx/busybox"
    for i in $(seq 1 2000); do echo "file $i" > "$ctx/src/f$i.txt"; done
    head -c 32M /dev/urandom > "$ctx/blob.bin"
    cat > "$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /app /tmp && chmod 1777 /tmp
COPY blob.bin /app/blob.bin
RUN for i in $(seq 1 500); do echo $i > /app/gen-$i; done
COPY src /app/src
RUN cat /app/src/f1.txt > /app/first && rm -f /app/gen-1
ENV APP=/app
WORKDIR /app
CMD ["/bin/sh"]
DOCKERFILE
}
case_cached11() {
    cheap=1; eleven_ctx
    for t in kiln buildah; do u bash -c "$(build $t bench/c11 "$case_dir/ctx")" >/dev/null 2>&1; done
    for _ in $(seq "$(reps_of)"); do for t in kiln buildah; do
        timed cached11 build $t "$(build $t bench/c11 "$case_dir/ctx")"
    done; done
}
case_cold11() {
    eleven_ctx
    for _ in $(seq "$(reps_of)"); do for t in kiln buildah; do
        reset_stores
        timed cold11 build $t "$(build $t bench/c11 "$case_dir/ctx")"
    done; done
}
case_changed11() {
    eleven_ctx
    for t in kiln buildah; do u bash -c "$(build $t bench/c11 "$case_dir/ctx")" >/dev/null 2>&1; done
    for _ in $(seq "$(reps_of)"); do for t in kiln buildah; do
        echo "changed $RANDOM$RANDOM" > "$case_dir/ctx/src/f1000.txt"
        timed changed11 build $t "$(build $t bench/c11 "$case_dir/ctx")"
    done; done
}
# A step that misses the cache on every run: its text changes.
case_runtrue10() {
    cheap=1; local ctx=$case_dir/ctx; base_ctx "$ctx"
    for t in kiln buildah; do warm_base $t "$ctx"; done
    for r in $(seq "$(reps_of)"); do for t in kiln buildah; do
        for i in $(seq 1 10); do echo "RUN true $t-$r-$RANDOM $i"; done | dockerfile "$ctx"
        timed runtrue10 build $t "$(build $t bench/rt "$ctx")"
    done; done
}
case_files30k() {
    local ctx=$case_dir/ctx; base_ctx "$ctx"
    for t in kiln buildah; do warm_base $t "$ctx"; done
    for r in $(seq "$(reps_of)"); do for t in kiln buildah; do
        echo "RUN mkdir /many && cd /many && for i in \$(seq 1 30000); do echo \$i > f\$i; done # $t-$r-$RANDOM" | dockerfile "$ctx"
        timed files30k build $t "$(build $t bench/f30k "$ctx")"
    done; done
}
# One RUN writing a big layer: build alone, build + export to an OCI layout,
# and (kiln) build with --compression none: the cost of RUN + tar + diff_id
# without compression, from which the compression throughput is derived.
big_layer() { # big_layer CASE RUN-COMMAND UNCOMPRESSED-BYTES
    local name=$1 run=$2 ctx=$case_dir/ctx
    base_ctx "$ctx"
    echo "RUN $run" | dockerfile "$ctx"
    note "$name" layer_bytes - "$3"
    for _ in $(seq "$(reps_of)"); do for t in kiln buildah; do
        reset_stores; warm_base $t "$ctx"
        timed "$name" build $t "$(build $t bench/big "$ctx")"
        reset_stores; warm_base $t "$ctx"
        timed "$name" export $t "$(build $t bench/big "$ctx") && $(export_cmd $t bench/big "$case_dir/out")"
        note "$name" blob $t "$(biggest_blob "$case_dir/out")"
        if [ $t = kiln ]; then
            reset_stores; warm_base $t "$ctx"
            timed "$name" none $t "$(build $t bench/big --compression none "$ctx")"
        fi
    done; done
    reset_stores
}
case_rand512() { big_layer rand512 "dd if=/dev/urandom of=/big bs=1M count=512 2>/dev/null" $((512 << 20)); }
# 192 MiB of random bytes as base64 (76-column lines): 256 MiB of text plus newlines.
case_text256() { big_layer text256 "head -c 201326592 /dev/urandom | base64 > /text" $(( (256 << 20) + (256 << 20) / 76 )); }
# A 200 MiB context of 20,000 files (base64 text, like a source tree only
# less compressible), copied whole; then one file changes.
case_ctx200() {
    local ctx=$case_dir/ctx; base_ctx "$ctx"
    python3 - "$ctx/data" <<'EOF'
import base64, os, sys
root = sys.argv[1]
for d in range(100):
    os.makedirs(f"{root}/d{d:03}")
    for f in range(200):
        # 20,000 files, 10,485 bytes each on average: 200 MiB.
        n = 7863 + ((d * 200 + f) * 7919) % 25 - 12
        with open(f"{root}/d{d:03}/f{f:03}.txt", "wb") as out:
            out.write(base64.encodebytes(os.urandom(n)))
EOF
    echo "COPY data /data" | dockerfile "$ctx"
    note ctx200 context_bytes - "$(du -sb "$ctx/data" | cut -f1)"
    for t in kiln buildah; do u bash -c "$(build $t bench/ctx "$ctx")" >/dev/null 2>&1; done
    for _ in $(seq "$(reps_of)"); do for t in kiln buildah; do
        echo "changed $RANDOM$RANDOM" > "$ctx/data/d050/f100.txt"
        timed ctx200 build $t "$(build $t bench/ctx "$ctx")"
    done; done
    reset_stores
}
# A gcc toolchain from the host's packages (no network), plus busybox for
# the shell and 100 MiB of filler: a ~300 MB build stage.
toolchain_ctx() {
    local ctx=$1 tc=$1/toolchain
    mkdir -p "$tc/usr/bin" "$tc/usr/lib" "$tc/usr/lib64" "$tc/usr/sbin" "$tc/usr/local/bin" "$tc/tmp" "$tc/opt"
    for l in bin lib lib64 sbin; do [ -L "/$l" ] && ln -sfn "usr/$l" "$tc/$l"; done
    dpkg -L gcc-12 cpp-12 libgcc-12-dev binutils-x86-64-linux-gnu libbinutils libc6 libc6-dev libc-dev-bin \
        linux-libc-dev libcrypt-dev libcrypt1 libisl23 libmpc3 libmpfr6 libgmp10 libzstd1 zlib1g libstdc++6 \
        libgcc-s1 libctf0 libctf-nobfd0 libjansson4 libgprofng0 libasan8 libtsan2 liblsan0 libubsan1 \
        libquadmath0 libitm1 libatomic1 libgomp1 libcc1-0 binutils gcc 2>/dev/null |
    python3 -c '
import os, sys
seen = set()
for p in sys.stdin.read().split("\n"):
    if not p.startswith("/") or (os.path.isdir(p) and not os.path.islink(p)) or not os.path.lexists(p):
        continue
    q = os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p)).lstrip("/")
    if q not in seen:
        seen.add(q); print(q)' > "$ctx/toolchain.list"
    tar -C / --no-recursion -cf - -T "$ctx/toolchain.list" 2>/dev/null | tar -C "$tc" -xf -
    cp /bin/busybox "$tc/usr/local/bin/busybox"
    for a in $(/bin/busybox --list); do
        [ -e "$tc/usr/bin/$a" ] || [ -e "$tc/usr/local/bin/$a" ] || ln -s busybox "$tc/usr/local/bin/$a"
    done
    ln -sfn ../local/bin/busybox "$tc/usr/bin/sh"
    chmod 1777 "$tc/tmp"
    head -c 100M /dev/urandom > "$tc/opt/filler.bin"
}
c_project() {
    local src=$1/src
    mkdir -p "$src"
    cat > "$src/util.h" <<'EOF'
int add(int a, int b);
int mul(int a, int b);
const char *greeting(void);
EOF
    printf '#include "util.h"\nint add(int a, int b) { return a + b; }\n' > "$src/add.c"
    printf '#include "util.h"\nint mul(int a, int b) { return a * b; }\n' > "$src/mul.c"
    printf '#include "util.h"\nconst char *greeting(void) { return "hello"; }\n' > "$src/greet.c"
    cat > "$src/main.c" <<'EOF'
#include <stdio.h>
#include "util.h"
int main(void) { printf("%s %d\n", greeting(), add(mul(6, 7), 0)); return 0; }
EOF
}
# cmulti and copyfrom share one context and one pair of stores (in
# $work/gcc, removed at the end): the ~300 MB stage is made and committed once.
gcc_setup() {
    case_dir=$work/gcc
    local ctx=$case_dir/ctx
    [ -d "$ctx" ] && return
    mkdir -p "$case_dir"
    [ "$(id -u)" = 0 ] && chown "$user:" "$case_dir"
    toolchain_ctx "$ctx"; c_project "$ctx"
    head -c 307200 /dev/urandom > "$ctx/toolchain/opt/payload.bin"
    note gcc stage_bytes - "$(du -sb "$ctx/toolchain" | cut -f1)"
    cat > "$ctx/Dockerfile.c" <<'EOF'
FROM scratch AS build
COPY toolchain/ /
WORKDIR /src
COPY src/ /src/
RUN mkdir -p /out && gcc -O2 -o /out/app main.c add.c mul.c greet.c
FROM scratch
COPY --from=build /out/app /app
EOF
    cat > "$ctx/Dockerfile.cf" <<'EOF'
FROM scratch AS big
COPY toolchain/ /
FROM scratch
COPY nonce /nonce
COPY --from=big /opt/payload.bin /payload.bin
EOF
    echo warm > "$ctx/nonce"
    for t in kiln buildah; do
        u bash -c "$(build $t bench/c -f "$ctx/Dockerfile.c" "$ctx")" >/dev/null 2>&1
        u bash -c "$(build $t bench/cf -f "$ctx/Dockerfile.cf" "$ctx")" >/dev/null 2>&1
    done
}
case_cmulti() {
    gcc_setup; local ctx=$case_dir/ctx
    for r in $(seq "$(reps_of)"); do for t in kiln buildah; do
        printf '#include "util.h"\nconst char *greeting(void) { return "hello %s"; }\n' "$t-$r-$RANDOM" > "$ctx/src/greet.c"
        timed cmulti build $t "$(build $t bench/c -f "$ctx/Dockerfile.c" "$ctx")"
    done; done
}
# COPY --from of one ~300 kB file out of the ~300 MB stage, the stage
# cached: a changed file before the COPY --from makes that step run again.
case_copyfrom() {
    gcc_setup; local ctx=$case_dir/ctx log=$case_dir/kiln-copyfrom-build.log
    for r in $(seq "$(reps_of)"); do for t in kiln buildah; do
        echo "$t-$r-$RANDOM" > "$ctx/nonce"
        : > "$log"
        timed copyfrom build $t "$(build $t bench/cf -f "$ctx/Dockerfile.cf" "$ctx")"
        if [ $t = kiln ]; then
            # kiln prints each step's own time: "--> <digest> (…, 0.04s)"
            # after the step's "COPY --from" line.
            note copyfrom step kiln "$(awk '/STEP .*COPY --from/ {p = substr($0, 1, index($0, "STEP") - 1); f = 1; next}
                f && index($0, p "-->") == 1 && match($0, /[0-9.]+s\)$/) {print substr($0, RSTART, RLENGTH - 2); exit}' "$log")"
        fi
    done; done
}
# A cold apt-based build: `apt-get update && apt-get install` of a small
# package FROM a Debian base. The base is made once by debootstrap from the
# host's apt mirror (untimed; kept in target/bench-debian.tar for later runs,
# with the host's apt sources, date settings and CA certificates, as the
# run_debootstrap test makes it) and imported by each tool untimed; the
# timed build is the RUN alone. The mirror's speed is in both tools' times.
debian_tar() {
    local tar=${BENCH_DEBIAN_TAR:-$here/../target/bench-debian.tar}
    if [ ! -s "$tar" ]; then
        local suite mirror root
        suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
        mirror=$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | grep -v security | grep -oE 'https?://[^ ]+' | head -n 1)
        [ -n "$suite" ] && [ -n "$mirror" ] || return 1
        root=$(mktemp -d "$work/debian.XXXXXX")
        /usr/sbin/debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || return 1
        rm -f "$root/etc/apt/sources.list"
        cp /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list "$root/etc/apt/sources.list.d/" 2>/dev/null
        grep -rhE 'Check-Valid-Until|Check-Date|Proxy' /etc/apt/apt.conf.d/ > "$root/etc/apt/apt.conf.d/99host-settings" 2>/dev/null
        if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
            mkdir -p "$root/usr/local/share/ca-certificates"
            cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        fi
        mkdir -p "$(dirname "$tar")"
        # Images carry an empty /dev: device nodes cannot be made rootless.
        tar --numeric-owner --xattrs -C "$root" --exclude='./dev/*' -cf "$tar.tmp" . && mv "$tar.tmp" "$tar"
        rm -rf "$root"
    fi
    echo "$tar"
}
case_apt() {
    local ctx=$case_dir/ctx tar
    if [ "$(id -u)" != 0 ] || [ ! -x /usr/sbin/debootstrap ]; then
        note apt skipped - "needs root and debootstrap to make the Debian base once"; return
    fi
    tar=$(debian_tar) || { note apt skipped - "debootstrap failed: see $work/debootstrap.log"; return; }
    mkdir -p "$ctx"; cp "$tar" "$ctx/debian.tar"; chown -R "$user:" "$ctx"
    printf 'FROM scratch\nADD debian.tar /\n' > "$ctx/Dockerfile.base"
    # The base ready to run on, for both: buildah extracts an ADD into its
    # layer store at once, kiln makes a layer's dir on its first RUN.
    printf 'FROM bench/base\nRUN true\n' > "$ctx/Dockerfile.ready"
    for t in kiln buildah; do
        warm_base $t "$ctx"
        u bash -c "$(build $t bench/ready -f "$ctx/Dockerfile.ready" "$ctx")" >/dev/null 2>&1
    done
    for r in $(seq "${BENCH_REPS_APT:-2}"); do for t in kiln buildah; do
        printf 'FROM bench/base\nRUN apt-get update -qq && apt-get install -y -qq --no-install-recommends hello && hello # %s\n' \
            "$t-$r-$RANDOM" > "$ctx/Dockerfile"
        timed apt build $t "$(build $t bench/apt "$ctx")"
    done; done
}

# ---- run -------------------------------------------------------------------
echo "bench: kiln $("$kiln" --version | cut -d' ' -f2), $(buildah --version | cut -d' ' -f1-3), as $user, reps $reps (cheap cases $reps_cheap), work $work"
chown "$user:" "$results" 2>/dev/null || true
for c in $cases; do
    case_dir=$work/$c
    mkdir -p "$case_dir"
    [ "$(id -u)" = 0 ] && chown "$user:" "$case_dir"
    cheap=0
    t0=$(date +%s)
    echo "bench: $c…" >&2
    "case_$c"
    note "$c" seconds - $(( $(date +%s) - t0 ))
    [ "${BENCH_KEEP:-0}" = 1 ] || wipe "$work/$c"
done
[ "${BENCH_KEEP:-0}" = 1 ] || wipe "$work/gcc"

# ---- report ----------------------------------------------------------------
machine() {
    echo "- CPU: $(lscpu | sed -n 's/^Model name: *//p' | head -n 1), $(nproc) cores; RAM: $(free -g | awk '/^Mem:/ {print $2}') GiB; kernel $(uname -r)"
    echo "- kiln $("$kiln" --version | cut -d' ' -f2) (release build, storage driver: default = native overlay in a user namespace), $(buildah --version | cut -d' ' -f1-3) (rootless, BUILDAH_ISOLATION=chroot, --storage-driver overlay)"
    echo "- kiln build flags: no \`--compression\` (layers stored plain, gzip at export)$(if "$kiln" build --help 2>/dev/null | grep -q -- --compression-level; then echo ', has `--compression-level`'; else echo ', no `--compression-level`'; fi)${BENCH_KILN_FLAGS:+, extra flags: $BENCH_KILN_FLAGS}"
    echo "- both run as the unprivileged user $user, each in private stores under $work; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
}
total=$(( $(date +%s) - started_at ))
report=$(python3 "$here/report.py" "$results" "$reps" "$reps_cheap" "$total" "$command_line")
echo "$report"
if [ -n "$md" ]; then
    python3 "$here/report.py" --markdown "$results" "$reps" "$reps_cheap" "$total" "$command_line" "$(machine)" "$md"
    echo "bench: wrote the results into $md"
fi
