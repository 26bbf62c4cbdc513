//! The online jobs of a served disk (deep rekey, encryption, decryption) on a simulated
//! machine that loses power: at a crash, every write since the last sync of the payload and
//! of the journal is kept, dropped or torn (each 512-byte sector old, new or garbage). A crash
//! is injected at every sync point of each job (the journal's header, each window's slot,
//! payload and done mark, and the guest's flushes between windows), with guest writes into
//! the window just done, the next one and far ahead. After each, the disk is served again
//! (which takes the job up), the job is finished, and a fresh open must read every write the
//! guest flushed, under the key the metadata ends with. Decryption is run twice: of a payload
//! at the start of its file, and of one an offline in-place encryption moved up a window,
//! which the job moves back (each window written a window lower, the file cut at the end).
//!
//! The metadata is written to real files (atomically and durably at once, as a power cut
//! leaves them: old or new); the failpoint tests of `disk/live` crash between those steps.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use vmcrypt_core::disk::{Disk, DiskState, Files, Store};
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::provider::{KeyProvider, ProviderRegistry};
use vmcrypt_core::{DiskJob, EncryptedDisk, NoProgress, Result, Scratch, SectorSize, Tuning};

mod sim;
use sim::*;

/// Four windows of the online job.
const DISK: usize = 4 << 20;
const WINDOW: u64 = 1 << 20;

/// The payload is store 0 of the machine, the journal store 1.
struct SimFiles {
    m: Arc<Mutex<Machine>>,
    journal: Mutex<bool>,
}

impl Files for SimFiles {
    fn open_payload(&self, _: &Path) -> Result<Store> {
        Ok(Box::new(Sim {
            m: self.m.clone(),
            i: 0,
        }))
    }

    fn create_journal(&self, _: &Path) -> Result<Store> {
        // A stale journal (a start that died before recording its job) is replaced, as the
        // next open clears it on a real disk.
        let mut m = lock(&self.m);
        m.stores[1] = sim::Store::new(Vec::new());
        *self.journal.lock().expect("journal") = true;
        Ok(Box::new(Sim {
            m: self.m.clone(),
            i: 1,
        }))
    }

    fn open_journal(&self, _: &Path) -> Result<Store> {
        if !*self.journal.lock().expect("journal") {
            return Err(io_err("no journal"));
        }
        Ok(Box::new(Sim {
            m: self.m.clone(),
            i: 1,
        }))
    }

    fn remove_journal(&self, _: &Path) -> Result<()> {
        *self.journal.lock().expect("journal") = false;
        lock(&self.m).stores[1] = sim::Store::new(Vec::new());
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Rekey,
    Encrypt,
    Decrypt,
    /// The decryption of a payload moved up by one window.
    DecryptMoved,
}

/// A disk in a folder of its own, as the job starts: the payload's bytes (for the machine),
/// its metadata file's bytes, and the guest's view.
struct Case {
    _dir: tempfile::TempDir,
    dir: PathBuf,
    img: PathBuf,
    kind: Kind,
    payload: Vec<u8>,
    sidecar: Option<Vec<u8>>,
    plain: Vec<u8>,
}

fn registry(dir: &Path) -> impl ProviderRegistry + use<> {
    let ks = dir.join("native.keystore");
    move |name: &str| -> Result<Arc<dyn KeyProvider>> {
        Ok(Arc::new(NativeProvider::open(name, &ks)?))
    }
}

impl Case {
    fn new(kind: Kind) -> Case {
        let d = tempfile::tempdir().expect("tempdir");
        let dir = d.path().to_path_buf();
        NativeProvider::create("native", &dir.join("native.keystore")).expect("keystore");
        let plain: Vec<u8> = (0..DISK).map(|i| (i * 7 % 251) as u8 ^ 0x5c).collect();
        let p = dir.join("p.img");
        std::fs::write(&p, &plain).expect("write");
        let img = if kind == Kind::Encrypt {
            p
        } else if kind == Kind::DecryptMoved {
            DiskJob::encrypt(&p)
                .provider("native")
                .sector_size(SectorSize::S4096)
                .tuning(Tuning::default().chunk(Some(WINDOW)))
                .run(&registry(&dir), &NoProgress, &AtomicBool::new(false))
                .expect("encrypt in place");
            let moved = Disk::open(&p).expect("disk").payload_offset();
            assert_eq!(moved, WINDOW, "moved up a window");
            p
        } else {
            let e = dir.join("e.img");
            DiskJob::encrypt(&p)
                .provider("native")
                .sector_size(SectorSize::S4096)
                .output(&e)
                .run(&registry(&dir), &NoProgress, &AtomicBool::new(false))
                .expect("encrypt");
            e
        };
        let payload = std::fs::read(&img).expect("payload");
        let sidecar = std::fs::read(vmcrypt_core::disk::sidecar_path(&img)).ok();
        Case {
            _dir: d,
            dir,
            img,
            kind,
            payload,
            sidecar,
            plain,
        }
    }

