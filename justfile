# The commands CI runs, and a few more. `just` is optional: each recipe is one plain command.

# Everything CI runs (.ci/run also installs missing tools first).
ci:
    bash .ci/run

test:
    cargo test --workspace

lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Supply chain (deny.toml): licenses, duplicates, sources; advisories where GitHub is reachable.
deny:
    cargo deny --offline check licenses bans sources

# The README's main job: encrypt the sample VMDK with the native provider.
demo:
    cargo run --release -p vmcrypt-cli -- encrypt testdata/images/sample.vmdk --output target/sample-encrypted.vmdk

# Criterion throughput benches (XTS by unit size and threads; whole images).
bench:
    cargo bench -p vmcrypt-benches

# XTS next to OpenSSL on this machine, in one run.
compare:
    bash benches/compare.sh

# Speed issue table: XTS vs OpenSSL per backend, 2 GiB image jobs vs qemu-img luks and cp,
# on tmpfs and ext4, peak memory, seconds per GiB at three sizes.
speed:
    bash benches/speed-compare.sh

# Crash-safety slow suite: power loss at every sync point of 1 GiB jobs (~30 min).
crash-slow:
    cargo test --release -p vmcrypt-core --test reencrypt_powerloss --test shift_powerloss -- --ignored --nocapture --test-threads 1

# kill -9 of a serving process at 100 random moments of online deep rekeys (issue 18).
online-kill:
    cargo test -p vmcrypt-cli --test online -- --ignored --nocapture

# Crash-safe in-place encryption next to cryptsetup reencrypt (checksum and none) on 1 GiB.
compare-reencrypt:
    bash benches/reencrypt-compare.sh

# Boot storm: 200 VMs fetch their KEK at once through the host agent from a PyKMIP cluster
# (new TLS per request vs kept connections, cold vs warm cache).
storm:
    cargo bench -p vmcrypt-benches --bench boot_storm

# The topology doctor on every example topology (the anti-patterns exit 1 by design).
topologies:
    for f in testdata/topologies/*.toml; do echo "== $f"; cargo run -q -p vmcrypt-cli -- topology check "$f" || true; done

# The NBD export next to qemu-storage-daemon (raw and LUKS) under qemu-img bench at QD32:
# MiB/s, ratios, CPU seconds per GiB, peak RSS.
serve-compare:
    bash benches/serve-compare.sh

# An online deep rekey of a served 1 GiB disk under qemu-img bench: the client's MiB/s before,
# during and after, the rekey's GB/s with no client, the worst request latency.
online-rekey DIR="/dev/shm":
    bash benches/online-rekey.sh {{DIR}}

# vhost-user-blk: a QEMU guest on vmcrypt vs qemu-storage-daemon raw and LUKS (TCG; ratios)
guest-compare:
    bash benches/guest-compare.sh

# The manual pages and shell completions in dist/, made anew from the command line's
# definition (tests/dist.rs fails when they are out of date).
dist:
    cargo build -q -p vmcrypt-cli
    rm -rf dist/man && target/debug/vmcrypt man dist/man
    mkdir -p dist/completions
    target/debug/vmcrypt completions bash > dist/completions/vmcrypt.bash
    target/debug/vmcrypt completions zsh > dist/completions/_vmcrypt
    target/debug/vmcrypt completions fish > dist/completions/vmcrypt.fish
