//! The data-shift engine on a simulated machine that loses power (see `sim`): a crash at every
//! sync point of encrypt (moving up), decrypt (moving down) and deep rekey (both ways) jobs on
//! 64 MiB payloads with 512- and 4096-byte units, write and fsync errors at every step, and
//! altered, foreign or rolled-back progress files, which must be refused before any write.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use vmcrypt_core::NoProgress;
use vmcrypt_core::engine::{ShiftJob, Transform};
use vmcrypt_core::{Error, SectorSize};

mod sim;
use sim::*;

const SHIFT: u64 = 8 << 20;
const JOB_ID: [u8; 16] = *b"shift-powerloss1";

/// A job kind: the transform (1 encrypt, 2 decrypt, 3 rekey) and the direction.
#[derive(Clone, Copy, Debug)]
struct Kind {
    transform: u8,
    up: bool,
}

const KINDS: [Kind; 4] = [
    Kind {
        transform: 1,
        up: true,
    },
    Kind {
        transform: 2,
        up: false,
    },
    Kind {
        transform: 3,
        up: true,
    },
    Kind {
        transform: 3,
        up: false,
    },
];

impl Kind {
    fn offsets(self) -> (u64, u64) {
        if self.up { (0, SHIFT) } else { (SHIFT, 0) }
    }
}

/// The payload file before and after the job: the payload at its offset, zeros below it.
fn files(case: &Case, kind: Kind) -> (Vec<u8>, Vec<u8>) {
    let (before, after) = case.states(kind.transform);
    let (src, dst) = kind.offsets();
    let place = |at: u64, bytes: Vec<u8>| {
        let mut f = vec![0u8; at as usize];
        f.extend_from_slice(&bytes);
        f
    };
    (place(src, before), place(dst, after))
}

/// The machine a job starts on: the payload file of [`files`], and for a sparse case its
/// holes (at the payload's offset; the room below a payload is allocated zeros).
fn start(case: &Case, kind: Kind, seed: u64) -> Arc<Mutex<Machine>> {
    let (initial, _) = files(case, kind);
    let m = machine(initial, seed);
    if !case.holes.is_empty() {
        let (src, _) = kind.offsets();
        let mut alloc = vec![true; lock(&m).stores[0].durable.len().div_ceil(BLOCK)];
        for r in &case.holes {
            mark(&mut alloc, src + r.start as u64, r.len(), false);
        }
        lock(&m).stores[0].alloc = Some(alloc);
        lock(&m).stores[1].alloc = Some(vec![]);
    }
    m
}

/// Asserts that no punch freed blocks that still held old bytes (see `Store::residue`).
fn no_residue(m: &Arc<Mutex<Machine>>, what: &str) {
    let residue = lock(m).residue.clone();
    assert!(
        residue.is_empty(),
        "{what}: freed blocks kept old bytes: {residue:?}"
    );
}

fn job<'a>(case: &'a Case, kind: Kind) -> ShiftJob<'a> {
    let (src, dst) = kind.offsets();
    ShiftJob::new(
        case.transform(kind.transform),
        JOB_ID,
        case.plain.len() as u64,
        case.unit,
        src,
        dst,
        2,
    )
    .expect("job")
}

/// Runs the whole job (room, progress file, windows, last step) on a machine that misbehaves
/// as configured; after it stops, reboots and, if the job had been recorded (its progress
/// file was durable), recovers and finishes. Returns the final payload file and whether the
/// job had been recorded.
fn crash_and_recover(
    case: &Case,
    kind: Kind,
    setup: impl FnOnce(&mut Machine),
    seed: u64,
) -> (Vec<u8>, bool) {
    let (initial, _) = files(case, kind);
    let m = start(case, kind, seed);
    setup(&mut lock(&m));
    let j = job(case, kind);
    let payload = Sim { m: m.clone(), i: 0 };
    let journal = Sim { m: m.clone(), i: 1 };
    let cancel = AtomicBool::new(false);
    // The order of run_new: the progress file, then the room, then the job is recorded.
    let recorded = j
        .begin(&payload, &journal)
        .and_then(|()| j.reserve(&payload))
        .is_ok();
    let first = if recorded {
        j.run(&payload, &journal, 0, &NoProgress, &cancel)
            .and_then(|_| j.finish(&payload))
    } else {
        Err(Error::InvalidInput {
            reason: "not started".into(),
        })
    };
    if first.is_ok() {
        no_residue(&m, &format!("{kind:?}"));
        return (lock(&m).stores[0].durable.clone(), true);
    }
    lock(&m).crash_and_reboot();
    no_residue(&m, &format!("{kind:?}, up to the crash"));
    let (src, _) = kind.offsets();
    let region = |f: &[u8]| f[src as usize..src as usize + case.plain.len()].to_vec();
    if !recorded {
        // The metadata records the job only after begin() returned: the payload must be
        // untouched (the room below or after it may have grown).
        assert!(
            region(&lock(&m).stores[0].durable) == region(&initial),
            "payload changed before the job was recorded"
        );
        return (initial, false);
    }
    let j = job(case, kind);
    let done = j
        .recover(&payload, &journal)
        .unwrap_or_else(|e| panic!("{kind:?}: recovery refused after a crash: {e}"));
    j.run(&payload, &journal, done, &NoProgress, &cancel)
        .expect("resume");
    j.finish(&payload).expect("finish");
    no_residue(&m, &format!("{kind:?}, recovery"));
    (lock(&m).stores[0].durable.clone(), true)
}

