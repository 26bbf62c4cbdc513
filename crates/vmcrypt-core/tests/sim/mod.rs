//! A simulated machine for the crash tests of the in-place engines: every store keeps the
//! writes since its last sync pending, and a crash keeps, drops or tears each of them (each
//! 512-byte sector old, new or garbage).
//!
//! A store may also model holes (`Store::alloc`): which 4096-byte blocks are allocated, what
//! `SEEK_DATA` reports, and `FALLOC_FL_PUNCH_HOLE`, a metadata change that a crash keeps or
//! drops whole (it zeroes, it never tears into garbage).
#![allow(dead_code)]

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use vmcrypt_core::engine::{Storage, Transform};
use vmcrypt_core::secret::Dek;
use vmcrypt_core::{Direction, Error, Result, SectorSize};

pub const LEN: usize = 64 << 20;

/// Locks the machine (a panicking test poisons nothing that matters).
pub fn lock(m: &Arc<Mutex<Machine>>) -> MutexGuard<'_, Machine> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The file system's block: the granularity of holes.
pub const BLOCK: usize = 4096;

#[derive(Default)]
pub struct Store {
    pub durable: Vec<u8>,
    pub pending: Vec<(u64, Vec<u8>)>,
    /// Durable allocation, a flag per block, for a store that has holes; `None`: it cannot
    /// punch and reports everything as data.
    pub alloc: Option<Vec<bool>>,
    /// Which entries of `pending` are punches (their bytes are zeros).
    pub punched: Vec<usize>,
}

impl Store {
    pub fn new(durable: Vec<u8>) -> Store {
        Store {
            durable,
            ..Store::default()
        }
    }

    /// The pending punches that would free blocks whose durable bytes are not zeros: on a
    /// real disk those bytes (old plaintext, or ciphertext under a retired key) stay on the
    /// device, unreachable but not erased, since a punch drops the page cache's zeros over
    /// them. (entry in `pending`, range)
    pub fn residue(&self) -> Vec<(usize, Range<u64>)> {
        self.punched
            .iter()
            .filter_map(|&j| {
                let (o, d) = &self.pending[j];
                let (a, b) = (
                    (*o as usize).div_ceil(BLOCK) * BLOCK,
                    (*o as usize + d.len()) / BLOCK * BLOCK,
                );
                let (a, b) = (a.min(self.durable.len()), b.min(self.durable.len()));
                (a < b && self.durable[a..b].iter().any(|&x| x != 0))
                    .then_some((j, a as u64..b as u64))
            })
            .collect()
    }

    /// Allocation as the page cache shows it: durable, with the pending writes and punches
    /// laid over in order.
    pub fn alloc_view(&self) -> Option<Vec<bool>> {
        let mut a = self.alloc.clone()?;
        for (j, (o, d)) in self.pending.iter().enumerate() {
            mark(&mut a, *o, d.len(), !self.punched.contains(&j));
        }
        Some(a)
    }
}

/// Marks the blocks of `[off, off + len)` allocated (any block touched) or, for a punch,
/// unallocated (whole blocks only; a punch zeroes the partial ones in place).
pub fn mark(alloc: &mut Vec<bool>, off: u64, len: usize, allocated: bool) {
    let (a, b) = (off as usize, off as usize + len);
    if allocated {
        if len == 0 {
            return;
        }
        let last = (b - 1) / BLOCK;
        if alloc.len() <= last {
            alloc.resize(last + 1, false);
        }
        alloc[a / BLOCK..=last].fill(true);
    } else {
        let (first, end) = (a.div_ceil(BLOCK), (b / BLOCK).min(alloc.len()));
        if first < end {
            alloc[first..end].fill(false);
        }
    }
}

#[derive(Default)]
pub struct Machine {
    pub stores: Vec<Store>,
    pub syncs: usize,
    pub writes: usize,
    pub crash_at_sync: Option<usize>,
    /// Punches asked for (by stores that have holes).
    pub punches: usize,
    /// Punches that became durable over blocks whose durable bytes were not zeros
    /// ([`Store::residue`]): (store, range).
    pub residue: Vec<(usize, Range<u64>)>,
    pub fail_write_at: Option<usize>,
    pub fail_sync_at: Option<usize>,
    pub down: bool,
    pub rng: u64,
}

