//! `vmcrypt serve --vhost-user` with real QEMU guests (the kit from Debian packages, under
//! TCG): the guest reads the whole disk and finds the host's plaintext, writes with O_DIRECT,
//! discards, and the host finds exactly that after an offline decrypt. Boots are few and each
//! does a lot (6-8 s each).

mod common;

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use common::*;
use vmcrypt_testkit::guest::{Kit, run_guest, value};

const MIB: u64 = 1024 * 1024;

fn sha256(b: &[u8]) -> String {
    use std::fmt::Write;
    let out = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().expect("stdin").write_all(b)?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    let mut s = String::new();
    let _ = write!(
        s,
        "{}",
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
    );
    s
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
    let sock = e.path("e.vhost");
    let server = Served::start_with(
        &e,
        "e.img",
        &[
            "--json",
            "--vhost-user",
            sock.to_str().expect("utf8"),
            "--queues",
            "2",
        ],
        &sock,
    );

    // In the guest: the whole disk's checksum; a 1 MiB pattern at 3 MiB and 12 KiB at 7 x 4 KiB
    // with O_DIRECT; both queues reading at once; a discard of 8 MiB at 16 MiB, read back.
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
dd if=/dev/vda of=/dev/null bs=64k iflag=direct skip=0 count=256 2>/dev/null &
dd if=/dev/vda of=/dev/null bs=64k iflag=direct skip=512 count=256 2>/dev/null &
wait
echo "BACK=$(dd if=/dev/vda bs=1M skip=3 count=1 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
blkdiscard -o 16777216 -l 8388608 /dev/vda
echo "ZEROS=$(dd if=/dev/vda bs=1M skip=16 count=8 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)"
sync
"#;
    let initrd = kit.initrd(e.dir.path(), script);
    let log = e.path("console.log");
    let mut qemu = kit.qemu(&initrd, &log, 512);
    qemu.args(["-chardev", &format!("socket,id=c0,path={}", sock.display())])
        .args(["-device", "vhost-user-blk-pci,chardev=c0,num-queues=2"]);
    let console = run_guest(qemu, &log, Duration::from_secs(300));
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
    assert_eq!(value(&console, "BACK"), Some(sha256(&a).as_str()));
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
    e.ok(&["decrypt", "e.img", "--output", "back.img"]);
    assert!(
        std::fs::read(e.path("back.img")).expect("back") == model,
        "the host finds exactly what the guest wrote"
    );
}
