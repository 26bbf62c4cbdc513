#!/usr/bin/env bash
# vmcrypt's crash-safe in-place encryption (the data-shift engine, and the journaled engine it
# falls back to) next to `cryptsetup reencrypt --encrypt`, with its
# default checksum resilience and with --resilience none, on copies of the same file, in one run.
# cryptsetup works on the plain file with a detached LUKS2 header (no device-mapper).
#
# Usage: bash benches/reencrypt-compare.sh [SIZE_MIB, default 1024] [DIR, default a new temp dir]
set -euo pipefail
cd "$(dirname "$0")/.."
size="${1:-1024}"
dir="${2:-$(mktemp -d -p "${TMPDIR:-/tmp}" vmcrypt-reencrypt.XXXXXX)}"
command -v cryptsetup >/dev/null || { echo "needs cryptsetup: apt-get install cryptsetup-bin" >&2; exit 1; }

cargo build --release -q -p vmcrypt-cli
vmcrypt="$PWD/target/release/vmcrypt"
cfg="$dir/cfg/config.toml"
"$vmcrypt" -q --config "$cfg" provider add-native bench >/dev/null 2>&1 || true

src="$dir/source.img"
[ -f "$src" ] || head -c "$((size * 1024 * 1024))" /dev/urandom > "$src"
head -c 64 /dev/urandom > "$dir/key"

now() { date +%s.%N; }
run() { # label, then the command; prints seconds
    cp "$src" "$dir/work.img"
    rm -f "$dir/hdr.img" "$dir/work.img.vmcrypt" "$dir/work.img.vmcrypt-journal"
    sync
    local t0 t1
    t0=$(now)
    "$@" >/dev/null 2>&1
    t1=$(now)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}
luks() { # resilience
    cryptsetup reencrypt --encrypt --type luks2 --header "$dir/hdr.img" --key-file "$dir/key" \
        --batch-mode --resilience "$1" --sector-size 4096 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
        --force-offline-reencrypt "$dir/work.img"
}

t_vm=$(run "$vmcrypt" -q --config "$cfg" encrypt "$dir/work.img" --in-place)
t_jr=$(run env VMCRYPT_INPLACE_ENGINE=journal "$vmcrypt" -q --config "$cfg" encrypt "$dir/work.img" --in-place)
t_ck=$(run luks checksum)
t_no=$(run luks none)

gbps() { awk -v s="$1" -v m="$size" 'BEGIN { printf "%.2f", m * 1048576 / s / 1e9 }'; }
echo "file: $size MiB in $dir ($(df -T "$dir" | awk 'NR==2 {print $2}')); $(cryptsetup --version)"
printf '%-40s %9s %8s\n' "tool" "seconds" "GB/s"
printf '%-40s %9s %8s\n' "vmcrypt encrypt --in-place (data shift)" "$t_vm" "$(gbps "$t_vm")"
printf '%-40s %9s %8s\n' "vmcrypt, journaled engine (fallback)" "$t_jr" "$(gbps "$t_jr")"
printf '%-40s %9s %8s\n' "cryptsetup reencrypt (checksum)" "$t_ck" "$(gbps "$t_ck")"
printf '%-40s %9s %8s\n' "cryptsetup reencrypt (none)" "$t_no" "$(gbps "$t_no")"
awk -v v="$t_vm" -v c="$t_ck" -v n="$t_no" 'BEGIN {
    printf "vmcrypt vs checksum mode: %.2fx faster (goal >= 2x)\n", c / v
    printf "vmcrypt vs unprotected mode: %.2fx the time (goal <= 1.2x)\n", v / n
}'
