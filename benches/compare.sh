#!/usr/bin/env bash
# vmcrypt's XTS engine next to OpenSSL's aes-256-xts, measured in one run on this machine.
# Usage: bash benches/compare.sh [SECONDS per case, default 2]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-2}"
command -v openssl >/dev/null || { echo "compare.sh needs openssl (apt-get install openssl)" >&2; exit 1; }

cargo build --release -q -p vmcrypt-benches --bin xts_speed
ours=$(XTS_SPEED_SECONDS="$secs" target/release/xts_speed)

openssl_gbps() { # bytes -> GB/s on one core
    openssl speed -evp aes-256-xts -bytes "$1" -seconds "$secs" 2>/dev/null \
        | awk '/^AES-256-XTS/ { v=$2; sub(/k$/, "", v); printf "%.3f", v * 1000 / 1e9 }'
}
o512=$(openssl_gbps 512)
o4096=$(openssl_gbps 4096)

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
echo "CPU: $cpu ($(nproc) cores); OpenSSL: $(openssl version | cut -d' ' -f1-2); vmcrypt $(echo "$ours" | head -1)"
printf '%-8s %-8s %-14s %-16s %s\n' unit threads "vmcrypt GB/s" "openssl GB/s*" ratio
while read -r label u t g; do
    [ "$label" = xts ] || continue
    u=${u#unit=}; t=${t#threads=}; g=${g#gbps=}
    if [ "$u" = 512 ]; then o=$o512; else o=$o4096; fi
    ratio=$(awk -v a="$g" -v b="$o" 'BEGIN { printf "%.2f", a / b }')
    printf '%-8s %-8s %-14s %-16s %s\n' "$u" "$t" "$g" "$o" "$ratio"
done <<< "$ours"
echo "* openssl speed runs on one core; the ratio for 2 threads compares against that one core."
