#!/usr/bin/env bash
# vmcrypt's vhost-user-blk backend next to qemu-storage-daemon's (raw and LUKS), seen from one
# QEMU guest under TCG (the kit of the tests, under target/guest-kit): 256 MiB sequential read
# and write with 1 MiB O_DIRECT requests, 4 KiB random O_DIRECT reads with 1 and 16 threads.
# Prints MiB/s or IOPS per case, the ratios, backend CPU seconds per GiB and peak RSS; one run
# of ROUNDS rounds (one boot per backend each, rotating order), medians, and the share of CPU
# time other tenants stole meanwhile. Under TCG the guest itself is slow: only ratios mean
# anything. The images go to tmpfs (/dev/shm) when it has 4 GiB free.
# Usage: bash benches/guest-compare.sh [DIR (default target/guest-bench)] [ROUNDS (default 3)]
set -euo pipefail
cd "$(dirname "$0")/.."
for t in qemu-img qemu-storage-daemon gcc; do
    command -v "$t" >/dev/null || { echo "guest-compare.sh needs $t (apt-get install qemu-utils qemu-system-common gcc)" >&2; exit 1; }
done
dir="${1:-target/guest-bench}"
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
cargo build --release -q -p vmcrypt-cli
gcc -O2 -static -pthread -o "$dir/gbench" benches/guest/gbench.c
cargo run --release -q -p vmcrypt-benches --example guest_compare -- "$dir" "$PWD/target/release/vmcrypt" "$dir/gbench" "${2:-3}"