    /// The metadata file as it was before the job.
    fn reset(&self) {
        let side = vmcrypt_core::disk::sidecar_path(&self.img);
        match &self.sidecar {
            Some(b) => std::fs::write(&side, b).expect("sidecar"),
            None => {
                let _ = std::fs::remove_file(&side);
            }
        }
    }

    fn open(&self, files: &Arc<SimFiles>) -> Result<EncryptedDisk> {
        let plaintext = Disk::open(&self.img)?.encryption().is_none();
        if plaintext {
            EncryptedDisk::open_plaintext_on(&self.img, files.clone())
        } else {
            EncryptedDisk::open_on(&self.img, &registry(&self.dir), files.clone())
        }
    }

    fn start(&self, disk: &EncryptedDisk) -> Result<()> {
        let reg = registry(&self.dir);
        match self.kind {
            Kind::Rekey => disk.start_deep_rekey(&reg),
            Kind::Encrypt => disk.start_encrypt(&reg, "native"),
            Kind::Decrypt | Kind::DecryptMoved => disk.start_decrypt(&reg),
        }
    }
}

/// The guest's writes before window `i`: into the window just done, into the one about to be
/// locked, and far ahead; each is flushed. Returns false at the first failure, leaving that
/// write's range in `unsure` (not flushed: old, new or torn).
fn guest(disk: &EncryptedDisk, model: &mut [u8], unsure: &mut Vec<Range<usize>>, i: u64) -> bool {
    let mut scratch = Scratch::default();
    let at = [
        i.saturating_sub(1) * WINDOW + 4096 + 512,
        (i % (DISK as u64 / WINDOW)) * WINDOW + 8192,
        (DISK as u64 - 65536 - i * 16384) & !511,
    ];
    for (n, off) in at.into_iter().enumerate() {
        let data = vec![(i as u8 * 3 + n as u8) | 0x80; 1536];
        let r = off as usize..off as usize + data.len();
        if disk.write_at(&data, off, &mut scratch).is_err() || disk.flush().is_err() {
            // Not flushed: every data unit it touched may be torn, the part of a unit the
            // guest did not write included (a unit is one XTS block: a torn one deciphers to
            // garbage), as on any disk with a physical sector larger than its logical one.
            let u = disk.unit_size();
            unsure.push(r.start / u * u..r.end.div_ceil(u) * u);
            return false;
        }
        model[r].copy_from_slice(&data);
    }
    true
}

/// The job with a crash at sync `crash` (none: a clean run), then served again, finished
/// and checked. Returns the syncs the run made.
fn run(case: &Case, crash: Option<usize>, seed: u64) -> usize {
    case.reset();
    let m = Arc::new(Mutex::new(Machine {
        stores: vec![
            sim::Store::new(case.payload.clone()),
            sim::Store::new(Vec::new()),
        ],
        crash_at_sync: crash,
        rng: seed,
        ..Machine::default()
    }));
    let files = Arc::new(SimFiles {
        m: m.clone(),
        journal: Mutex::new(false),
    });
    let mut model = case.plain.clone();
    let mut unsure = Vec::new();
    {
        let disk = case.open(&files).expect("open");
        if case.start(&disk).is_ok() {
            let mut i = 0;
            while guest(&disk, &mut model, &mut unsure, i) {
                match disk.job_step() {
                    Ok(true) => i += 1,
                    Ok(false) => break,
                    Err(_) => break,
                }
            }
        }
    }
    let syncs = lock(&m).syncs;
    let crashed = lock(&m).down;
    assert_eq!(crashed, crash.is_some_and(|k| k <= syncs), "{crash:?}");
    lock(&m).reboot();
    // Served again: the job is taken up (or, if it was never recorded, started again) and
    // finished.
    {
        let disk = case.open(&files).expect("reopen after the crash");
        if disk.job().is_none() && state(case) == initial_state(case) {
            case.start(&disk).expect("start again");
        }
        while disk.job_step().expect("step after the crash") {}
        assert!(disk.job().is_none());
    }
    assert_eq!(state(case), final_state(case), "{crash:?}");
    assert!(!*files.journal.lock().expect("journal"), "journal removed");
    // A fresh open, with the key the metadata ends with, reads every flushed write.
    let disk = case.open(&files).expect("fresh open");
    let mut got = vec![0u8; DISK];
    disk.read_at(&mut got, 0).expect("read");
    for r in &unsure {
        got[r.clone()].fill(0);
        model[r.clone()].fill(0);
    }
    let bad = got
        .chunks(512)
        .zip(model.chunks(512))
        .position(|(g, w)| g != w);
    assert_eq!(
        bad, None,
        "{:?}, crash at sync {crash:?} of {syncs}: a flushed sector differs (512-byte sector index)",
        case.kind
    );
    if matches!(case.kind, Kind::Decrypt | Kind::DecryptMoved) {
        // Plaintext on the medium itself, at the start of the file, which ends with the
        // payload.
        let mut raw = lock(&m).stores[0].durable.clone();
        assert_eq!(raw.len(), DISK, "{crash:?}: the file ends with the payload");
        for r in &unsure {
            raw[r.clone()].fill(0);
        }
        assert!(raw == model, "decrypted in place");
    }
    syncs
}

fn state(case: &Case) -> Option<(DiskState, u64, usize)> {
    Disk::open(&case.img)
        .expect("disk")
        .encryption()
        .map(|m| (m.state, m.generation, m.keys().len()))
}

fn initial_state(case: &Case) -> Option<(DiskState, u64, usize)> {
    match case.kind {
        Kind::Encrypt => None,
        _ => Some((DiskState::Encrypted, 1, 1)),
    }
}

fn final_state(case: &Case) -> Option<(DiskState, u64, usize)> {
    match case.kind {
        Kind::Rekey => Some((DiskState::Encrypted, 2, 1)),
        Kind::Encrypt => Some((DiskState::Encrypted, 1, 1)),
        Kind::Decrypt | Kind::DecryptMoved => None,
    }
}

#[test]
fn power_loss_at_every_sync_point_of_online_jobs_keeps_every_flushed_write() {
    let mut cases = 0;
    for kind in [
        Kind::Rekey,
        Kind::Encrypt,
        Kind::Decrypt,
        Kind::DecryptMoved,
    ] {
        let case = Case::new(kind);
        let syncs = run(&case, None, 1);
        // The journal's header, three syncs per window (slot, payload, done mark), the
        // guest's three flushes before each window and before the job's end, and moved, the
        // cut of the file.
        let windows = (DISK as u64 / WINDOW) as usize;
        let cut = usize::from(kind == Kind::DecryptMoved);
        assert_eq!(syncs, 1 + 3 * windows + 3 * (windows + 1) + cut, "{kind:?}");
        for k in 1..=syncs {
            for seed in [0x9e37_79b9_7f4a_7c15u64, 0xd1b5_4a32_d192_ed03] {
                run(&case, Some(k), seed ^ k as u64);
                cases += 1;
            }
        }
        eprintln!("{kind:?}: {syncs} sync points");
    }
    eprintln!("{cases} power-loss cases");
    assert!(cases >= 4 * 2 * 28);
}
