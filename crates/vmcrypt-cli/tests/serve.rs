//! `vmcrypt serve --nbd`: an encrypted disk used live by real QEMU clients (qemu-img,
//! qemu-io), and by a raw NBD client written here for what QEMU never sends (partial-unit
//! writes from two clients, malformed requests, a stalled request). After each server stops
//! (SIGTERM, or kill -9), an offline decrypt must give exactly the bytes the clients wrote.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

use std::time::{Duration, Instant};

use common::*;

const MIB: u64 = 1024 * 1024;

/// The bytes of the disk after an offline decrypt into a new file.
fn decrypted(e: &Env, disk: &str) -> Vec<u8> {
    let out = format!("{disk}.plain");
    let _ = std::fs::remove_file(e.path(&out));
    e.ok(&["decrypt", disk, "--output", &out]);
    std::fs::read(e.path(&out)).expect("read decrypted")
}

fn allocated(p: &Path) -> u64 {
    std::fs::metadata(p).expect("stat").blocks() * 512
}

fn put(model: &mut [u8], off: u64, len: usize, byte: u8) {
    model[off as usize..off as usize + len].fill(byte);
}

/// A raw NBD client: fixed newstyle, `NBD_OPT_GO` on the default export, simple replies.
struct Raw {
    s: UnixStream,
}

impl Raw {
    fn connect(socket: &Path) -> Raw {
        let mut s = UnixStream::connect(socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        let mut greeting = [0u8; 18];
        s.read_exact(&mut greeting).expect("greeting");
        assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
        s.write_all(&1u32.to_be_bytes()).expect("flags");
        // NBD_OPT_GO: name "", no info requests.
        let mut opt = b"IHAVEOPT".to_vec();
        opt.extend_from_slice(&7u32.to_be_bytes());
        opt.extend_from_slice(&6u32.to_be_bytes());
        opt.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        s.write_all(&opt).expect("go");
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).expect("option reply");
            let kind = u32::from_be_bytes(h[12..16].try_into().expect("4"));
            let len = u32::from_be_bytes(h[16..20].try_into().expect("4"));
            let mut data = vec![0u8; len as usize];
            s.read_exact(&mut data).expect("option data");
            if kind == 1 {
                break;
            }
            assert_eq!(kind, 3, "only INFO replies before the ACK");
        }
        Raw { s }
    }

    fn request(&mut self, kind: u16, cookie: u64, off: u64, len: u32, data: &[u8]) {
        let mut h = 0x2560_9513u32.to_be_bytes().to_vec();
        h.extend_from_slice(&0u16.to_be_bytes());
        h.extend_from_slice(&kind.to_be_bytes());
        h.extend_from_slice(&cookie.to_be_bytes());
        h.extend_from_slice(&off.to_be_bytes());
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(data);
        self.s.write_all(&h).expect("request");
    }

    /// The next simple reply: (errno, cookie).
    fn reply(&mut self) -> (u32, u64) {
        let mut r = [0u8; 16];
        self.s.read_exact(&mut r).expect("reply");
        assert_eq!(
            u32::from_be_bytes(r[..4].try_into().expect("4")),
            0x6744_6698
        );
        (
            u32::from_be_bytes(r[4..8].try_into().expect("4")),
            u64::from_be_bytes(r[8..].try_into().expect("8")),
        )
    }

    /// Whether the server closed the connection (EOF or reset) within the read timeout.
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }
}

