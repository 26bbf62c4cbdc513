//! The in-place engine on a simulated machine that loses power: at a crash, every write since
//! the last sync of every file is kept, dropped or torn (each 512-byte sector old, new or
//! garbage). A crash is injected at every sync point of encrypt, decrypt and deep rekey jobs
//! on 64 MiB payloads with 512- and 4096-byte units; recovery must always give the intended
//! bytes. Write and fsync errors are injected at every step too, and altered journals must be
//! refused before any write.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::AtomicBool;

use vmcrypt_core::disk::NoProgress;
use vmcrypt_core::reencrypt::{Job, Storage, Transform};
use vmcrypt_core::secret::Dek;
use vmcrypt_core::{Direction, Error, Result, SectorSize};

const LEN: usize = 64 << 20;
const CHUNK: u64 = 8 << 20;
/// The slow suite (`just crash-slow`): a 1 GiB payload, 16 MiB chunks, every sync point of
/// every job kind, each with several tear patterns.
const SLOW_LEN: usize = 1 << 30;
const SLOW_CHUNK: u64 = 16 << 20;

struct Store {
    durable: Vec<u8>,
    pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
struct Machine {
    stores: Vec<Store>,
    syncs: usize,
    writes: usize,
    crash_at_sync: Option<usize>,
    fail_write_at: Option<usize>,
    fail_sync_at: Option<usize>,
    down: bool,
    rng: u64,
}

impl Machine {
    fn rand(&mut self) -> u64 {
        // xorshift64*: reproducible from the seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Power loss: each pending write is kept, dropped or torn sector by sector.
    fn crash(&mut self) {
        self.down = true;
        for i in 0..self.stores.len() {
            let pending = std::mem::take(&mut self.stores[i].pending);
            for (off, data) in pending {
                match self.rand() % 3 {
                    0 => apply(&mut self.stores[i].durable, off, &data),
                    1 => {}
                    _ => {
                        for (s, sector) in data.chunks(512).enumerate() {
                            let at = off + (s * 512) as u64;
                            match self.rand() % 3 {
                                0 => {}
                                1 => apply(&mut self.stores[i].durable, at, sector),
                                _ => {
                                    let junk: Vec<u8> =
                                        (0..sector.len()).map(|_| self.rand() as u8).collect();
                                    apply(&mut self.stores[i].durable, at, &junk);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// A fresh boot: only durable bytes remain.
    fn reboot(&mut self) {
        for s in &mut self.stores {
            s.pending.clear();
        }
        self.down = false;
        self.crash_at_sync = None;
        self.fail_write_at = None;
        self.fail_sync_at = None;
    }
}

fn apply(buf: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[off as usize..end].copy_from_slice(data);
}

struct Sim {
    m: Rc<RefCell<Machine>>,
    i: usize,
}

fn io_err(what: &str) -> Error {
    Error::Io {
        op: "simulate",
        path: what.into(),
        source: std::io::Error::other(what.to_string()),
    }
}

impl Storage for Sim {
    fn size(&self) -> Result<u64> {
        Ok(self.m.borrow().stores[self.i].durable.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let m = self.m.borrow();
        if m.down {
            return Err(io_err("machine is down"));
        }
        let st = &m.stores[self.i];
        // What the page cache shows: durable bytes with the pending writes laid over them.
        let (start, end) = (off as usize, off as usize + buf.len());
        let len = st
            .pending
            .iter()
            .map(|(o, d)| *o as usize + d.len())
            .fold(st.durable.len(), usize::max);
        if end > len {
            return Err(io_err("read past the end"));
        }
        buf.fill(0);
        let have = st.durable.len().min(end);
        if have > start {
            buf[..have - start].copy_from_slice(&st.durable[start..have]);
        }
        for (o, d) in &st.pending {
            let (ws, we) = (*o as usize, *o as usize + d.len());
            let (a, b) = (ws.max(start), we.min(end));
            if a < b {
                buf[a - start..b - start].copy_from_slice(&d[a - ws..b - ws]);
            }
        }
        Ok(())
    }

    fn write_at(&mut self, buf: &[u8], off: u64) -> Result<()> {
        let mut m = self.m.borrow_mut();
        if m.down {
            return Err(io_err("machine is down"));
        }
        m.writes += 1;
        if m.fail_write_at == Some(m.writes) {
            return Err(io_err("injected write error"));
        }
        m.stores[self.i].pending.push((off, buf.to_vec()));
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        let mut m = self.m.borrow_mut();
        if m.down {
            return Err(io_err("machine is down"));
        }
        m.syncs += 1;
        if m.crash_at_sync == Some(m.syncs) {
            m.crash();
            return Err(io_err("power loss"));
        }
        if m.fail_sync_at == Some(m.syncs) {
            return Err(io_err("injected fsync error"));
        }
        let pending = std::mem::take(&mut m.stores[self.i].pending);
        for (o, d) in pending {
            apply(&mut m.stores[self.i].durable, o, &d);
        }
        Ok(())
    }
}

struct Case {
    plain: Vec<u8>,
    old: Dek,
    new: Dek,
    unit: SectorSize,
    /// (initial, expected) payloads per job kind, computed once.
    cache: [std::cell::OnceCell<(Vec<u8>, Vec<u8>)>; 3],
}

impl Case {
    fn new(unit: SectorSize, seed: u8) -> Case {
        Case::sized(LEN, unit, seed)
    }

    fn sized(len: usize, unit: SectorSize, seed: u8) -> Case {
        let plain = (0..len)
            .map(|i| ((i / 512) as u8).wrapping_mul(13) ^ (i as u8) ^ seed)
            .collect();
        Case {
            plain,
            old: Dek::generate_xts().expect("rng"),
            new: Dek::generate_xts().expect("rng"),
            unit,
            cache: Default::default(),
        }
    }

    fn encrypted(&self, dek: &Dek) -> Vec<u8> {
        let mut b = self.plain.clone();
        dek.xts()
            .expect("xts")
            .par_sectors(&mut b, 0, self.unit, Direction::Encrypt)
            .expect("encrypt");
        b
    }

    /// (initial payload, expected payload) for a transform kind.
    fn states(&self, kind: u8) -> (Vec<u8>, Vec<u8>) {
        self.cache[kind as usize - 1]
            .get_or_init(|| match kind {
                1 => (self.plain.clone(), self.encrypted(&self.new)),
                2 => (self.encrypted(&self.old), self.plain.clone()),
                _ => (self.encrypted(&self.old), self.encrypted(&self.new)),
            })
            .clone()
    }

    fn transform(&self, kind: u8) -> Transform<'_> {
        match kind {
            1 => Transform::Encrypt(&self.new),
            2 => Transform::Decrypt(&self.old),
            _ => Transform::Rekey {
                old: &self.old,
                new: &self.new,
            },
        }
    }
}

fn machine(payload: Vec<u8>, seed: u64) -> Rc<RefCell<Machine>> {
    Rc::new(RefCell::new(Machine {
        stores: vec![
            Store {
                durable: payload,
                pending: vec![],
            },
            Store {
                durable: vec![],
                pending: vec![],
            },
        ],
        rng: seed | 1,
        ..Machine::default()
    }))
}

const JOB_ID: [u8; 16] = *b"powerloss-test-1";

/// Runs the job on a machine that misbehaves as configured; after it stops, reboots, recovers
/// and finishes. Returns the final payload.
fn crash_and_recover(
    case: &Case,
    kind: u8,
    setup: impl FnOnce(&mut Machine),
    seed: u64,
) -> (Vec<u8>, bool) {
    crash_and_recover_sized(case, kind, setup, seed, CHUNK)
}

fn crash_and_recover_sized(
    case: &Case,
    kind: u8,
    setup: impl FnOnce(&mut Machine),
    seed: u64,
    chunk: u64,
) -> (Vec<u8>, bool) {
    let (initial, _) = case.states(kind);
    let m = machine(initial.clone(), seed);
    setup(&mut m.borrow_mut());
    let job = Job::new(
        case.transform(kind),
        JOB_ID,
        case.plain.len() as u64,
        case.unit,
        chunk,
        2,
    )
    .expect("job");
    let mut payload = Sim { m: m.clone(), i: 0 };
    let mut journal = Sim { m: m.clone(), i: 1 };
    let cancel = AtomicBool::new(false);
    let began = job.begin(&payload, &mut journal);
    let first = began.and_then(|()| job.run(&mut payload, &mut journal, 0, &NoProgress, &cancel));
    if first.is_ok() {
        return (m.borrow().stores[0].durable.clone(), true);
    }
    // An I/O error is followed by a crash of whatever was not synced.
    {
        let mut mm = m.borrow_mut();
        if !mm.down {
            mm.crash();
        }
        mm.reboot();
    }
    // The metadata that records the job is written only after `begin` made the journal
    // durable: if it did not, the job never started and the payload must be untouched.
    let job = Job::new(
        case.transform(kind),
        JOB_ID,
        case.plain.len() as u64,
        case.unit,
        chunk,
        2,
    )
    .expect("job");
    let mut hb = vec![0u8; 4096];
    if journal.read_at(&mut hb, 0).is_err() || journal.size().expect("size") < job.journal_len() / 2
    {
        // begin() did not complete durably: nothing may have changed.
        assert_eq!(
            m.borrow().stores[0].durable,
            initial,
            "payload changed before the journal existed"
        );
        return (initial, false);
    }
    let start = match job.recover(&mut payload, &mut journal) {
        Ok(s) => s,
        Err(e) => {
            // Only a begin() whose header never became durable may fail here.
            assert_eq!(
                m.borrow().stores[0].durable,
                initial,
                "recovery refused after the payload changed: {e}"
            );
            return (initial, false);
        }
    };
    job.run(&mut payload, &mut journal, start, &NoProgress, &cancel)
        .expect("resume");
    (m.borrow().stores[0].durable.clone(), true)
}

#[test]
fn power_loss_at_every_sync_point() {
    let mut points = 0;
    for (u, unit) in [SectorSize::S512, SectorSize::S4096]
        .into_iter()
        .enumerate()
    {
        let case = Case::new(unit, u as u8);
        for kind in 1..=3u8 {
            let (initial, expected) = case.states(kind);
            // 1 sync in begin, 2 per chunk.
            let syncs = 1 + 2 * (LEN as u64 / CHUNK) as usize;
            for k in 1..=syncs {
                let (got, started) = crash_and_recover(
                    &case,
                    kind,
                    |m| m.crash_at_sync = Some(k),
                    (k as u64) * 7919 + kind as u64,
                );
                if started {
                    assert!(
                        got == expected,
                        "kind {kind}, unit {unit}, crash at sync {k}: recovered bytes differ"
                    );
                } else {
                    assert!(got == initial);
                }
                points += 1;
            }
        }
    }
    assert_eq!(points, 2 * 3 * 17);
    println!("power-loss points: {points}, 0 bytes lost");
}

#[test]
fn write_and_fsync_errors_at_every_step() {
    let case = Case::new(SectorSize::S4096, 9);
    let mut injected = 0;
    for kind in 1..=3u8 {
        let (_, expected) = case.states(kind);
        // 3 writes in begin (header, two empty slots), 3 per chunk; 1 + 2 per chunk syncs.
        for w in 1..=(3 + 3 * 8) {
            let (got, started) = crash_and_recover(
                &case,
                kind,
                |m| m.fail_write_at = Some(w),
                w as u64 * 31 + 1,
            );
            assert!(
                !started || got == expected,
                "kind {kind}: write error at {w}"
            );
            injected += 1;
        }
        for s in 1..=17 {
            let (got, started) =
                crash_and_recover(&case, kind, |m| m.fail_sync_at = Some(s), s as u64 * 37 + 5);
            assert!(
                !started || got == expected,
                "kind {kind}: fsync error at {s}"
            );
            injected += 1;
        }
    }
    println!("injected I/O errors: {injected}, 0 bytes lost");
}

#[test]
fn altered_journals_are_refused_before_any_write() {
    let case = Case::new(SectorSize::S4096, 3);
    let kind = 1;
    let (initial, _) = case.states(kind);
    // Stop cleanly after 4 chunks: chunk 3 is written and durable, its slot (index 1) is the
    // newest, chunk 4 is untouched.
    struct StopAfter<'a>(&'a AtomicBool, std::sync::atomic::AtomicU64);
    impl vmcrypt_core::disk::Progress for StopAfter<'_> {
        fn advance(&self, bytes: u64) {
            use std::sync::atomic::Ordering::Relaxed;
            if self.1.fetch_add(bytes, Relaxed) + bytes >= 4 * CHUNK {
                self.0.store(true, Relaxed);
            }
        }
    }
    let m = machine(initial, 77);
    let job = Job::new(
        case.transform(kind),
        JOB_ID,
        LEN as u64,
        case.unit,
        CHUNK,
        2,
    )
    .expect("job");
    let mut payload = Sim { m: m.clone(), i: 0 };
    let mut journal = Sim { m: m.clone(), i: 1 };
    job.begin(&payload, &mut journal).expect("begin");
    let stop = AtomicBool::new(false);
    let e = job
        .run(
            &mut payload,
            &mut journal,
            0,
            &StopAfter(&stop, std::sync::atomic::AtomicU64::new(0)),
            &stop,
        )
        .expect_err("stopped");
    assert!(
        matches!(e, Error::Cancelled { done, .. } if done == 4 * CHUNK),
        "{e}"
    );
    m.borrow_mut().reboot();
    let pristine = (
        m.borrow().stores[0].durable.clone(),
        m.borrow().stores[1].durable.clone(),
    );
    let slot1 = 4096 + 4096 + CHUNK as usize;
    for (what, at) in [
        ("header", 40usize),
        ("newest slot header", slot1 + 20),
        ("newest slot data", slot1 + 4096 + 1000),
    ] {
        let mut j = pristine.1.clone();
        j[at] ^= 0x01;
        m.borrow_mut().stores[0].durable = pristine.0.clone();
        m.borrow_mut().stores[1].durable = j;
        let e = job.recover(&mut payload, &mut journal).expect_err(what);
        assert!(matches!(e, Error::Integrity { .. }), "{what}: {e}");
        assert!(
            m.borrow().stores[0].durable == pristine.0,
            "{what}: payload written"
        );
    }
    // A journal of another job (other keys) is refused too.
    let other = Job::new(
        Transform::Encrypt(&case.old),
        JOB_ID,
        LEN as u64,
        case.unit,
        CHUNK,
        2,
    )
    .expect("job");
    m.borrow_mut().stores[1].durable = pristine.1.clone();
    assert!(matches!(
        other.recover(&mut payload, &mut journal),
        Err(Error::Integrity { .. })
    ));
    // The genuine one recovers.
    let start = job.recover(&mut payload, &mut journal).expect("recover");
    assert_eq!(start, 4 * CHUNK);
}

/// The writes pending at each sync of one complete job: what a crash at that sync could
/// keep, drop or tear.
/// The writes pending at one sync: (store, offset, bytes).
type Pending = Vec<(usize, u64, Vec<u8>)>;

fn record_syncs(case: &Case, kind: u8, chunk: u64) -> Vec<Pending> {
    let (initial, _) = case.states(kind);
    let m = machine(initial, 1);
    let job = Job::new(
        case.transform(kind),
        JOB_ID,
        case.plain.len() as u64,
        case.unit,
        chunk,
        2,
    )
    .expect("job");
    let mut payload = Recorder {
        sim: Sim { m: m.clone(), i: 0 },
        log: Rc::new(RefCell::new(Vec::new())),
    };
    let mut journal = Recorder {
        sim: Sim { m: m.clone(), i: 1 },
        log: payload.log.clone(),
    };
    job.begin(&payload, &mut journal).expect("begin");
    job.run(
        &mut payload,
        &mut journal,
        0,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .expect("run");
    payload.log.borrow().clone()
}

/// A simulated store that logs, at every sync, the writes of every store still pending.
struct Recorder {
    sim: Sim,
    log: Rc<RefCell<Vec<Pending>>>,
}

impl Storage for Recorder {
    fn size(&self) -> Result<u64> {
        self.sim.size()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.sim.read_at(buf, off)
    }
    fn write_at(&mut self, buf: &[u8], off: u64) -> Result<()> {
        self.sim.write_at(buf, off)
    }
    fn sync(&mut self) -> Result<()> {
        let pending: Pending = {
            let m = self.sim.m.borrow();
            m.stores
                .iter()
                .enumerate()
                .flat_map(|(i, st)| st.pending.iter().map(move |(o, d)| (i, *o, d.clone())))
                .collect()
        };
        self.log.borrow_mut().push(pending);
        self.sim.sync()
    }
}

#[test]
#[ignore = "slow suite (several minutes, 7 GiB of memory): run with `just crash-slow`"]
fn power_loss_slow_suite_1gib() {
    // VMCRYPT_SLOW_MIB shrinks the payload for a quick check of the suite itself.
    let slow_len = std::env::var("VMCRYPT_SLOW_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(SLOW_LEN, |m| m << 20);
    let case = Case::sized(slow_len, SectorSize::S4096, 42);
    let mut points = 0;
    let started = std::time::Instant::now();
    for kind in 1..=3u8 {
        let (initial, expected) = case.states(kind);
        let syncs = record_syncs(&case, kind, SLOW_CHUNK);
        assert_eq!(
            syncs.len(),
            1 + 2 * (slow_len as u64).div_ceil(SLOW_CHUNK) as usize
        );
        // The durable state just before each sync, built up sync by sync.
        let mut durable = [initial.clone(), Vec::new()];
        for (k, pending) in syncs.iter().enumerate() {
            for pattern in 0..3u64 {
                let seed = (k as u64) * 1_000_003 + pattern * 7 + kind as u64;
                let m = Rc::new(RefCell::new(Machine {
                    stores: durable
                        .iter()
                        .map(|d| Store {
                            durable: d.clone(),
                            pending: vec![],
                        })
                        .collect(),
                    rng: seed | 1,
                    ..Machine::default()
                }));
                {
                    let mut mm = m.borrow_mut();
                    for (i, o, d) in pending {
                        mm.stores[*i].pending.push((*o, d.clone()));
                    }
                    mm.crash();
                    mm.reboot();
                }
                let job = Job::new(
                    case.transform(kind),
                    JOB_ID,
                    slow_len as u64,
                    case.unit,
                    SLOW_CHUNK,
                    2,
                )
                .expect("job");
                let mut payload = Sim { m: m.clone(), i: 0 };
                let mut journal = Sim { m: m.clone(), i: 1 };
                if k == 0 {
                    // Crash inside begin(): no job was recorded, nothing may have changed.
                    assert!(
                        m.borrow().stores[0].durable == initial,
                        "payload changed before the journal was durable"
                    );
                } else {
                    let start = job
                        .recover(&mut payload, &mut journal)
                        .unwrap_or_else(|e| panic!("kind {kind}, sync {k}, pattern {pattern}: {e}"))
                        as usize;
                    let got = &m.borrow().stores[0].durable;
                    // Everything before the resume point is done, everything after untouched:
                    // the rest of the job (tested above on 64 MiB) then completes it.
                    assert!(
                        got[..start] == expected[..start],
                        "kind {kind}, sync {k}, pattern {pattern}: done part differs"
                    );
                    assert!(
                        got[start..] == initial[start..],
                        "kind {kind}, sync {k}, pattern {pattern}: rest differs"
                    );
                }
                points += 1;
            }
            for (i, o, d) in pending {
                apply(&mut durable[*i], *o, d);
            }
        }
        assert!(
            durable[0] == expected,
            "kind {kind}: the recorded job did not end where expected"
        );
        println!(
            "slow suite: kind {kind} done, {points} points so far, {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "slow suite: {points} power-loss points on {} MiB, 0 bytes lost, {:.0} s",
        slow_len >> 20,
        started.elapsed().as_secs_f64()
    );
}