/// Runs a whole job without a fault on machine `m` (payload store 0, progress store 1) and
/// returns the payload store.
fn run_whole(j: &ShiftJob<'_>, m: &Arc<Mutex<Machine>>) -> Sim {
    let payload = Sim { m: m.clone(), i: 0 };
    let journal = Sim { m: m.clone(), i: 1 };
    j.begin(&payload, &journal).expect("begin");
    j.reserve(&payload).expect("reserve");
    j.run(&payload, &journal, 0, &NoProgress, &AtomicBool::new(false))
        .expect("run");
    j.finish(&payload).expect("finish");
    payload
}

/// Syncs and writes of one clean run of a job.
fn count(case: &Case, kind: Kind) -> (usize, usize) {
    let m = start(case, kind, 1);
    let j = job(case, kind);
    run_whole(&j, &m);
    let mm = lock(&m);
    (mm.syncs, mm.writes)
}

#[test]
fn power_loss_at_every_sync_point() {
    let mut points = 0;
    for (u, unit) in [SectorSize::S512, SectorSize::S4096]
        .into_iter()
        .enumerate()
    {
        let case = Case::new(unit, 0x40 + u as u8);
        for kind in KINDS {
            let (initial, expected) = files(&case, kind);
            let (syncs, _) = count(&case, kind);
            // begin, 2 per window, finish; moving up, reserve, and finish syncs twice (the
            // zeros over the old window, then the hole punched in their place).
            let windows = (LEN as u64 / SHIFT) as usize;
            assert_eq!(
                syncs,
                2 + 2 * windows + 2 * usize::from(kind.up),
                "{kind:?}"
            );
            for k in 1..=syncs {
                let (got, started) = crash_and_recover(
                    &case,
                    kind,
                    |m| m.crash_at_sync = Some(k),
                    (k as u64) * 7919 + kind.transform as u64 + u64::from(kind.up),
                );
                if started {
                    assert!(
                        got == expected,
                        "{kind:?}, unit {unit}, crash at sync {k}: recovered bytes differ"
                    );
                } else {
                    assert!(got == initial);
                }
                points += 1;
            }
        }
    }
    assert_eq!(points, 2 * (4 * 18 + 2 * 2));
    println!("data-shift power-loss points: {points}, 0 bytes lost");
}

