#!/usr/bin/env bash
# vmcrypt's speed next to what an operator would use instead, measured in one run on this
# machine: the XTS engine against `openssl speed -evp aes-256-xts`, and whole-image jobs on the
# same image against `qemu-img convert -O luks` and `cp`, on tmpfs and on the disk's file system.
# Also: peak memory of each vmcrypt job, and in-place time per GiB at three sizes (linearity).
#
# Each figure is the best of RUNS (default 3) runs: the machines are shared and the kernel's page
# allocation for new files is noisy.
# Usage: bash benches/speed-compare.sh [SIZE_MIB, default 2048] [DIRS, default "/dev/shm /tmp"]
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-2048}"
dirs="${2:-/dev/shm ${TMPDIR:-/tmp}}"
secs=2
for tool in openssl qemu-img /usr/bin/time; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install openssl qemu-utils time)" >&2; exit 1; }
done

cargo build --release -q -p vmcrypt-cli -p vmcrypt-benches --bin vmcrypt --bin xts_speed
vmcrypt="$PWD/target/release/vmcrypt"

# --- the cipher ---
openssl_gbps() { # bytes -> GB/s on one core
    openssl speed -evp aes-256-xts -bytes "$1" -seconds "$secs" 2>/dev/null \
        | awk '/^AES-256-XTS/ { v=$2; sub(/k$/, "", v); printf "%.2f", v * 1000 / 1e9 }'
}
o512=$(openssl_gbps 512)
o4096=$(openssl_gbps 4096)
echo "CPU: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo) ($(nproc) cores); $(openssl version | cut -d' ' -f1-2)"
echo
echo "## XTS engine (GB/s = 10^9 bytes/s; OpenSSL on one core)"
printf '%-9s %-6s %-8s %-10s %-8s %s\n' backend unit threads vmcrypt openssl ratio
for backend in vaes portable; do
    env_backend=()
    [ "$backend" = portable ] && env_backend=(VMCRYPT_XTS_BACKEND=portable)
    out=$(env "${env_backend[@]}" XTS_SPEED_SECONDS="$secs" target/release/xts_speed)
    got=$(echo "$out" | head -1 | awk '{print $2}')
    while read -r label u t g; do
        [ "$label" = xts ] || continue
        u=${u#unit=}; t=${t#threads=}; g=${g#gbps=}
        if [ "$u" = 512 ]; then o=$o512; else o=$o4096; fi
        printf '%-9s %-6s %-8s %-10.2f %-8s %.2f\n' "$got" "$u" "$t" "$g" "$o" "$(awk -v a="$g" -v b="$o" 'BEGIN { print a / b }')"
    done <<< "$out"
done

# --- whole images ---
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
gbps() { awk -v s="$1" -v m="$2" 'BEGIN { printf "%.2f", m * 1048576 / s / 1e9 }'; }
once() { # prefix, command...: sets ${prefix}_s and ${prefix}_kb (peak RSS) for one run
    local prefix=$1; shift
    sync
    local t0 t1
    t0=$(now)
    /usr/bin/time -f '%M' -o "$work/rss" "$@" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    t1=$(now)
    printf -v "${prefix}_s" '%s' "$(elapsed "$t0" "$t1")"
    printf -v "${prefix}_kb" '%s' "$(tail -1 "$work/rss")"
}
best() { # prefix, seconds: keeps the smaller time in ${prefix}_best (shared machine: best of N)
    local cur="${1}_best"
    if [ -z "${!cur:-}" ] || awk -v a="$2" -v b="${!cur}" 'BEGIN { exit !(a < b) }'; then
        printf -v "$cur" '%s' "$2"
    fi
}
runs="${RUNS:-3}"
# A virtual machine can pay a host page fault the first time it touches memory it gave back:
# before each job that creates a file, touch (and free) as much memory as the file will take,
# so every tool, cp and qemu-img included, starts from the same warm memory.
warm() { head -c "$((size * 1048576))" /dev/zero > /dev/shm/vmcrypt-speed-warm; rm -f /dev/shm/vmcrypt-speed-warm; }
# Every job starts from the same page cache: the previous jobs' outputs are dropped (as root),
# then the job's inputs are read back in, so a job finds its input cached (as the goals say)
# and the memory for its output free, whatever ran before it. Without this, whichever job
# happened to need the kernel to reclaim 2 GiB of other files' cache ran up to 3x slower.
can_drop=0
if [ -w /proc/sys/vm/drop_caches ]; then can_drop=1; fi
prepare() { # input files...
    sync
    if [ "$can_drop" = 1 ]; then echo 1 > /proc/sys/vm/drop_caches; fi
    for f in "$@"; do cat "$f" > /dev/null; done
    warm
}

for base in $dirs; do
    work=$(mktemp -d -p "$base" vmcrypt-speed.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    cfg="$work/cfg/config.toml"
    "$vmcrypt" -q --config "$cfg" provider add-native bench >/dev/null 2>&1
    head -c "$((size * 1048576))" /dev/urandom > "$work/src.img"
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/luks.key"
    fs=$(df -T "$work" | awk 'NR==2 {print $2}')

    unset cp_best cps_best ow_best qemu_best new_best dec_new_best inp_best dinp_best
    cp "$work/src.img" "$work/inplace.img"
    for _ in $(seq "$runs"); do
        rm -f "$work/copy.img" "$work/luks.img" "$work/new.img" "$work/new.img.vmcrypt" "$work/back.img"
        prepare "$work/src.img"; once cp cp "$work/src.img" "$work/copy.img"; best cp "$cp_s"
        rm -f "$work/copy.img"
        # The same copy made durable, as every vmcrypt job is before it reports success: the
        # I/O limit a job that fsyncs can reach on this file system.
        prepare "$work/src.img"; once cps sh -c 'cp "$1" "$2" && sync -d "$2"' sh "$work/src.img" "$work/copy.img"
        best cps "$cps_s"
        rm -f "$work/copy.img"
        prepare "$work/src.img"; once qemu qemu-img convert -f raw -O luks --object "secret,id=k,file=$work/luks.key" \
            -o key-secret=k,iter-time=10 "$work/src.img" "$work/luks.img"; best qemu "$qemu_s"
        rm -f "$work/luks.img"
        prepare "$work/src.img"; once new "$vmcrypt" -q --config "$cfg" encrypt "$work/src.img" --output "$work/new.img"
        best new "$new_s"
        prepare "$work/new.img"; once dec_new "$vmcrypt" -q --config "$cfg" decrypt "$work/new.img" --output "$work/back.img"
        best dec_new "$dec_new_s"
        cmp -s "$work/src.img" "$work/back.img" || { echo "decrypted copy differs" >&2; exit 1; }
        rm -f "$work/new.img" "$work/new.img.vmcrypt" "$work/back.img"
        # The same bytes written over the existing file and made durable, with nothing else to
        # do: the disk's limit for an in-place job (the file keeps its plain content).
        prepare "$work/src.img" "$work/inplace.img"
        once ow dd if="$work/src.img" of="$work/inplace.img" bs=4M conv=notrunc,fdatasync status=none
        best ow "$ow_s"
        prepare "$work/inplace.img"; once inp "$vmcrypt" -q --config "$cfg" encrypt "$work/inplace.img" --in-place
        best inp "$inp_s"
        prepare "$work/inplace.img"; once dinp "$vmcrypt" -q --config "$cfg" decrypt "$work/inplace.img" --in-place
        best dinp "$dinp_s"
        cmp -s "$work/src.img" "$work/inplace.img" || { echo "in-place round trip differs" >&2; exit 1; }
    done
    cp_s=$cp_best cps_s=$cps_best ow_s=$ow_best qemu_s=$qemu_best new_s=$new_best dec_new_s=$dec_new_best inp_s=$inp_best dinp_s=$dinp_best

    echo
    echo "## $size MiB image on $fs ($base), best of $runs runs$([ "$can_drop" = 1 ] || echo ' (not root: page cache not reset between jobs)')"
    printf '%-44s %8s %7s %9s %9s %8s\n' job seconds GB/s "vs qemu" "vs cp" "peak MiB"
    row() { # label seconds rss_kb
        local rss="-"
        [ -n "${3:-}" ] && rss=$(awk -v k="$3" 'BEGIN { printf "%.1f", k / 1024 }')
        printf '%-44s %8s %7s %8.1fx %8.2fx %8s\n' "$1" "$2" "$(gbps "$2" "$size")" \
            "$(awk -v a="$qemu_s" -v b="$2" 'BEGIN { print a / b }')" \
            "$(awk -v a="$cp_s" -v b="$2" 'BEGIN { print a / b }')" "$rss"
    }
    row "cp (reference)" "$cp_s" ""
    row "cp, then fdatasync (durable copy)" "$cps_s" ""
    row "overwrite, then fdatasync (in-place limit)" "$ow_s" ""
    row "qemu-img convert -O luks (reference)" "$qemu_s" ""
    row "vmcrypt encrypt --output (new file)" "$new_s" "$new_kb"
    row "vmcrypt decrypt --output (new file)" "$dec_new_s" "$dec_new_kb"
    row "vmcrypt encrypt --in-place (crash-safe)" "$inp_s" "$inp_kb"
    row "vmcrypt decrypt --in-place (crash-safe)" "$dinp_s" "$dinp_kb"

    # Linearity: in-place encryption at a quarter, half and the full size.
    printf '%-44s' "in-place encrypt, seconds per GiB at"
    for part in 4 2 1; do
        mib=$((size / part))
        head -c "$((mib * 1048576))" "$work/src.img" > "$work/part.img"
        unset lin_best
        for _ in $(seq "$runs"); do
            once lin "$vmcrypt" -q --config "$cfg" encrypt "$work/part.img" --in-place
            best lin "$lin_s"
            "$vmcrypt" -q --config "$cfg" decrypt "$work/part.img" --in-place
        done
        printf ' %d MiB: %.3f' "$mib" "$(awk -v s="$lin_best" -v m="$mib" 'BEGIN { print s * 1024 / m }')"
        rm -f "$work/part.img" "$work/part.img.vmcrypt"
    done
    echo
    rm -rf "$work"
    trap - EXIT
done
