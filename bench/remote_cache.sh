#!/usr/bin/env bash
# bench/remote_cache.sh [KILN] [WORK]: issue 15's shared-cache figure. A
# 10-step Dockerfile (RUN steps that write 64 MiB of random data, 5,000
# small files, a checksum) is built by a runner with an empty store:
#   cold    no cache at all
#   export  cold, then --cache-to type=registry,…,mode=max (runner A)
#   cache   --cache-from that cache (runner B: every step hits; only the
#           final image's layers are fetched)
# against Debian's docker-registry on 127.0.0.1. Median wall time of
# BENCH_REPS runs (default 3), each with a fresh store. Run as root, kiln
# runs as BENCH_USER (default kilnbench, as bench.sh makes it).
set -euo pipefail
kiln=$(realpath "${1:-target/release/kiln}")
work=${2:-target/bench-cache}
reps=${BENCH_REPS:-3}
command -v docker-registry >/dev/null || { echo "needs docker-registry" >&2; exit 1; }

rm -rf "$work"
mkdir -p "$work/ctx" "$work/home" "$work/xdg" "$work/registry"
work=$(realpath "$work")
chmod 700 "$work/xdg"
if [ "$(id -u)" = 0 ]; then
    user=${BENCH_USER:-kilnbench}
    id -u "$user" >/dev/null || { echo "no user $user (make bench creates it)" >&2; exit 1; }
    runas=(setpriv --reuid "$user" --regid "$user" --init-groups --)
    chown -R "$user:" "$work/ctx" "$work/home" "$work/xdg"
    chown "$user:" "$work"
else
    runas=()
fi
u() { "${runas[@]}" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$work/home" XDG_RUNTIME_DIR="$work/xdg" TMPDIR="$work/home" "$@"; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry/data
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry/config.yml" > "$work/registry/log" 2>&1 &
registry=$!
trap 'kill $registry 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

cp /bin/busybox "$work/ctx/busybox"
echo source > "$work/ctx/src.txt"
cat > "$work/ctx/Dockerfile" <<'EOF'
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
RUN mkdir -m 1777 /tmp
RUN dd if=/dev/urandom of=/data bs=1M count=64 2>/dev/null
RUN mkdir /many && for i in $(seq 1 5000); do echo "file $i" > /many/f$i; done
RUN sha256sum /data > /data.sum
COPY src.txt /src.txt
RUN cat /src.txt /data.sum > /out
ENV RESULT=/out
CMD ["cat", "/out"]
EOF
[ "$(id -u)" = 0 ] && chown -R "$user:" "$work/ctx"
cache="127.0.0.1:$port/bench/app:cache"

# run CASE N: one timed build of CASE with a fresh store; prints seconds.
run() {
    local case=$1 n=$2 store="$work/store-$1-$2" flags=()
    case $case in
        export) flags=(--cache-to "type=registry,ref=$cache,mode=max") ;;
        cache) flags=(--cache-from "$cache") ;;
    esac
    local t0 t1
    t0=$(date +%s.%N)
    u "$kiln" --root "$store" build -q -t app "${flags[@]}" "$work/ctx" > "$work/$case-$n.log" 2>&1 ||
        { echo "bench: $case failed:" >&2; tail -n 20 "$work/$case-$n.log" >&2; exit 1; }
    t1=$(date +%s.%N)
    if [ "$case" = cache ]; then
        # Nothing ran: the store holds the final image's blobs only.
        blobs=$(ls "$store/blobs/sha256" | wc -l)
        echo "cache run $n: $blobs blobs in the store" >&2
    fi
    u rm -rf "$store" 2>/dev/null || u "$kiln" unshare rm -rf "$store"
    echo "$t1 - $t0" | bc | awk '{printf "%.2f\n", $1}'
}
median() { sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

declare -A med
for case in cold export cache; do
    times=()
    for n in $(seq "$reps"); do times+=("$(run "$case" "$n")"); done
    med[$case]=$(printf '%s\n' "${times[@]}" | median)
    printf '%-7s %s s (runs: %s)\n' "$case" "${med[$case]}" "${times[*]}"
done
printf 'runner B with the cache / cold build: %.2f\n' "$(echo "${med[cache]} / ${med[cold]}" | bc -l)"