#[test]
fn power_loss_at_every_sync_point_of_a_sparse_payload() {
    // 16 MiB with holes, allocated zeros and zero plaintext (sim's `Case::sparse`) in two
    // windows; every sync point of every kind, both units.
    let mut points = 0;
    for (u, unit) in [SectorSize::S512, SectorSize::S4096]
        .into_iter()
        .enumerate()
    {
        let case = Case::sparse(16 << 20, unit, 0x70 + u as u8, 2 << 20);
        for kind in KINDS {
            let (initial, expected) = files(&case, kind);
            // A clean run: the holes move with the payload and stay holes, what a job turns
            // into zeros is given back, and so is the old first window of a move up.
            let m = start(&case, kind, 5);
            let j = job(&case, kind);
            let payload = run_whole(&j, &m);
            drop(payload);
            no_residue(&m, &format!("{kind:?}"));
            assert!(
                lock(&m).stores[0].durable == expected,
                "{kind:?}, unit {unit}"
            );
            let alloc = Case::allocated(&m);
            let (_, dst) = kind.offsets();
            let blocks = |r: &std::ops::Range<usize>| {
                (dst as usize + r.start) / BLOCK..(dst as usize + r.end) / BLOCK
            };
            let t = kind.transform;
            for (ranges, allocated, what) in [
                (&case.holes, false, "hole"),
                (&case.zeros, t == 1, "zeros"),
                (&case.zero_plain, t != 2, "zero plaintext"),
            ] {
                for r in ranges {
                    assert!(
                        alloc[blocks(r)].iter().all(|&a| a == allocated),
                        "{kind:?}, unit {unit}: {what} {r:?}"
                    );
                }
            }
            if kind.up {
                let below = SHIFT as usize / BLOCK;
                assert!(
                    alloc[..below].iter().all(|a| !a),
                    "{kind:?}: the old first window was not given back"
                );
            }
            let syncs = lock(&m).syncs;
            for k in 1..=syncs {
                let (got, started) = crash_and_recover(
                    &case,
                    kind,
                    |m| m.crash_at_sync = Some(k),
                    (k as u64) * 7907 + kind.transform as u64 + u64::from(kind.up),
                );
                assert!(
                    if started {
                        got == expected
                    } else {
                        got == initial
                    },
                    "sparse, {kind:?}, unit {unit}, crash at sync {k}: recovered bytes differ"
                );
                points += 1;
            }
        }
    }
    // Two windows: 6 syncs, and 2 more for a move up.
    assert_eq!(points, 2 * (2 * 8 + 2 * 6));
    println!("data-shift power-loss points on a sparse payload: {points}, 0 bytes lost");
}

#[test]
fn write_and_fsync_errors_at_every_step() {
    // 16 MiB (two windows) keeps every write of every job kind affordable: each of the
    // pieces, the room, the progress file and the last step's zeros.
    let case = Case::sized(16 << 20, SectorSize::S4096, 0x51);
    let mut injected = 0;
    let mut expected_injections = 0;
    for kind in KINDS {
        let (_, expected) = files(&case, kind);
        let (syncs, writes) = count(&case, kind);
        expected_injections += syncs + writes;
        for w in 1..=writes {
            let (got, started) = crash_and_recover(
                &case,
                kind,
                |m| m.fail_write_at = Some(w),
                w as u64 * 31 + 1,
            );
            assert!(!started || got == expected, "{kind:?}: write error at {w}");
            injected += 1;
        }
        for s in 1..=syncs {
            let (got, started) =
                crash_and_recover(&case, kind, |m| m.fail_sync_at = Some(s), s as u64 * 37 + 5);
            assert!(!started || got == expected, "{kind:?}: fsync error at {s}");
            injected += 1;
        }
    }
    assert_eq!(injected, expected_injections);
    println!("data-shift injected I/O errors: {injected}, 0 bytes lost");
}

/// Stops a job cleanly once `windows` windows are durable.
struct StopAfter<'a>(&'a AtomicBool, std::sync::atomic::AtomicU64, u64);
impl vmcrypt_core::Progress for StopAfter<'_> {
    fn advance(&self, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.1.fetch_add(bytes, Relaxed) + bytes >= self.2 * SHIFT {
            self.0.store(true, Relaxed);
        }
    }
}

