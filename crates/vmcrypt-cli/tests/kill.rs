//! `kill -9` of in-place encrypt, decrypt and deep rekey at 200+ random points on a 64 MiB
//! image (512- and 4096-byte units); after each kill `vmcrypt resume` finishes the job, and the
//! plaintext's sha256 must equal the original's every time.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use sha2::{Digest, Sha256};
use vmcrypt_core::secret::Dek;
use vmcrypt_core::{Direction, SectorSize};

const LEN: u64 = 64 << 20;
/// 1 MiB chunks: 64 journaled chunks per job, so kills land between and inside many of them.
const CHUNK: &str = "1048576";
const KILLS: usize = 200;

fn sha(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The plaintext of the image as it is now (decrypted in memory with the break-glass key).
fn plaintext(e: &Env) -> Vec<u8> {
    let data = std::fs::read(e.path("d.img")).expect("read");
    if !e.path("d.img.vmcrypt").exists() {
        return data;
    }
    let line = e.ok(&["recover", "dm-table", "d.img", "--reveal-key"]);
    let f: Vec<&str> = line.split_whitespace().collect();
    // The payload starts at the table's device offset (in 512-byte sectors).
    let at = f[7].parse::<usize>().expect("offset") * 512;
    let mut data = data[at..at + LEN as usize].to_vec();
    let key: Vec<u8> = (0..f[4].len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&f[4][i..i + 2], 16).expect("hex"))
        .collect();
    let unit = if line.contains("sector_size:4096") {
        SectorSize::S4096
    } else {
        SectorSize::S512
    };
    let dek = Dek::from_xts_bytes(&key).expect("key");
    dek.xts()
        .expect("xts")
        .par_sectors(&mut data, 0, unit, Direction::Decrypt)
        .expect("decrypt");
    data
}

