//! `vmcrypt serve --vhost-user` with real QEMU guests (the kit from Debian packages, under
//! TCG): the guest reads the whole disk and finds the host's plaintext, writes with O_DIRECT,
//! discards, writes and verifies in a loop through a whole online deep rekey, and the host
//! finds exactly that after an offline decrypt. Boots are few and each does a lot (6-8 s
//! each).

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::*;
use vmcrypt_testkit::guest::{Kit, run_guest, value};

const MIB: u64 = 1024 * 1024;

fn sha256(b: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// `vmcrypt serve DISK --vhost-user` with `queues` queues and `extra` arguments (JSON stats
/// on stop), and its socket.
fn serve_vhost(e: &Env, disk: &str, queues: u16, extra: &[&str]) -> (Served, std::path::PathBuf) {
    let sock = e.path(&format!("{disk}.vhost"));
    let q = queues.to_string();
    let mut args = vec![
        "--json",
        "--vhost-user",
        sock.to_str().expect("utf8"),
        "--queues",
        &q,
    ];
    args.extend_from_slice(extra);
    (Served::start_with(e, disk, &args, &sock), sock)
}

/// Adds the vhost-user-blk disk on `sock` to a guest's QEMU command, as the guest's
/// `index`-th virtio disk (0: vda, 1: vdb).
fn attach(q: &mut std::process::Command, sock: &std::path::Path, queues: u16, index: u8) {
    q.args([
        "-chardev",
        &format!("socket,id=c{index},path={}", sock.display()),
    ])
    .args([
        "-device",
        &format!("vhost-user-blk-pci,chardev=c{index},num-queues={queues}"),
    ]);
}

fn allocated(p: &std::path::Path) -> u64 {
    std::fs::metadata(p).expect("stat").blocks() * 512
}

#[test]
fn a_guest_reads_writes_and_discards_an_encrypted_disk_over_vhost_user() {
    let kit = Kit::get();
    let e = Env::new();
    let plain = e.raw_image("d.img", 64 * MIB);
    e.ok(&["encrypt", "d.img", "--output", "e.img"]);
    let mut model = std::fs::read(&plain).expect("plain");
    let before = allocated(&e.path("e.img"));
    let (server, sock) = serve_vhost(&e, "e.img", 2, &[]);
    // A second disk, served read-only and with no helper threads (its large reads move on the
    // queue's worker alone; vda's are split across cores): the guest's vdb.
    let ro_plain = e.raw_image("r.img", 8 * MIB);
    e.ok(&["encrypt", "r.img", "--output", "ro.img"]);
    let ro_model = std::fs::read(&ro_plain).expect("plain");
    let (ro_server, ro_sock) = serve_vhost(&e, "ro.img", 1, &["--read-only", "--io-threads", "0"]);

    // In the guest: the whole disk's checksum; a 1 MiB pattern at 3 MiB and 12 KiB at 7 x 4 KiB
    // with O_DIRECT; both queues reading at once; a discard of 8 MiB at 16 MiB, read back.
    // Then the read-only vdb: read, and writes refused, even after `blockdev --setrw`. Then
    // the write cache turned off: four writes, each durable before it completes. Last, a loop
    // through a whole online deep rekey (issue 18) that the host starts when the loop does:
    // 64 KiB patterns written at places in 48-64 MiB, each read back and checked, until the
    // host says the job is done (DONE in vdc, a plain file QEMU reads).
    let script = r#"
set -e
echo "SIZE=$(blockdev --getsize64 /dev/vda)"
echo "LBS=$(cat /sys/block/vda/queue/logical_block_size)"
echo "QUEUES=$(ls /sys/block/vda/mq | wc -l)"
echo "SUM=$(sha256sum /dev/vda | cut -d' ' -f1)"
yes vmcrypt | head -c 1048576 > /tmp/a
dd if=/tmp/a of=/dev/vda bs=1M seek=3 count=1 oflag=direct conv=notrunc 2>/dev/null
head -c 12288 /tmp/a | tr v V > /tmp/b
dd if=/tmp/b of=/dev/vda bs=4096 seek=7 count=3 oflag=direct conv=notrunc 2>/dev/null
sync
taskset 1 dd if=/dev/vda of=/dev/null bs=64k iflag=direct skip=0 count=256 2>/dev/null &
taskset 2 dd if=/dev/vda of=/dev/null bs=64k iflag=direct skip=512 count=256 2>/dev/null &
wait
echo "BACK=$(dd if=/dev/vda bs=1M skip=3 count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
blkdiscard -o 16777216 -l 8388608 /dev/vda
echo "ZEROS=$(dd if=/dev/vda bs=1M skip=16 count=8 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
sync
echo "RO=$(blockdev --getro /dev/vdb)"
echo "RO_SUM=$(sha256sum /dev/vdb | cut -d' ' -f1)"
if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 oflag=direct 2>/dev/null; then echo RO_WRITE=written; else echo RO_WRITE=refused; fi
blockdev --setrw /dev/vdb 2>/dev/null || true
if dd if=/dev/zero of=/dev/vdb bs=4096 seek=1 count=1 oflag=direct 2>/dev/null; then echo RO_FORCED=written; else echo RO_FORCED=refused; fi
echo "CACHE_WAS=$(cat /sys/block/vda/cache_type)"
echo "write through" > /sys/block/vda/cache_type
echo "CACHE=$(cat /sys/block/vda/cache_type)"
for i in 1 2 3 4; do dd if=/tmp/a of=/dev/vda bs=64k seek=$((640 + i)) count=1 oflag=direct conv=notrunc 2>/dev/null; done
for k in 0 1 2 3; do yes "round$k" | head -c 65536 > /tmp/p$k; done
echo LOOP_START
i=0; bad=0
while :; do
  i=$((i + 1)); k=$((i % 4)); at=$((768 + (i * 7919) % 256))
  dd if=/tmp/p$k of=/dev/vda bs=64k seek=$at count=1 oflag=direct conv=notrunc 2>/dev/null
  got=$(dd if=/dev/vda bs=64k skip=$at count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
  [ "$got" = "$(sha256sum < /tmp/p$k | cut -d' ' -f1)" ] || bad=$((bad + 1))
  [ "$(dd if=/dev/vdc bs=512 count=1 iflag=direct 2>/dev/null | head -c 4)" = DONE ] && break
  [ $i -lt 3000 ] || break
done
echo "LOOP_ROUNDS=$i"
echo "LOOP_BAD=$bad"
sync
echo "FINAL=$(sha256sum /dev/vda | cut -d' ' -f1)"
"#;
    let initrd = kit.initrd(e.dir.path(), script);
    let log = e.path("console.log");
    let mut qemu = kit.qemu(&initrd, &log, 512);
    attach(&mut qemu, &sock, 2, 0);
    attach(&mut qemu, &ro_sock, 1, 1);
    let flag = e.path("flag.img");
    std::fs::write(&flag, vec![0u8; 4096]).expect("flag disk");
    qemu.args([
        "-drive",
        &format!("file={},format=raw,if=virtio", flag.display()),
    ]);
    // The host's side of the loop: once the guest's loop runs, a whole online deep rekey at
    // the default rate, then DONE for the guest.
    let (console, rekeyed) = std::thread::scope(|sc| {
        let host = sc.spawn(|| {
            let until = std::time::Instant::now() + Duration::from_secs(300);
            while !std::fs::read_to_string(&log).is_ok_and(|c| c.contains("LOOP_START")) {
                if std::time::Instant::now() > until {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let out = e.run(&["--json", "rekey", "e.img", "--deep"]);
            std::fs::write(&flag, b"DONE").expect("flag");
            Some(out)
        });
        let console = run_guest(qemu, &log, Duration::from_secs(300));
        (console, host.join().expect("rekey thread"))
    });
    let rekeyed = rekeyed.unwrap_or_else(|| panic!("the guest loop never started: {console}"));
    assert_eq!(rekeyed.status.code(), Some(0), "{}", stderr(&rekeyed));
    let report = json(&String::from_utf8_lossy(&rekeyed.stdout));
    assert_eq!(report["server_pid"], server.child.id(), "{report}");
    assert_eq!(report["generation"], 2, "{report}");
    assert_eq!(value(&console, "SIZE"), Some("67108864"), "{console}");
    assert_eq!(
        value(&console, "LBS"),
        Some("4096"),
        "the data unit is the guest's block size"
    );
    assert_eq!(value(&console, "QUEUES"), Some("2"));
    assert_eq!(
        value(&console, "SUM"),
        Some(sha256(&model).as_str()),
        "the guest reads the plaintext"
    );

    let a: Vec<u8> = b"vmcrypt\n".iter().copied().cycle().take(1 << 20).collect();
    let b: Vec<u8> = a[..12288]
        .iter()
        .map(|&c| if c == b'v' { b'V' } else { c })
        .collect();
    model[3 << 20..4 << 20].copy_from_slice(&a);
    model[7 * 4096..10 * 4096].copy_from_slice(&b);
    model[16 << 20..24 << 20].fill(0);
    for i in 1..=4 {
        let at = (640 + i) * 65536;
        model[at..at + 65536].copy_from_slice(&a[..65536]);
    }
    let rounds: usize = value(&console, "LOOP_ROUNDS")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no loop: {console}"));
    assert_eq!(value(&console, "LOOP_BAD"), Some("0"), "{console}");
    eprintln!("guest loop: {rounds} rounds through the online rekey");
    assert!(
        (2..3000).contains(&rounds),
        "the loop ran through the job and ended on DONE: {rounds} rounds"
    );
    for i in 1..=rounds {
        let k = i % 4;
        let at = (768 + (i * 7919) % 256) * 65536;
        let p: Vec<u8> = format!("round{k}\n").bytes().cycle().take(65536).collect();
        model[at..at + 65536].copy_from_slice(&p);
    }
    assert_eq!(
        value(&console, "FINAL"),
        Some(sha256(&model).as_str()),
        "the guest reads back every write it made through the job"
    );
    assert_eq!(value(&console, "BACK"), Some(sha256(&a).as_str()));
    assert_eq!(value(&console, "RO"), Some("1"), "vdb is read-only");
    assert_eq!(value(&console, "RO_SUM"), Some(sha256(&ro_model).as_str()));
    assert_eq!(value(&console, "RO_WRITE"), Some("refused"), "{console}");
    assert_eq!(value(&console, "RO_FORCED"), Some("refused"), "{console}");
    assert_eq!(value(&console, "CACHE_WAS"), Some("write back"));
    assert_eq!(value(&console, "CACHE"), Some("write through"), "{console}");
    assert_eq!(
        value(&console, "ZEROS"),
        Some(sha256(&vec![0u8; 8 << 20]).as_str())
    );
    let after = allocated(&e.path("e.img"));
    assert!(
        after + 7 * MIB <= before,
        "the discard gave back room: {before} -> {after}"
    );

    let out = server.stop();
    let stats = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(stats["vhost_stats"]["connections"], 1, "{stats}");
    // Both queues carried requests (each vCPU submits on its own queue).
    let per_queue = stats["vhost_stats"]["per_queue"]
        .as_array()
        .expect("per_queue");
    assert_eq!(per_queue.len(), 2);
    assert!(per_queue.iter().all(|n| n.as_u64() >= Some(256)), "{stats}");
    // The four writes after the guest turned its write cache off were each flushed.
    assert!(
        stats["vhost_stats"]["write_through"].as_u64() >= Some(4),
        "{stats}"
    );
    // A guest with 4096-byte blocks on a 4096-byte-unit disk never needs the copying path.
    assert_eq!(stats["vhost_stats"]["copied"], 0, "{stats}");
    let ro_out = ro_server.stop();
    let ro_stats = json(&String::from_utf8_lossy(&ro_out.stdout));
    assert_eq!(ro_stats["vhost_stats"]["bytes_written"], 0, "{ro_stats}");
    e.ok(&["decrypt", "ro.img", "--output", "ro-back.img"]);
    assert!(
        std::fs::read(e.path("ro-back.img")).expect("back") == ro_model,
        "the read-only disk is unchanged"
    );
    e.ok(&["decrypt", "e.img", "--output", "back.img"]);
    assert!(
        std::fs::read(e.path("back.img")).expect("back") == model,
        "the host finds exactly what the guest wrote"
    );
}

#[test]
fn the_backend_outlives_a_killed_qemu_and_a_guest_rebooted_twice() {
    let kit = Kit::get();
    let e = Env::new();
    let plain = e.raw_image("d.img", 48 * MIB);
    // A 512-byte data unit: the guest's logical block size follows it.
    e.ok(&[
        "encrypt",
        "d.img",
        "--output",
        "e.img",
        "--sector-size",
        "512",
    ]);
    let mut model = std::fs::read(&plain).expect("plain");
    // One process serves the disk over vhost-user and NBD at once.
    let nbd = e.path("e.img.nbd");
    let nbd_arg = nbd.to_str().expect("utf8").to_string();
    let (server, sock) = serve_vhost(&e, "e.img", 1, &["--nbd", &nbd_arg]);
    let nbd_uri = format!("nbd+unix:///?socket={nbd_arg}");
    let before = allocated(&e.path("e.img"));

    // First QEMU: a flushed 1 MiB write at 8 MiB, then writes without end until QEMU is
    // killed (kill -9) in the middle of them. Meanwhile an NBD client writes 1 MiB at 12 MiB.
    let writer = r#"
echo "LBS=$(cat /sys/block/vda/queue/logical_block_size)"
yes flushed | head -c 1048576 > /tmp/p
dd if=/tmp/p of=/dev/vda bs=1M seek=8 count=1 oflag=direct conv=notrunc 2>/dev/null
sync
echo FLUSHED
while true; do dd if=/dev/urandom of=/dev/vda bs=64k seek=512 count=32 oflag=direct conv=notrunc 2>/dev/null; done
"#;
    let dir = tempfile::tempdir_in(e.dir.path()).expect("dir");
    let log = dir.path().join("killed.log");
    let mut q = kit.qemu(&kit.initrd(dir.path(), writer), &log, 256);
    attach(&mut q, &sock, 1, 0);
    let errlog = dir.path().join("killed.stderr");
    let mut child = q
        .stderr(std::fs::File::create(&errlog).expect("stderr"))
        .spawn()
        .expect("qemu");
    let until = std::time::Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("FLUSHED")
    {
        assert!(
            std::time::Instant::now() < until,
            "no FLUSHED: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "qemu ended early: {}\n{}",
            std::fs::read_to_string(&errlog).unwrap_or_default(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    qemu_io(
        &nbd_uri,
        &[
            "write -P 0x6b 12M 1M".to_string(),
            "flush".to_string(),
            "read -P 0x6b 12M 1M".to_string(),
        ],
    );
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the guest was still writing while the NBD client ran"
    );
    std::thread::sleep(Duration::from_millis(1000));
    child.kill().expect("kill -9 qemu");
    let _ = child.wait();
    let console = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(value(&console, "LBS"), Some("512"), "{console}");

    // Second QEMU on the same backend: it reads the flushed write and the NBD client's, its
    // first boot discards 4 MiB at 20 MiB (512-byte blocks), and the guest reboots twice (the
    // count lives on the disk, in the last 4 KiB).
    let rebooter = r#"
last=$(( $(blockdev --getsize64 /dev/vda) / 4096 - 1 ))
mark=$(dd if=/dev/vda bs=4096 skip=$last count=1 iflag=direct 2>/dev/null | head -c 5)
case "$mark" in
    BOOT1) next=BOOT2 ;;
    BOOT2) next=BOOT3 ;;
    *) next=BOOT1 ;;
esac
echo "BOOTED=$next"
echo "FLUSHED_SUM=$(dd if=/dev/vda bs=1M skip=8 count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
echo "NBD_SUM=$(dd if=/dev/vda bs=1M skip=12 count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
if [ "$next" = BOOT1 ]; then
    blkdiscard -o 20971520 -l 4194304 /dev/vda
    echo "ZEROS=$(dd if=/dev/vda bs=512 skip=40960 count=8192 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
fi
{ printf '%s' "$next"; head -c 4091 /dev/zero; } > /tmp/m
dd if=/tmp/m of=/dev/vda bs=4096 seek=$last count=1 oflag=direct conv=notrunc 2>/dev/null
sync
[ "$next" = BOOT3 ] || reboot -f
"#;
    let log = dir.path().join("reboots.log");
    let mut q = kit.qemu_rebooting(&kit.initrd(dir.path(), rebooter), &log, 256);
    attach(&mut q, &sock, 1, 0);
    let console = run_guest(q, &log, Duration::from_secs(300));
    let boots: Vec<&str> = console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("BOOTED="))
        .collect();
    assert_eq!(boots, ["BOOT1", "BOOT2", "BOOT3"], "{console}");
    let flushed: Vec<u8> = b"flushed\n".iter().copied().cycle().take(1 << 20).collect();
    assert_eq!(
        value(&console, "FLUSHED_SUM"),
        Some(sha256(&flushed).as_str())
    );
    let by_nbd = vec![0x6bu8; 1 << 20];
    let nbd_sums: Vec<&str> = console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("NBD_SUM="))
        .collect();
    assert_eq!(nbd_sums, [sha256(&by_nbd).as_str(); 3], "{console}");
    assert_eq!(
        value(&console, "ZEROS"),
        Some(sha256(&vec![0u8; 4 << 20]).as_str()),
        "{console}"
    );
    let after = allocated(&e.path("e.img"));
    assert!(
        after + 3 * MIB <= before,
        "the discard on 512-byte blocks gave back room: {before} -> {after}"
    );

    let out = server.stop();
    let stats = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(stats["vhost_stats"]["connections"], 2, "{stats}");
    // Offline: the flushed write and the boot mark are there; the rest is the plaintext but
    // for the region the killed guest was overwriting.
    e.ok(&["decrypt", "e.img", "--output", "back.img"]);
    let back = std::fs::read(e.path("back.img")).expect("back");
    model[8 << 20..9 << 20].copy_from_slice(&flushed);
    model[12 << 20..13 << 20].fill(0x6b);
    model[20 << 20..24 << 20].fill(0);
    let last = model.len() - 4096;
    model[last..].fill(0);
    model[last..last + 5].copy_from_slice(b"BOOT3");
    let (a, b) = (32 << 20, (32 << 20) + 32 * 65536);
    assert!(
        back[..a] == model[..a] && back[b..] == model[b..],
        "the disk holds what the guests wrote"
    );
}
