#!/usr/bin/env bash
# vmcrypt's NBD export next to qemu-storage-daemon exporting the same 1 GiB image raw and as
# LUKS (aes-xts-plain64), all over NBD on Unix sockets, driven by `qemu-img bench`, in one run,
# with the images on tmpfs and then on the file system of DIR (ext4 here). Cases: 1 MiB
# requests at queue depth 16, read and write; 4 KiB requests at queue depth 32, read and write.
# Prints MiB/s (and IOPS for 4 KiB) per case, the ratios vmcrypt/raw and vmcrypt/luks, each
# server's CPU seconds per GiB moved, and its peak RSS.
# Usage: bash benches/serve-compare.sh [DIR (default target/serve-bench)] [TMPFS (default /dev/shm)]
set -euo pipefail
cd "$(dirname "$0")/.."
for t in qemu-img qemu-storage-daemon; do
    command -v "$t" >/dev/null || { echo "serve-compare.sh needs $t (apt-get install qemu-utils qemu-system-common)" >&2; exit 1; }
done
disk_dir="${1:-target/serve-bench}"
shm_dir="${2:-/dev/shm}/vmcrypt-serve-bench-$$"
cargo build --release -q -p vmcrypt-cli
vmcrypt="$PWD/target/release/vmcrypt"
mkdir -p "$disk_dir"; disk_dir=$(cd "$disk_dir" && pwd)

pid=""
stop() { [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; pid=""; }
cleanup() { stop; rm -rf "$shm_dir"; }
trap cleanup EXIT
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

bench() { # bytes-per-request count depth extra-flags... -> "MiB/s IOPS cpu-s/GiB"
    local size=$1 count=$2 depth=$3; shift 3
    local c0 secs c1 hz
    hz=$(getconf CLK_TCK)
    c0=$(cpu_ticks "$pid")
    secs=$(qemu-img bench -f raw -d "$depth" -s "$size" -c "$count" "$@" "$uri" | awk '/Run completed/ {print $4}')
    c1=$(cpu_ticks "$pid")
    awk -v s="$secs" -v n="$count" -v b="$size" -v c=$((c1 - c0)) -v hz="$hz" \
        'BEGIN { g = n * b / 1073741824; printf "%.0f %.0f %.2f", g * 1024 / s, n / s, c / hz / g }'
}

# label:bytes:count:depth:flag
cases=("read 1M QD16:1048576:1024:16:" "write 1M QD16:1048576:1024:16:-w"
       "read 4k QD32:4096:65536:32:" "write 4k QD32:4096:65536:32:-w")
cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
echo "CPU: $cpu ($(nproc) cores); $(qemu-img --version | head -1); NBD over Unix sockets, 1 GiB images, qemu-img bench"

for dir in "$shm_dir" "$disk_dir/images"; do
    rm -rf "$dir"; mkdir -p "$dir"
    fs=$(stat -f -c %T "$dir")
    vm="$vmcrypt --config $dir/cfg.toml"
    head -c 1G /dev/urandom > "$dir/raw.img"
    $vm encrypt "$dir/raw.img" --output "$dir/enc.img" -q 2>/dev/null
    qemu-img create -q -f luks --object secret,id=s,data=bench-only -o key-secret=s "$dir/luks.img" 1G
    qemu-img convert -n --object secret,id=s,data=bench-only --target-image-opts -f raw "$dir/raw.img" \
        "driver=luks,file.filename=$dir/luks.img,key-secret=s"
    # Written back and warm in the page cache, so no server pays for another's writeback.
    sync; cat "$dir"/*.img > /dev/null

    declare -A res=()
    for kind in raw luks vmcrypt; do
        start "$kind"
        for c in "${cases[@]}"; do
            IFS=: read -r label size count depth flag <<< "$c"
            # shellcheck disable=SC2086
            res["$kind/$label"]=$(bench "$size" "$count" "$depth" $flag)
        done
        res["$kind/rss"]=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")
        stop
        sync
    done

    echo
    echo "== $fs ($dir)"
    printf '%-14s %14s %14s %14s %6s %6s %20s\n' case "raw MiB/s" "luks MiB/s" "vmcrypt MiB/s" "/raw" "/luks" "CPU s/GiB r/l/v"
    for c in "${cases[@]}"; do
        IFS=: read -r label size _ <<< "$c"
        read -r r ri rc <<< "${res[raw/$label]}"; read -r l li lc <<< "${res[luks/$label]}"; read -r v vi vc <<< "${res[vmcrypt/$label]}"
        if [ "$size" -lt 65536 ]; then r="$r ($ri)"; l="$l ($li)"; v="$v ($vi)"; fi
        printf '%-14s %14s %14s %14s %6s %6s %20s\n' "$label" "$r" "$l" "$v" \
            "$(awk -v a="${v%% *}" -v b="${r%% *}" 'BEGIN{printf "%.2f", a/b}')" \
            "$(awk -v a="${v%% *}" -v b="${l%% *}" 'BEGIN{printf "%.2f", a/b}')" "$rc/$lc/$vc"
    done
    echo "peak RSS (MiB): raw ${res[raw/rss]}, luks ${res[luks/rss]}, vmcrypt ${res[vmcrypt/rss]}"
    rm -rf "$dir"
done