#[test]
fn kill_nine_at_random_points_then_resume() {
    let e = Env::new();
    e.raw_image("d.img", LEN);
    let original = sha(&std::fs::read(e.path("d.img")).expect("read"));
    e.ok(&["provider", "add-native", "native"]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id()));
    let (mut kills, mut completed, mut iterations) = (0, 0, 0);
    let mut by_op = [0usize; 3];
    let started = Instant::now();
    while kills < KILLS {
        iterations += 1;
        assert!(
            iterations < 2000,
            "only {kills} kills landed inside a job in {iterations} tries"
        );
        let encrypted = e.path("d.img.vmcrypt").exists();
        let (op, args): (usize, Vec<&str>) = if !encrypted {
            let unit = if rng.next().is_multiple_of(2) {
                "512"
            } else {
                "4096"
            };
            (
                0,
                vec!["encrypt", "d.img", "--in-place", "--sector-size", unit],
            )
        } else if rng.next().is_multiple_of(2) {
            (1, vec!["decrypt", "d.img", "--in-place"])
        } else {
            (2, vec!["rekey", "d.img", "--deep"])
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_vmcrypt"))
            .arg("--config")
            .arg(e.config())
            .args(&args)
            .current_dir(e.dir.path())
            .env("VMCRYPT_CHUNK_BYTES", CHUNK)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        // A 64 MiB job takes some tens of milliseconds (process start included): kills spread
        // over that, with some landing before the job starts or after it ends.
        std::thread::sleep(Duration::from_micros(rng.next() % 80_000));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().expect("wait");
        if status.code().is_none() {
            kills += 1;
            by_op[op] += 1;
        } else {
            assert_eq!(status.code(), Some(0), "vmcrypt {args:?} failed on its own");
            completed += 1;
        }
        let o = e.run_env(&["resume", "d.img"], &[("VMCRYPT_CHUNK_BYTES", CHUNK)]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "resume after killing {args:?}: {}",
            stderr(&o)
        );
        assert!(
            !e.path("d.img.vmcrypt-journal").exists(),
            "journal left after resume"
        );
        assert_eq!(
            sha(&plaintext(&e)),
            original,
            "after killing {args:?} (kill {kills}) and resuming, the plaintext differs"
        );
    }
    println!(
        "kill -9: {kills} kills inside jobs (encrypt {}, decrypt {}, deep rekey {}), {completed} runs finished first, {:.0} s; 0 bytes lost",
        by_op[0],
        by_op[1],
        by_op[2],
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn resume_refuses_an_altered_or_missing_journal() {
    let e = Env::new();
    e.raw_image("d.img", LEN);
    std::fs::copy(e.path("d.img"), e.path("x0.img")).expect("copy");
    e.ok(&["provider", "add-native", "native"]);
    // Stop a job for certain, three times: a failpoint aborts each run once a window is
    // rewritten and its progress is durable, so three of the 64 windows are done.
    let stop = [
        ("VMCRYPT_FAILPOINT", "reencrypt-journal-synced"),
        ("VMCRYPT_CHUNK_BYTES", CHUNK),
    ];
    let o = e.run_env(&["encrypt", "d.img", "--in-place"], &stop);
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    let journal = e.path("d.img.vmcrypt-journal");
    let after_one = std::fs::read(&journal).expect("journal");
    for _ in 0..2 {
        let o = e.run_env(&["resume", "d.img"], &stop);
        assert_eq!(o.status.code(), None, "{}", stderr(&o));
    }
    let o = e.run(&["decrypt", "d.img", "--output", "x.img"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("vmcrypt resume"), "{}", stderr(&o));
    let good = std::fs::read(&journal).expect("journal");
    let flip = |at: &[usize]| {
        let mut bad = good.clone();
        for a in at {
            bad[*a] ^= 0x40;
        }
        bad
    };
    // An altered header; both progress slots altered; the journal rolled back to an older
    // copy; no journal at all: each refused with exit 4 and nothing written. (One altered slot
    // alone is indistinguishable from one torn by a crash: the older slot then rules, which is
    // safe; the engine tests cover it.)
    for (what, bytes) in [
        ("altered header", Some(flip(&[40]))),
        (
            "both slots altered",
            Some(flip(&[4096 + 30, 2 * 4096 + 30])),
        ),
        ("rolled back", Some(after_one.clone())),
        ("missing", None),
    ] {
        match &bytes {
            Some(b) => std::fs::write(&journal, b).expect("write"),
            None => std::fs::remove_file(&journal).expect("remove"),
        }
        let before = snapshot(e.dir.path());
        let o = e.run_env(&["resume", "d.img"], &[("VMCRYPT_CHUNK_BYTES", CHUNK)]);
        assert_eq!(o.status.code(), Some(4), "{what}: {}", stderr(&o));
        assert!(stderr(&o).contains("journal"), "{what}: {}", stderr(&o));
        assert_eq!(snapshot(e.dir.path()), before, "{what}: resume wrote");
    }
    std::fs::write(&journal, &good).expect("restore");
    e.ok(&["resume", "d.img"]);
    e.ok(&["resume", "d.img"]);
    let original = std::fs::read(e.path("x0.img")).expect("original copy");
    assert_eq!(sha(&plaintext(&e)), sha(&original));
}

#[test]
fn a_job_killed_before_it_was_recorded_gives_its_room_back() {
    let e = Env::new();
    e.raw_image("d.img", LEN);
    let original = std::fs::read(e.path("d.img")).expect("read");
    e.ok(&["provider", "add-native", "native"]);
    let crash = [
        ("VMCRYPT_FAILPOINT", "inplace-room-made"),
        ("VMCRYPT_CHUNK_BYTES", CHUNK),
    ];
    // Encrypt: killed after the file grew by a window of zeros, before the job was recorded.
    let o = e.run_env(&["encrypt", "d.img", "--in-place"], &crash);
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    assert_eq!(
        std::fs::metadata(e.path("d.img")).expect("stat").len(),
        LEN + (1 << 20)
    );
    assert!(!e.path("d.img.vmcrypt").exists());
    e.ok(&["resume", "d.img"]);
    assert!(std::fs::read(e.path("d.img")).expect("read") == original);
    assert!(!e.path("d.img.vmcrypt-journal").exists());
    // Killed while the room was being made: only part of the zeros were written.
    let o = e.run_env(&["encrypt", "d.img", "--in-place"], &crash);
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    std::fs::OpenOptions::new()
        .write(true)
        .open(e.path("d.img"))
        .and_then(|f| f.set_len(LEN + 300 * 1024))
        .expect("cut the room short");
    e.ok(&["resume", "d.img"]);
    assert!(std::fs::read(e.path("d.img")).expect("read") == original);
    assert!(!e.path("d.img.vmcrypt-journal").exists());
    // The same during a deep rekey of a disk whose payload is at 0 (moving up): any other
    // command says to resume; the next in-place job cleans up by itself.
    e.ok(&["encrypt", "d.img", "--output", "c.img"]);
    let o = e.run_env(&["rekey", "c.img", "--deep"], &crash);
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    let o = e.run(&["decrypt", "c.img", "--output", "p.img"]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("vmcrypt resume"), "{}", stderr(&o));
    e.ok(&["rekey", "c.img", "--deep"]);
    e.ok(&["decrypt", "c.img", "--output", "p.img"]);
    assert!(std::fs::read(e.path("p.img")).expect("read") == original);
}

#[test]
fn a_job_killed_after_its_last_step_resumes() {
    // Killed after the payload moved and the file was cut or zeroed, before the metadata
    // recorded the result: resume finishes, for each direction.
    let e = Env::new();
    e.raw_image("d.img", LEN);
    let original = std::fs::read(e.path("d.img")).expect("read");
    e.ok(&["provider", "add-native", "native"]);
    let crash = [
        ("VMCRYPT_FAILPOINT", "inplace-moved"),
        ("VMCRYPT_CHUNK_BYTES", CHUNK),
    ];
    for args in [
        vec!["encrypt", "d.img", "--in-place"],
        vec!["rekey", "d.img", "--deep"],
        vec!["rekey", "d.img", "--deep"],
        vec!["decrypt", "d.img", "--in-place"],
    ] {
        let o = e.run_env(&args, &crash);
        assert_eq!(o.status.code(), None, "{args:?}: {}", stderr(&o));
        let o = e.run(&["resume", "d.img"]);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!e.path("d.img.vmcrypt-journal").exists(), "{args:?}");
        assert_eq!(sha(&plaintext(&e)), sha(&original), "{args:?}");
    }
    assert!(std::fs::read(e.path("d.img")).expect("read") == original);
}