#[test]
fn altered_foreign_and_rolled_back_progress_is_refused_before_any_write() {
    let case = Case::new(SectorSize::S4096, 0x62);
    let kind = KINDS[0];
    let (initial, _) = files(&case, kind);
    let m = machine(initial, 77);
    let j = job(&case, kind);
    let payload = Sim { m: m.clone(), i: 0 };
    let journal = Sim { m: m.clone(), i: 1 };
    j.begin(&payload, &journal).expect("begin");
    j.reserve(&payload).expect("reserve");
    // Two windows done: keep that progress file to roll back to later.
    let stop = AtomicBool::new(false);
    let e = j
        .run(
            &payload,
            &journal,
            0,
            &StopAfter(&stop, Default::default(), 2),
            &stop,
        )
        .expect_err("stopped");
    assert!(matches!(e, Error::Cancelled { .. }), "{e}");
    lock(&m).reboot();
    assert_eq!(j.recover(&payload, &journal).expect("recover"), 2);
    let old_journal = lock(&m).stores[1].durable.clone();
    // Five windows done.
    let stop = AtomicBool::new(false);
    let _ = j.run(
        &payload,
        &journal,
        2,
        &StopAfter(&stop, Default::default(), 5),
        &stop,
    );
    lock(&m).reboot();
    assert_eq!(j.recover(&payload, &journal).expect("recover"), 5);
    let pristine_payload = lock(&m).stores[0].durable.clone();
    let pristine_journal = lock(&m).stores[1].durable.clone();
    let pristine = (pristine_payload, pristine_journal);
    // Slot s holds `done` with (done - 1) % 2 == s: done = 5 is in slot 0 (block 1).
    for (what, at) in [("header", 30usize), ("header MAC", 90)] {
        let mut jb = pristine.1.clone();
        jb[at] ^= 0x01;
        lock(&m).stores[1].durable = jb;
        let e = j.recover(&payload, &journal).expect_err(what);
        assert!(matches!(e, Error::Integrity { .. }), "{what}: {e}");
        assert!(
            lock(&m).stores[0].durable == pristine.0,
            "{what}: payload written"
        );
    }
    // An altered newest slot looks like one torn by a crash: the older slot rules, which is
    // safe (its next window's source is only overwritten by the window after it).
    for (what, at) in [("newest slot", 4096 + 10), ("newest slot MAC", 4096 + 60)] {
        let mut jb = pristine.1.clone();
        jb[at] ^= 0x01;
        lock(&m).stores[1].durable = jb;
        assert_eq!(j.recover(&payload, &journal).expect(what), 4, "{what}");
    }
    // Both slots altered: the header's fingerprint of the first window no longer matches.
    let mut jb = pristine.1.clone();
    jb[4096 + 10] ^= 1;
    jb[2 * 4096 + 10] ^= 1;
    lock(&m).stores[1].durable = jb;
    assert!(matches!(
        j.recover(&payload, &journal),
        Err(Error::Integrity { .. })
    ));
    // Rolled back to the progress of two windows ago: its next window was overwritten since.
    lock(&m).stores[1].durable = old_journal;
    let e = j.recover(&payload, &journal).expect_err("rolled back");
    assert!(
        matches!(&e, Error::Integrity { reason, .. } if reason.contains("older than the image")),
        "{e}"
    );
    // A truncated or missing progress file.
    lock(&m).stores[1].durable = pristine.1[..100].to_vec();
    assert!(matches!(
        j.recover(&payload, &journal),
        Err(Error::Integrity { .. })
    ));
    // Another job's keys, or another job's parameters.
    lock(&m).stores[1].durable = pristine.1.clone();
    let other = ShiftJob::new(
        Transform::Encrypt(&case.old),
        JOB_ID,
        LEN as u64,
        case.unit,
        0,
        SHIFT,
        2,
    )
    .expect("job");
    assert!(matches!(
        other.recover(&payload, &journal),
        Err(Error::Integrity { .. })
    ));
    let wider = ShiftJob::new(
        case.transform(1),
        JOB_ID,
        LEN as u64,
        case.unit,
        0,
        2 * SHIFT,
        2,
    )
    .expect("job");
    assert!(matches!(
        wider.recover(&payload, &journal),
        Err(Error::Integrity { .. })
    ));
    assert!(lock(&m).stores[0].durable == pristine.0);
    // The genuine one recovers and finishes.
    let done = j.recover(&payload, &journal).expect("recover");
    assert_eq!(done, 5);
    j.run(
        &payload,
        &journal,
        done,
        &NoProgress,
        &AtomicBool::new(false),
    )
    .expect("run");
    j.finish(&payload).expect("finish");
    assert!(lock(&m).stores[0].durable == files(&case, kind).1);
}

#[test]
fn small_and_ragged_payloads_move_intact() {
    // Payloads shorter than a window and not a whole number of windows, both directions.
    for len in [4096usize, 3 << 20, (8 << 20) + 4096, (20 << 20) + 512 * 3] {
        let case = Case::sized(len, SectorSize::S512, len as u8);
        for kind in KINDS {
            let (initial, expected) = files(&case, kind);
            let m = machine(initial, 5);
            let j = job(&case, kind);
            let payload = run_whole(&j, &m);
            assert!(
                lock(&m).stores[0].durable == expected,
                "{len} bytes, {kind:?}"
            );
            // Finishing again is harmless.
            j.finish(&payload).expect("finish again");
            assert!(lock(&m).stores[0].durable == expected);
        }
    }
}