#[test]
fn qemu_clients_use_a_served_disk_and_the_offline_decrypt_finds_their_writes() {
    let e = Env::new();
    let plain = e.raw_image("d.img", 16 * MIB);
    e.ok(&["encrypt", "d.img", "--output", "e.img"]);
    let mut model = std::fs::read(&plain).expect("read plain");
    let server = Served::start(&e, "e.img", &[]);
    let uri = server.uri();

    // The export reads as the plaintext.
    let cmp = qemu_img(&[
        "compare",
        "-f",
        "raw",
        "-F",
        "raw",
        &uri,
        plain.to_str().expect("utf8"),
    ]);
    assert!(String::from_utf8_lossy(&cmp.stdout).contains("identical"));

    // Every offline command refuses the served disk with exit 5, and changes nothing.
    // (`rekey`, `encrypt --in-place` and `decrypt --in-place` are carried out by the server
    // instead, online: tests/online.rs.)
    for args in [
        &["decrypt", "e.img", "--output", "x.img"][..],
        &["resume", "e.img"],
    ] {
        let o = e.run(args);
        assert_eq!(o.status.code(), Some(5), "{args:?}: {}", stderr(&o));
    }
    assert!(!e.path("x.img").exists());
    // QEMU cannot open the file beside the server, for writing or for reading.
    let image = e.path("e.img");
    for flags in [&[][..], &["-r"]] {
        let o = qemu_io_raw(image.to_str().expect("utf8"), &["read 0 512".into()], flags);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("lock"),
            "qemu-io {flags:?} opened a served disk: {err}"
        );
    }
    // A second server is refused too.
    let o = e.run(&[
        "serve",
        "e.img",
        "--nbd",
        e.path("other.sock").to_str().expect("utf8"),
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));

    // Writes at aligned and unaligned offsets (one straddles two data units, one is larger
    // than a server buffer and starts and ends inside units), zeroes with and without a hole,
    // a discard, a write with FUA; each read back through the export.
    let writes: [(u8, u64, usize); 5] = [
        (0x11, 8192, 4096),
        (0x22, 1000, 5000),
        (0x33, 16384 - 100, 200),
        (0x44, 2 * MIB, 65536),
        (0x45, 11 * MIB + 1536, 3 * MIB as usize + 1024),
    ];
    let mut cmds = Vec::new();
    for (p, off, len) in writes {
        let fua = if p == 0x44 { "-f " } else { "" };
        cmds.push(format!("write {fua}-P {p} {off} {len}"));
        put(&mut model, off, len, p);
    }
    cmds.push(format!("write -z {} {}", 65536, 131072));
    put(&mut model, 65536, 131072, 0);
    cmds.push(format!("write -z -u {} {}", 3 * MIB, MIB));
    put(&mut model, 3 * MIB, MIB as usize, 0);
    cmds.push(format!("discard {} {}", MIB, MIB));
    put(&mut model, MIB, MIB as usize, 0);
    for (p, off, len) in writes {
        cmds.push(format!("read -P {p} {off} {len}"));
    }
    cmds.push(format!("read -P 0 {} {}", MIB, MIB));
    cmds.push(format!("read -P 0 {} {}", 3 * MIB, MIB));
    cmds.push("flush".into());
    qemu_io(&uri, &cmds);

    // Two qemu-io clients at once, each writing and verifying its own regions.
    let clients: Vec<_> = [0x55u8, 0x66]
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut cmds = Vec::new();
            for k in 0..32u64 {
                let off = 4 * MIB + (2 * k + i as u64) * 65536;
                cmds.push(format!("write -P {p} {off} 65536"));
                cmds.push(format!("read -P {p} {off} 65536"));
                put(&mut model, off, 65536, p);
            }
            let uri = uri.clone();
            std::thread::spawn(move || qemu_io(&uri, &cmds))
        })
        .collect();
    for c in clients {
        c.join().expect("qemu-io client");
    }

    // Two raw clients writing the two halves of the same units, 512 bytes at a time: a
    // read-modify-write each, and neither loses the other's bytes.
    let base = 8 * MIB;
    let halves: Vec<_> = [(0xa0u8, 0u64), (0xb0, 2048)]
        .into_iter()
        .map(|(p, at)| {
            let socket = server.socket.clone();
            std::thread::spawn(move || {
                let mut c = Raw::connect(&socket);
                for u in 0..64u64 {
                    c.request(1, u, base + u * 4096 + at, 512, &[p; 512]);
                }
                for _ in 0..64 {
                    assert_eq!(c.reply().0, 0, "partial write failed");
                }
                c.request(2, 0, 0, 0, &[]);
            })
        })
        .collect();
    for h in halves {
        h.join().expect("raw client");
    }
    for u in 0..64u64 {
        put(&mut model, base + u * 4096, 512, 0xa0);
        put(&mut model, base + u * 4096 + 2048, 512, 0xb0);
    }

    // Bad requests: past the end and unaligned get EINVAL and the connection goes on; a bad
    // magic or a write longer than 32 MiB closes it; nothing is written.
    let mut c = Raw::connect(&server.socket);
    c.request(0, 1, 16 * MIB, 4096, &[]);
    assert_eq!(c.reply(), (22, 1), "a read past the end is EINVAL");
    c.request(1, 2, 16 * MIB - 512, 1024, &[0xee; 1024]);
    assert_eq!(c.reply(), (22, 2), "a write running past the end is EINVAL");
    c.request(1, 3, 100, 512, &[0xee; 512]);
    assert_eq!(c.reply(), (22, 3), "an unaligned write is EINVAL");
    c.request(9, 4, 0, 0, &[]);
    assert_eq!(c.reply(), (22, 4), "an unknown command is EINVAL");
    c.request(1, 5, 0, 64 << 20, &[]);
    assert!(c.closed(), "an oversized write ends the connection");
    let mut c = Raw::connect(&server.socket);
    c.s.write_all(&[0x42; 28]).expect("garbage");
    assert!(c.closed(), "a bad magic ends the connection");

    // A client that stops in the middle of a request is cut off after the stall deadline
    // (1 s here), while another is served.
    let mut stalled = Raw::connect(&server.socket);
    stalled
        .s
        .write_all(&0x2560_9513u32.to_be_bytes())
        .expect("half");
    let started = Instant::now();
    qemu_io(&uri, &["read -P 0x11 8192 4096".to_string()]);
    assert!(stalled.closed(), "the stalled client is cut off");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "cut off after {waited:?}"
    );

    let out = server.stop();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("served"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The lock is released, and the disk decrypts to exactly what the clients wrote.
    assert!(
        decrypted(&e, "e.img") == model,
        "the decrypted disk differs from the model"
    );
}

