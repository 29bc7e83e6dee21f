#!/usr/bin/env bash
# make bench: kiln and buildah build the same Dockerfiles side by side, each
# in a private store, and we print wall time, peak memory and the ratio
# (buildah / kiln: above 1 means kiln is faster). Cases: a cold build, a fully
# cached rebuild, and an incremental rebuild after one context file changed.
set -euo pipefail
kiln=$(realpath "$1")
work=${2:-target/bench}
reps=${BENCH_REPS:-3}
command -v buildah >/dev/null || { echo "bench: buildah is missing: apt-get install buildah" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "bench: /bin/busybox is missing: apt-get install busybox-static" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing: apt-get install time" >&2; exit 1; }

rm -rf "$work"; mkdir -p "$work/ctx/src"
work=$(realpath "$work")
cp /bin/busybox "$work/ctx/busybox"
for i in $(seq 1 2000); do echo "file $i" > "$work/ctx/src/f$i.txt"; done
head -c 32M /dev/urandom > "$work/ctx/blob.bin"
cat > "$work/ctx/Dockerfile" <<'DOCKERFILE'
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

export BUILDAH_ISOLATION=chroot
kiln_build() { "$kiln" --root "$work/kiln-store" build -q "$@" "$work/ctx" >/dev/null; }
buildah_build() { buildah --root "$work/buildah-store" --runroot "$work/buildah-run" bud --layers -q "$@" "$work/ctx" >/dev/null 2>&1; }

# measure NAME CMD...: best wall time (s) and peak RSS (MiB) over $reps runs.
measure() {
    local best="" rss=0
    for _ in $(seq 1 "$reps"); do
        local out
        # The cases are shell functions: time them in a child bash.
        out=$(/usr/bin/time -f '%e %M' bash -c "$2" 2>&1 >/dev/null | tail -n 1)
        local t=${out% *} m=${out#* }
        if [ -z "$best" ] || awk "BEGIN{exit !($t < $best)}"; then best=$t; fi
        [ "$m" -gt "$rss" ] && rss=$m
    done
    echo "$best $((rss / 1024))"
}

cold_kiln() { rm -rf "$work/kiln-store" 2>/dev/null || "$kiln" unshare rm -rf "$work/kiln-store"; kiln_build; }
cold_buildah() { buildah --root "$work/buildah-store" --runroot "$work/buildah-run" rmi -af >/dev/null 2>&1 || true; rm -rf "$work/buildah-store" "$work/buildah-run" 2>/dev/null || buildah unshare rm -rf "$work/buildah-store" "$work/buildah-run"; buildah_build; }
touch_one() { echo "changed $RANDOM" > "$work/ctx/src/f1000.txt"; }
incr_kiln() { touch_one; kiln_build; }
incr_buildah() { touch_one; buildah_build; }

row() {
    local name=$1 k b
    k=$(measure "$name" "$2"); b=$(measure "$name" "$3")
    local kt=${k% *} km=${k#* } bt=${b% *} bm=${b#* }
    printf '%-22s %9ss %7sMiB %9ss %7sMiB %8s\n' "$name" "$kt" "$km" "$bt" "$bm" \
        "$(awk "BEGIN{ if ($kt > 0) printf \"%.1fx\", $bt/$kt; else print \"-\" }")"
}

echo "kiln: $("$kiln" --version)   buildah: $(buildah --version | cut -d' ' -f3)   runs: best of $reps"
printf '%-22s %10s %10s %10s %10s %8s\n' case kiln-time kiln-rss buildah-time buildah-rss ratio
export kiln work
export -f kiln_build buildah_build cold_kiln cold_buildah touch_one incr_kiln incr_buildah
# A first build of each, so "cached" and "changed" start from a full cache.
kiln_build; buildah_build
row "cold build" cold_kiln cold_buildah
row "fully cached rebuild" kiln_build buildah_build
row "one file changed" incr_kiln incr_buildah
