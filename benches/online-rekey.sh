#!/usr/bin/env bash
# Online deep rekey under a steady client (issue 18), in one run: a 1 GiB disk served by
# `vmcrypt serve` over NBD (Unix socket) on DIR (default /dev/shm, tmpfs), driven by
# `qemu-img bench` (64 KiB requests at queue depth 8, runs alternately reading and writing)
# before, during and after `vmcrypt rekey --deep` at the default rate; then the rekey's own
# rate with no client; then with a cap (`--rate`). Meanwhile a latency probe (qemu-io fed by
# benches/online-probe.py: one 4 KiB request every 4 ms, half of them at the job's boundary,
# i.e. on the window being rewritten) records each request's latency.
# Prints the client's MiB/s per phase and the ratio during/before (goal >= 0.5), the rekey's
# GB/s (goal >= 1 on tmpfs) and the probe's worst and 99th-percentile latency per phase (goal:
# worst < 100 ms).
# Usage: bash benches/online-rekey.sh [DIR (default /dev/shm)] [SIZE (default 1G)]
set -euo pipefail
cd "$(dirname "$0")/.."
for t in qemu-img qemu-io python3; do
    command -v "$t" >/dev/null || { echo "online-rekey.sh needs $t (apt-get install qemu-utils python3)" >&2; exit 1; }
done
dir="${1:-/dev/shm}/vmcrypt-online-bench-$$"
size="${2:-1G}"
cargo build --release -q -p vmcrypt-cli
vmcrypt="$PWD/target/release/vmcrypt"
probe_py="$PWD/benches/online-probe.py"
mkdir -p "$dir"
vm="$vmcrypt --config $dir/cfg.toml"
disk="$dir/disk.img"
sock="$dir/nbd.sock"
uri="nbd+unix:///d?socket=$sock"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
# The seconds the last job took, as the server measured it (the CLI polls its progress).
job_seconds() { $vm jobs "$disk" --json | python3 -c 'import json, sys; print(json.load(sys.stdin)["last"]["seconds"])'; }

head -c "$size" /dev/urandom > "$disk"
bytes=$(stat -c %s "$disk")
$vm encrypt "$disk" --in-place -q
$vm serve "$disk" --nbd "$sock" --name d -q &
server=$!; pids+=("$server")
for _ in $(seq 500); do [ -S "$sock" ] && [ -S "$disk.vmcrypt-control" ] && break; sleep 0.02; done
[ -S "$sock" ] || { echo "the server did not start" >&2; exit 1; }

# One qemu-img bench run of 256 MiB, reading and writing by turns: appends its MiB/s to $1.
# (Run in this shell, not in $(...), so that the turns go on from phase to phase.)
run=0
client_run() {
    local flag=""
    [ $((run % 2)) -eq 1 ] && flag="-w"
    run=$((run + 1))
    # shellcheck disable=SC2086
    qemu-img bench -f raw -d 8 -s 65536 -c 4096 -o $(( (run * 268435456) % bytes )) $flag "$uri" |
        awk '/Run completed/ { printf "%.1f\n", 256 / $4 }' >> "$1"
}

# An online deep rekey (more `rekey` arguments: "$@") with the client running: the runs that
# end before the job does are appended to $1; job_s is the job's own time.
during_job() {
    local out=$1 job
    shift
    $vm rekey "$disk" --deep -q "$@" &
    job=$!
    while kill -0 "$job" 2>/dev/null; do
        : > "$dir/last"
        client_run "$dir/last"
        kill -0 "$job" 2>/dev/null && cat "$dir/last" >> "$out"
    done
    wait "$job"
    job_s=$(job_seconds)
}

# The probe: starts it, writing qemu-io's output to $1.
probe_start() {
    python3 "$probe_py" "$disk.vmcrypt-control" "$bytes" 4 | qemu-io -f raw "$uri" > "$1" 2>&1 &
    probe=$!
}
probe_stop() { kill "$probe" 2>/dev/null || true; pkill -f "online-probe.py $disk" 2>/dev/null || true; wait "$probe" 2>/dev/null || true; }
# Latencies (ms) of the requests in a probe log: "count worst p99".
latency() {
    awk 'match($0, /and [0-9.]+ ops\/sec/) { s = substr($0, RSTART + 4, RLENGTH - 12); print 1000 / s }' "$1" |
        sort -g | awk '{ v[NR] = $1 } END { i = int(NR * 0.99); if (i < 1) i = 1; printf "%d %.1f %.2f", NR, v[NR], v[i] }'
}
mean() { awk '{ s += $1; n++ } END { if (n) printf "%.1f", s / n; else print "n/a" }'; }

# Phase: before.
probe_start "$dir/probe-before"
for _ in 1 2 3 4; do client_run "$dir/before"; done
probe_stop

# Phase: during, at the default rate.
probe_start "$dir/probe-during"
during_job "$dir/during"
s_default=$job_s
probe_stop

# Phase: after.
for _ in 1 2 3 4; do client_run "$dir/after"; done

# The rekey alone (no client), then capped at 200 MB/s with the client running.
$vm rekey "$disk" --deep -q
s_idle=$(job_seconds)
probe_start "$dir/probe-capped"
during_job "$dir/capped" --rate 200
s_capped=$job_s
probe_stop

for f in before during after capped; do touch "$dir/$f"; done
b=$(mean < "$dir/before"); d=$(mean < "$dir/during"); a=$(mean < "$dir/after"); c=$(mean < "$dir/capped")
nd=$(grep -c . "$dir/during" || true); nc=$(grep -c . "$dir/capped" || true)
gbs() { awk -v b="$bytes" -v s="$1" 'BEGIN { printf "%.2f GB/s (%.2f s)", b / s / 1e9, s }'; }
read -r lb_n lb_w lb_p <<< "$(latency "$dir/probe-before")"
read -r ld_n ld_w ld_p <<< "$(latency "$dir/probe-during")"
read -r lc_n lc_w lc_p <<< "$(latency "$dir/probe-capped")"

cpu=$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)
echo "CPU: $cpu ($(nproc) cores); $(qemu-img --version | head -1)"
echo "disk: $(numfmt --to=iec "$bytes") on $(stat -f -c %T "$dir"), served over NBD; client: qemu-img bench 64 KiB QD8, read/write runs of 256 MiB"
printf '%-34s %12s %8s %22s\n' phase "client MiB/s" "/before" "probe worst / p99 (ms)"
printf '%-34s %12s %8s %22s\n' "before" "$b" "1.00" "$lb_w / $lb_p ($lb_n)"
printf '%-34s %12s %8s %22s\n' "during (default rate, $nd runs)" "$d" "$(awk -v x="$d" -v y="$b" 'BEGIN{printf "%.2f", x/y}')" "$ld_w / $ld_p ($ld_n)"
printf '%-34s %12s %8s\n' "after" "$a" "$(awk -v x="$a" -v y="$b" 'BEGIN{printf "%.2f", x/y}')"
printf '%-34s %12s %8s %22s\n' "during (--rate 200, $nc runs)" "$c" "$(awk -v x="$c" -v y="$b" 'BEGIN{printf "%.2f", x/y}')" "$lc_w / $lc_p ($lc_n)"
echo "rekey, default rate, client running: $(gbs "$s_default")"
echo "rekey, no client:                    $(gbs "$s_idle")"
echo "rekey, --rate 200, client running:   $(gbs "$s_capped")"