#[test]
fn trim_gives_back_room_and_kill_9_keeps_every_flushed_write() {
    let e = Env::new();
    let plain = e.raw_image("d.img", 16 * MIB);
    e.ok(&["encrypt", "d.img", "--output", "e.img"]);
    let mut model = std::fs::read(&plain).expect("read plain");
    let disk = e.path("e.img");
    let before = allocated(&disk);
    assert!(
        before >= 16 * MIB,
        "fully allocated to start with: {before}"
    );

    let server = Served::start(&e, "e.img", &[]);
    let uri = server.uri();
    qemu_io(
        &uri,
        &[
            format!("discard 0 {}", 8 * MIB),
            format!("write -z -u {} {}", 8 * MIB, 2 * MIB),
            format!("read -P 0 0 {}", 10 * MIB),
        ],
    );
    put(&mut model, 0, 10 * MIB as usize, 0);
    let after = allocated(&disk);
    assert!(
        after <= before - 9 * MIB,
        "TRIM and WRITE_ZEROES punch holes: {before} -> {after} bytes allocated"
    );
    // Writes made durable by a flush, and by FUA, survive kill -9.
    qemu_io(
        &uri,
        &[
            format!("write -P 0x77 {} {}", 12 * MIB, MIB),
            "flush".into(),
            format!("write -f -P 0x78 {} 4096", 13 * MIB),
        ],
    );
    put(&mut model, 12 * MIB, MIB as usize, 0x77);
    put(&mut model, 13 * MIB, 4096, 0x78);
    server.signal("-KILL");
    let mut child = server.child;
    child.wait().expect("wait");
    // The lock died with the process; the disk decrypts, with those writes.
    assert!(
        decrypted(&e, "e.img") == model,
        "the decrypted disk differs from the model"
    );

    // Read-only: reads are served, writes refused.
    let server = Served::start(&e, "e.img", &["--read-only"]);
    let uri = server.uri();
    let r = qemu_io_raw(&uri, &[format!("read -P 0x78 {} 4096", 13 * MIB)], &["-r"]);
    assert!(
        r.status.success() && !String::from_utf8_lossy(&r.stdout).contains("failed"),
        "read-only reads are served: {}",
        stderr(&r)
    );
    // qemu-io cannot even open a read-only export for writing.
    let w = qemu_io_raw(&uri, &["write -P 1 0 4096".to_string()], &[]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&w.stdout),
        String::from_utf8_lossy(&w.stderr)
    );
    assert!(
        !w.status.success()
            || text.contains("denied")
            || text.contains("read-only")
            || text.contains("failed"),
        "a write to a read-only export must fail: {text}"
    );
    server.stop();
    assert!(
        decrypted(&e, "e.img") == model,
        "the read-only export changed the disk"
    );
}