/// The slow suite (`just crash-slow`): a 1 GiB payload moved in 16 MiB windows, a crash at
/// every sync point of every job kind, each with three tear patterns. After each crash,
/// recovery must count only windows whose final bytes are in place and leave every window
/// it has not counted with an intact source, which is all the rest of the job reads (the
/// 64 MiB tests above run the rest to the end).
#[test]
#[ignore = "slow suite (minutes, several GiB of memory): run with `just crash-slow`"]
fn power_loss_slow_suite_1gib() {
    const SLOW_SHIFT: u64 = 16 << 20;
    let slow_len = std::env::var("VMCRYPT_SLOW_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(1usize << 30, |m| m << 20);
    let case = Case::sized(slow_len, SectorSize::S4096, 0x77);
    let started = std::time::Instant::now();
    let mut points = 0;
    for kind in KINDS {
        let (src, dst) = if kind.up {
            (0, SLOW_SHIFT)
        } else {
            (SLOW_SHIFT, 0)
        };
        let (before, after) = case.states(kind.transform);
        let mut initial = vec![0u8; src as usize];
        initial.extend_from_slice(&before);
        let make = || {
            ShiftJob::new(
                case.transform(kind.transform),
                JOB_ID,
                slow_len as u64,
                case.unit,
                src,
                dst,
                2,
            )
            .expect("job")
        };
        // One clean run, recording the writes pending at every sync.
        let syncs: Vec<Pending> = {
            let m = machine(initial.clone(), 1);
            let j = make();
            let payload = Recorder {
                sim: Sim { m: m.clone(), i: 0 },
                log: Default::default(),
            };
            let journal = Recorder {
                sim: Sim { m: m.clone(), i: 1 },
                log: payload.log.clone(),
            };
            j.begin(&payload, &journal).expect("begin");
            j.reserve(&payload).expect("reserve");
            j.run(&payload, &journal, 0, &NoProgress, &AtomicBool::new(false))
                .expect("run");
            payload.log.lock().expect("log").clone()
        };
        let windows = (slow_len as u64).div_ceil(SLOW_SHIFT);
        let window_at = |i: u64| if kind.up { windows - 1 - i } else { i };
        let range = |w: u64| {
            let s = (w * SLOW_SHIFT) as usize;
            (s, (s + SLOW_SHIFT as usize).min(slow_len))
        };
        let mut durable = [initial.clone(), Vec::new()];
        for (k, pending) in syncs.iter().enumerate() {
            for pattern in 0..3u64 {
                let seed = (k as u64) * 1_000_003 + pattern * 7 + kind.transform as u64;
                let m = crashed_with(&durable, pending, seed);
                let payload = Sim { m: m.clone(), i: 0 };
                let journal = Sim { m: m.clone(), i: 1 };
                let recorded = k > usize::from(kind.up);
                let got_src = |m: &Machine, w: u64| {
                    let (a, b) = range(w);
                    m.stores[0].durable[src as usize + a..src as usize + b] == before[a..b]
                };
                if !recorded {
                    // Crash in begin() (or in the room it makes): nothing recorded the job,
                    // and no byte of the payload may have changed.
                    let mm = lock(&m);
                    assert!((0..windows).all(|w| got_src(&mm, w)), "{kind:?}, sync {k}");
                } else {
                    let done = make()
                        .recover(&payload, &journal)
                        .unwrap_or_else(|e| panic!("{kind:?}, sync {k}, pattern {pattern}: {e}"));
                    let mm = lock(&m);
                    for i in 0..windows {
                        let w = window_at(i);
                        let (a, b) = range(w);
                        if i < done {
                            assert!(
                                mm.stores[0].durable[dst as usize + a..dst as usize + b]
                                    == after[a..b],
                                "{kind:?}, sync {k}, pattern {pattern}: window {w} counted done"
                            );
                        } else {
                            assert!(
                                got_src(&mm, w),
                                "{kind:?}, sync {k}, pattern {pattern}: window {w} source lost"
                            );
                        }
                    }
                }
                points += 1;
            }
            for (i, o, d) in pending {
                apply(&mut durable[*i], *o, d);
            }
        }
        println!(
            "data-shift slow suite: {kind:?} done, {points} points so far, {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "data-shift slow suite: {points} power-loss points on {} MiB, 0 bytes lost, {:.0} s",
        slow_len >> 20,
        started.elapsed().as_secs_f64()
    );
}
