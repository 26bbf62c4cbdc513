#!/usr/bin/env bash
# vmcrypt's NBD export next to qemu-storage-daemon exporting the same 1 GiB image raw and as
# LUKS (aes-xts-plain64), all over NBD on Unix sockets, driven by `qemu-img bench`, in one run.
# Prints MiB/s per case, the ratios vmcrypt/raw and vmcrypt/luks, the server's CPU seconds per
# GiB moved, and its peak RSS.
# Usage: bash benches/serve-compare.sh [DIR (default target/serve-bench)]
set -euo pipefail
cd "$(dirname "$0")/.."
for t in qemu-img qemu-storage-daemon; do
    command -v "$t" >/dev/null || { echo "serve-compare.sh needs $t (apt-get install qemu-utils qemu-system-common)" >&2; exit 1; }
done
dir="${1:-target/serve-bench}"
rm -rf "$dir"; mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
cargo build --release -q -p vmcrypt-cli
vm="$PWD/target/release/vmcrypt --config $dir/cfg.toml"

head -c 1G /dev/urandom > "$dir/raw.img"
$vm encrypt "$dir/raw.img" --output "$dir/enc.img" -q 2>/dev/null
qemu-img create -q -f luks --object secret,id=s,data=bench-only -o key-secret=s "$dir/luks.img" 1G

pid=""
stop() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; pid=""; }
trap stop EXIT
wait_sock() { for _ in $(seq 500); do [ -S "$1" ] && return; sleep 0.02; done; echo "no socket $1" >&2; exit 1; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

start() { # kind -> sets pid and uri
    local sock="$dir/$1.sock"; rm -f "$sock"
    case "$1" in
        raw) qemu-storage-daemon --blockdev driver=file,node-name=f,filename="$dir/raw.img" \
                --nbd-server addr.type=unix,addr.path="$sock" \
                --export type=nbd,id=e,node-name=f,name=d,writable=on & ;;
        luks) qemu-storage-daemon --object secret,id=s,data=bench-only \
                --blockdev driver=file,node-name=f,filename="$dir/luks.img" \
                --blockdev driver=luks,node-name=l,file=f,key-secret=s \
                --nbd-server addr.type=unix,addr.path="$sock" \
                --export type=nbd,id=e,node-name=l,name=d,writable=on & ;;
        vmcrypt) $vm serve "$dir/enc.img" --nbd "$sock" --name d -q & ;;
    esac
    pid=$!
    wait_sock "$sock"
    uri="nbd+unix:///d?socket=$sock"
}

bench() { # label bytes-per-request count extra-flags... -> "MiB/s cpu-s/GiB"
    local size=$1 count=$2; shift 2
    local t0 c0 secs c1 hz
    hz=$(getconf CLK_TCK)
    c0=$(cpu_ticks "$pid")
    secs=$(qemu-img bench -f raw -d 32 -s "$size" -c "$count" "$@" "$uri" | awk '/Run completed/ {print $4}')
    c1=$(cpu_ticks "$pid")
    awk -v s="$secs" -v n="$count" -v b="$size" -v c=$((c1 - c0)) -v hz="$hz" \
        'BEGIN { g = n * b / 1073741824; printf "%.0f %.2f", g * 1024 / s, c / hz / g }'
}

declare -A res
cases=("read 64k:65536:16384:" "write 64k:65536:16384:-w" "read 4k:4096:65536:" "write 4k:4096:65536:-w")
for kind in raw luks vmcrypt; do
    start "$kind"
    for c in "${cases[@]}"; do
        IFS=: read -r label size count flag <<< "$c"
        # shellcheck disable=SC2086
        res["$kind/$label"]=$(bench "$size" "$count" $flag)
    done
    res["$kind/rss"]=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")
    stop
done

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
echo "CPU: $cpu ($(nproc) cores); $(qemu-img --version | head -1); QD32, NBD over Unix sockets, 1 GiB image in $dir"
printf '%-10s %10s %10s %10s %9s %9s %22s\n' case "raw MiB/s" "luks MiB/s" "vmcrypt" "/raw" "/luks" "CPU s/GiB raw/luks/vm"
for c in "${cases[@]}"; do
    IFS=: read -r label _ <<< "$c"
    read -r r rc <<< "${res[raw/$label]}"; read -r l lc <<< "${res[luks/$label]}"; read -r v vc <<< "${res[vmcrypt/$label]}"
    printf '%-10s %10s %10s %10s %9s %9s %22s\n' "$label" "$r" "$l" "$v" \
        "$(awk -v a="$v" -v b="$r" 'BEGIN{printf "%.2f", a/b}')" \
        "$(awk -v a="$v" -v b="$l" 'BEGIN{printf "%.2f", a/b}')" "$rc/$lc/$vc"
done
echo "peak RSS (MiB): raw ${res[raw/rss]}, luks ${res[luks/rss]}, vmcrypt ${res[vmcrypt/rss]}"