#[test]
fn a_sparse_disk_stays_sparse_through_encrypt_deep_rekey_and_decrypt() {
    let e = Env::new();
    let img = e.path("thin.img");
    // 8 MiB of data in four places; the rest holes.
    let mut regions = Vec::new();
    for (i, at) in [0u64, 100 * MIB + 4096, 512 * MIB, 1024 * MIB - 2 * MIB]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = (0..2 * MIB)
            .map(|j| (j as u8) ^ (i as u8 * 71) | 1)
            .collect();
        regions.push((at, data));
    }
    let thin = |p: &Path| {
        use std::os::unix::fs::FileExt;
        qemu_img(&["create", "-q", "-f", "raw", p.to_str().expect("utf8"), "1G"]);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(p)
            .expect("open");
        for (at, data) in &regions {
            f.write_all_at(data, *at).expect("write");
        }
    };
    thin(&img);
    // Each job, into a new file and then in place, keeps the disk under 16 MiB allocated.
    let limit = 16 * MIB;
    assert!(allocated(&img) <= limit);
    let steps: [(&[&str], &str); 6] = [
        (&["encrypt", "thin.img", "--output", "thin.enc"], "thin.enc"),
        (&["rekey", "thin.enc", "--deep"], "thin.enc"),
        (&["decrypt", "thin.enc", "--output", "thin.out"], "thin.out"),
        (&["encrypt", "thin.img", "--in-place"], "thin.img"),
        (&["rekey", "thin.img", "--deep"], "thin.img"),
        (&["decrypt", "thin.img", "--in-place"], "thin.img"),
    ];
    for (args, file) in steps {
        e.ok(args);
        let bytes = allocated(&e.path(file));
        eprintln!("{args:?}: {file} has {bytes} bytes allocated");
        assert!(bytes <= limit, "after {args:?}: {bytes} bytes allocated");
    }
    let out = e.path("thin.out");
    assert_eq!(std::fs::metadata(&img).expect("stat").len(), 1 << 30);
    assert_identical(&e.path("thin.out"), &img);
    let original = e.path("thin.orig");
    thin(&original);
    assert_identical(&original, &out);
}

/// `serve --plaintext`: a disk vmcrypt has not encrypted, served as it is under the same lock
/// (the start of an online encrypt, issue 18). qemu-io writes and reads it over NBD, QEMU
/// cannot open the file meanwhile, and the file holds exactly what was written. Without
/// --plaintext the server says how to serve it; with it, an encrypted disk is refused.
#[test]
fn a_plaintext_disk_is_served_as_it_is_under_the_lock() {
    let e = Env::new();
    let plain = e.raw_image("p.img", 4 * MIB);
    let mut model = std::fs::read(&plain).expect("plain");
    let o = e.run(&["serve", "p.img", "--nbd", "x.sock"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("--plaintext"), "{}", stderr(&o));

    let server = Served::start(&e, "p.img", &["--plaintext"]);
    let uri = server.uri();
    qemu_io(
        &uri,
        &[
            "write -P 5 4096 8192".into(),
            "write -P 6 1536 512".into(),
            "flush".into(),
            "read -P 5 4096 8192".into(),
            "read -P 6 1536 512".into(),
        ],
    );
    model[4096..12288].fill(5);
    model[1536..2048].fill(6);
    let o = qemu_io_raw(
        plain.to_str().expect("utf8"),
        &["read 0 512".into()],
        &["-r"],
    );
    assert!(!o.status.success(), "QEMU cannot open the served file");
    let j = json(&e.ok(&["--json", "jobs", "p.img"]));
    assert_eq!(j["served"], true, "{j}");
    server.stop();
    assert!(
        std::fs::read(&plain).expect("file") == model,
        "the file holds what the client wrote"
    );

    e.ok(&["encrypt", "p.img", "--output", "e.img"]);
    let o = e.run(&["serve", "e.img", "--nbd", "y.sock", "--plaintext"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("encrypted"), "{}", stderr(&o));
}
