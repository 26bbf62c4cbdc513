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
    let mut data = std::fs::read(e.path("d.img")).expect("read");
    if !e.path("d.img.vmcrypt").exists() {
        return data;
    }
    let line = e.ok(&["recover", "dm-table", "d.img", "--reveal-key"]);
    let f: Vec<&str> = line.split_whitespace().collect();
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

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
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
        std::thread::sleep(Duration::from_micros(rng.next() % 350_000));
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
    e.ok(&["provider", "add-native", "native"]);
    // Stop a job for certain: a failpoint aborts once the first chunk is rewritten and durable,
    // so the journal's newest record is the only proof of which bytes changed.
    let o = e.run_env(
        &["encrypt", "d.img", "--in-place"],
        &[
            ("VMCRYPT_FAILPOINT", "reencrypt-chunk-synced"),
            ("VMCRYPT_CHUNK_BYTES", CHUNK),
        ],
    );
    assert_eq!(o.status.code(), None, "{}", stderr(&o));
    let o = e.run(&["decrypt", "d.img", "--output", "x.img"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("vmcrypt resume"), "{}", stderr(&o));
    let journal = e.path("d.img.vmcrypt-journal");
    let good = std::fs::read(&journal).expect("journal");
    for at in [40usize, 4096 + 30, 4096 + 4096 + 12345] {
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&journal, &bad).expect("write");
        let before = snapshot(e.dir.path());
        let o = e.run_env(&["resume", "d.img"], &[("VMCRYPT_CHUNK_BYTES", CHUNK)]);
        assert_eq!(o.status.code(), Some(4), "byte {at}: {}", stderr(&o));
        assert_eq!(snapshot(e.dir.path()), before, "byte {at}: resume wrote");
    }
    std::fs::remove_file(&journal).expect("remove");
    let o = e.run_env(&["resume", "d.img"], &[("VMCRYPT_CHUNK_BYTES", CHUNK)]);
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("journal"), "{}", stderr(&o));
    std::fs::write(&journal, &good).expect("restore");
    e.ok(&["resume", "d.img"]);
    e.ok(&["resume", "d.img"]);
}