impl Machine {
    pub fn rand(&mut self) -> u64 {
        // xorshift64*: reproducible from the seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Power loss: each pending write is kept, dropped or torn sector by sector.
    pub fn crash(&mut self) {
        self.down = true;
        for i in 0..self.stores.len() {
            let residue = self.stores[i].residue();
            let pending = std::mem::take(&mut self.stores[i].pending);
            let punched = std::mem::take(&mut self.stores[i].punched);
            for (j, (off, data)) in pending.into_iter().enumerate() {
                if punched.contains(&j) {
                    if self.rand().is_multiple_of(2) {
                        self.stores[i].land(off, &data, false);
                        let left = residue.iter().filter(|(k, _)| *k == j);
                        self.residue.extend(left.map(|(_, r)| (i, r.clone())));
                    }
                    continue;
                }
                if let Some(a) = &mut self.stores[i].alloc {
                    // Kept, dropped or torn: count it allocated (the safe side for a reader).
                    mark(a, off, data.len(), true);
                }
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

    /// After a failed run: power is lost if the machine is still up (an I/O error is followed
    /// by a crash of whatever was not synced), then it boots again.
    pub fn crash_and_reboot(&mut self) {
        if !self.down {
            self.crash();
        }
        self.reboot();
    }

    /// A fresh boot: only durable bytes remain.
    pub fn reboot(&mut self) {
        for s in &mut self.stores {
            s.pending.clear();
            s.punched.clear();
        }
        self.down = false;
        self.crash_at_sync = None;
        self.fail_write_at = None;
        self.fail_sync_at = None;
    }
}

impl Store {
    /// Makes one write (or punch) durable.
    fn land(&mut self, off: u64, data: &[u8], write: bool) {
        apply(&mut self.durable, off, data);
        if let Some(a) = &mut self.alloc {
            mark(a, off, data.len(), write);
        }
    }
}

pub fn apply(buf: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[off as usize..end].copy_from_slice(data);
}

pub struct Sim {
    pub m: Arc<Mutex<Machine>>,
    pub i: usize,
}

pub fn io_err(what: &str) -> Error {
    Error::Io {
        op: "simulate",
        path: what.into(),
        source: std::io::Error::other(what.to_string()),
    }
}

impl Storage for Sim {
    fn set_len(&self, len: u64) -> Result<()> {
        // A size change is modelled as durable at once (one of the outcomes a crash can have).
        let mut m = lock(&self.m);
        if m.down {
            return Err(io_err("machine is down"));
        }
        let st = &mut m.stores[self.i];
        st.durable.resize(len as usize, 0);
        if let Some(a) = &mut st.alloc {
            // Growing adds a hole; shrinking frees the blocks past the end.
            a.resize((len as usize).div_ceil(BLOCK), false);
        }
        for (o, d) in &mut st.pending {
            let end = (*o as usize + d.len()).min(len as usize);
            d.truncate(end.saturating_sub(*o as usize));
        }
        Ok(())
    }

    fn size(&self) -> Result<u64> {
        Ok(lock(&self.m).stores[self.i].durable.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        let m = lock(&self.m);
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

    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        let mut m = lock(&self.m);
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

    fn sync(&self) -> Result<()> {
        let mut m = lock(&self.m);
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
        let i = self.i;
        let residue = m.stores[i].residue();
        m.residue.extend(residue.into_iter().map(|(_, r)| (i, r)));
        let st = &mut m.stores[i];
        let pending = std::mem::take(&mut st.pending);
        let punched = std::mem::take(&mut st.punched);
        for (j, (o, d)) in pending.into_iter().enumerate() {
            st.land(o, &d, !punched.contains(&j));
        }
        Ok(())
    }

    fn punch(&self, off: u64, len: u64) -> Result<bool> {
        let mut m = lock(&self.m);
        if m.down {
            return Err(io_err("machine is down"));
        }
        let st = &mut m.stores[self.i];
        if st.alloc.is_none() {
            return Ok(false);
        }
        st.punched.push(st.pending.len());
        st.pending.push((off, vec![0; len as usize]));
        m.punches += 1;
        Ok(true)
    }

    fn data_ranges(&self, off: u64, len: u64) -> Result<Vec<(u64, u64)>> {
        let m = lock(&self.m);
        if m.down {
            return Err(io_err("machine is down"));
        }
        let Some(alloc) = m.stores[self.i].alloc_view() else {
            return Ok(vec![(off, off + len)]);
        };
        let end = off + len;
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (b, _) in alloc.iter().enumerate().filter(|(_, a)| **a) {
            let (x, y) = (
                ((b * BLOCK) as u64).max(off),
                (((b + 1) * BLOCK) as u64).min(end),
            );
            if x >= y {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.1 == x => last.1 = y,
                _ => out.push((x, y)),
            }
        }
        Ok(out)
    }
}

pub struct Case {
    pub plain: Vec<u8>,
    /// Zero ranges of the plaintext that are holes at the start (unallocated, every kind).
    pub holes: Vec<Range<usize>>,
    /// Zero ranges that are allocated and zero on disk in every state: plaintext zeros to
    /// encrypt, or, in an encrypted payload, zero units written without a punch (they read
    /// as zeros; a job that rewrites them gives their room back).
    pub zeros: Vec<Range<usize>>,
    /// Zero plaintext stored as ciphertext in the encrypted states: a decryption turns it
    /// into zeros over data, which it must write (no old ciphertext left in freed blocks)
    /// before it punches.
    pub zero_plain: Vec<Range<usize>>,
    pub old: Dek,
    pub new: Dek,
    pub unit: SectorSize,
    /// (initial, expected) payloads per job kind, computed once.
    pub cache: [std::cell::OnceCell<(Vec<u8>, Vec<u8>)>; 3],
}

impl Case {
    pub fn new(unit: SectorSize, seed: u8) -> Case {
        Case::sized(LEN, unit, seed)
    }

    pub fn sized(len: usize, unit: SectorSize, seed: u8) -> Case {
        let plain = (0..len)
            .map(|i| ((i / 512) as u8).wrapping_mul(13) ^ (i as u8) ^ seed)
            .collect();
        Case {
            plain,
            holes: vec![],
            zeros: vec![],
            zero_plain: vec![],
            old: Dek::generate_xts().expect("rng"),
            new: Dek::generate_xts().expect("rng"),
            unit,
            cache: Default::default(),
        }
    }

    /// A case of `len` (at least 8 chunks) bytes with holes, allocated zeros and zero
    /// plaintext, at block boundaries: across chunk boundaries of `chunk` bytes, a whole
    /// chunk, single blocks, side by side but never overlapping.
    pub fn sparse(len: usize, unit: SectorSize, seed: u8, chunk: usize) -> Case {
        let mut c = Case::sized(len, unit, seed);
        let b = BLOCK;
        c.holes = vec![
            chunk / 2..chunk + chunk / 2,
            3 * chunk + 4 * b..3 * chunk + 6 * b,
            4 * chunk..5 * chunk,
            len - b..len,
        ];
        c.zeros = vec![
            2 * chunk - 2 * b..2 * chunk + 16 * b,
            6 * chunk..6 * chunk + chunk / 2,
            6 * chunk + chunk / 2 + b..6 * chunk + chunk / 2 + 2 * b,
        ];
        c.zero_plain = vec![
            3 * chunk - b..3 * chunk + 2 * b,
            5 * chunk..5 * chunk + 4 * b,
            7 * chunk..7 * chunk + chunk / 4,
        ];
        for r in c.holes.iter().chain(&c.zeros).chain(&c.zero_plain) {
            c.plain[r.clone()].fill(0);
        }
        c
    }

    fn zero(&self, mut b: Vec<u8>, ranges: &[&[Range<usize>]]) -> Vec<u8> {
        for r in ranges.iter().flat_map(|r| r.iter()) {
            b[r.clone()].fill(0);
        }
        b
    }

    /// The machine a job of `kind` starts on: its initial payload, and the holes.
    pub fn machine(&self, kind: u8, seed: u64) -> Arc<Mutex<Machine>> {
        let m = machine(self.states(kind).0, seed);
        if !self.holes.is_empty() {
            let mut alloc = vec![true; self.plain.len().div_ceil(BLOCK)];
            for r in &self.holes {
                mark(&mut alloc, r.start as u64, r.len(), false);
            }
            lock(&m).stores[0].alloc = Some(alloc);
            lock(&m).stores[1].alloc = Some(vec![]);
        }
        m
    }

    /// Blocks allocated in the payload of `m`, as the file system shows them (a punch after
    /// the last sync is done, though not yet durable).
    pub fn allocated(m: &Arc<Mutex<Machine>>) -> Vec<bool> {
        lock(m).stores[0].alloc_view().expect("a store with holes")
    }

    pub fn encrypted(&self, dek: &Dek) -> Vec<u8> {
        let mut b = self.plain.clone();
        dek.xts()
            .expect("xts")
            .par_sectors(&mut b, 0, self.unit, Direction::Encrypt)
            .expect("encrypt");
        b
    }

    /// (initial payload, expected payload) for a transform kind.
    pub fn states(&self, kind: u8) -> (Vec<u8>, Vec<u8>) {
        self.cache[kind as usize - 1]
            .get_or_init(|| {
                // Holes stay holes; allocated zeros are plaintext to encrypt, and zero units
                // in a ciphertext read as zeros.
                let (h, z) = (&self.holes[..], &self.zeros[..]);
                match kind {
                    1 => (
                        self.plain.clone(),
                        self.zero(self.encrypted(&self.new), &[h]),
                    ),
                    2 => (
                        self.zero(self.encrypted(&self.old), &[h, z]),
                        self.plain.clone(),
                    ),
                    _ => (
                        self.zero(self.encrypted(&self.old), &[h, z]),
                        self.zero(self.encrypted(&self.new), &[h, z]),
                    ),
                }
            })
            .clone()
    }

    pub fn transform(&self, kind: u8) -> Transform<'_> {
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

pub fn machine(payload: Vec<u8>, seed: u64) -> Arc<Mutex<Machine>> {
    Arc::new(Mutex::new(Machine {
        stores: vec![Store::new(payload), Store::new(vec![])],
        rng: seed | 1,
        ..Machine::default()
    }))
}

/// The writes pending at one sync: (store, offset, bytes).
pub type Pending = Vec<(usize, u64, Vec<u8>)>;

/// A simulated store that logs, at every sync, the writes of every store still pending.
pub struct Recorder {
    pub sim: Sim,
    pub log: Arc<Mutex<Vec<Pending>>>,
}

impl Storage for Recorder {
    fn set_len(&self, len: u64) -> Result<()> {
        self.sim.set_len(len)
    }
    fn size(&self) -> Result<u64> {
        self.sim.size()
    }
    fn read_at(&self, buf: &mut [u8], off: u64) -> Result<()> {
        self.sim.read_at(buf, off)
    }
    fn write_at(&self, buf: &[u8], off: u64) -> Result<()> {
        self.sim.write_at(buf, off)
    }
    fn sync(&self) -> Result<()> {
        let pending: Pending = {
            let m = lock(&self.sim.m);
            m.stores
                .iter()
                .enumerate()
                .flat_map(|(i, st)| st.pending.iter().map(move |(o, d)| (i, *o, d.clone())))
                .collect()
        };
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(pending);
        self.sim.sync()
    }
}

/// A machine whose stores hold `durable`, with the writes `pending` at one sync, crashed there
/// (each pending write kept, dropped or torn, as the seed decides) and rebooted.
pub fn crashed_with(durable: &[Vec<u8>], pending: &Pending, seed: u64) -> Arc<Mutex<Machine>> {
    let m = Arc::new(Mutex::new(Machine {
        stores: durable.iter().map(|d| Store::new(d.clone())).collect(),
        rng: seed | 1,
        ..Machine::default()
    }));
    {
        let mut mm = lock(&m);
        for (i, o, d) in pending {
            mm.stores[*i].pending.push((*o, d.clone()));
        }
        mm.crash();
        mm.reboot();
    }
    m
}
