//! A simulated machine for the crash tests of the in-place engines: every store keeps the
//! writes since its last sync pending, and a crash keeps, drops or tears each of them (each
//! 512-byte sector old, new or garbage).
#![allow(dead_code)]

use std::sync::{Arc, Mutex, MutexGuard};

use vmcrypt_core::engine::{Storage, Transform};
use vmcrypt_core::secret::Dek;
use vmcrypt_core::{Direction, Error, Result, SectorSize};

pub const LEN: usize = 64 << 20;

/// Locks the machine (a panicking test poisons nothing that matters).
pub fn lock(m: &Arc<Mutex<Machine>>) -> MutexGuard<'_, Machine> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct Store {
    pub durable: Vec<u8>,
    pub pending: Vec<(u64, Vec<u8>)>,
}

#[derive(Default)]
pub struct Machine {
    pub stores: Vec<Store>,
    pub syncs: usize,
    pub writes: usize,
    pub crash_at_sync: Option<usize>,
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
        }
        self.down = false;
        self.crash_at_sync = None;
        self.fail_write_at = None;
        self.fail_sync_at = None;
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
        let pending = std::mem::take(&mut m.stores[self.i].pending);
        for (o, d) in pending {
            apply(&mut m.stores[self.i].durable, o, &d);
        }
        Ok(())
    }
}

pub struct Case {
    pub plain: Vec<u8>,
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
            old: Dek::generate_xts().expect("rng"),
            new: Dek::generate_xts().expect("rng"),
            unit,
            cache: Default::default(),
        }
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
            .get_or_init(|| match kind {
                1 => (self.plain.clone(), self.encrypted(&self.new)),
                2 => (self.encrypted(&self.old), self.plain.clone()),
                _ => (self.encrypted(&self.old), self.encrypted(&self.new)),
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
        let mut mm = lock(&m);
        for (i, o, d) in pending {
            mm.stores[*i].pending.push((*o, d.clone()));
        }
        mm.crash();
        mm.reboot();
    }
    m
}
