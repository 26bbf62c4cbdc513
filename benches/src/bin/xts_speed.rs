//! Prints the XTS engine's throughput for the comparison script (benches/compare.sh), in the
//! same shape as `openssl speed`: each (unit, threads) case encrypts a buffer of whole units
//! repeatedly for about `XTS_SPEED_SECONDS` seconds (default 2) and reports GB/s (10^9 bytes/s).
//! Output: `backend <vaes|portable>` (`VMCRYPT_XTS_BACKEND=portable` picks the portable one), then
//! lines `xts unit=<bytes> threads=<n> gbps=<x>`.

use std::time::{Duration, Instant};

use vmcrypt_xts::{SectorSize, Xts};

fn main() {
    let secs: f64 = std::env::var("XTS_SPEED_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let mut key = [0u8; 64];
    for (i, b) in key.iter_mut().enumerate() {
        *b = i as u8;
    }
    let xts = Xts::new(&key).expect("halves differ");
    println!("backend {}", xts.backend().as_str());
    // 1 MiB buffers (XTS_SPEED_MIB to change): like openssl speed, this measures the cipher,
    // not memory bandwidth.
    let mib: usize = std::env::var("XTS_SPEED_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    for unit in [SectorSize::S512, SectorSize::S4096] {
        for threads in [1usize, 2] {
            // Like `openssl speed -multi N`: each thread encrypts its own buffer over and over;
            // the figure is the total. (Splitting one 1 MiB buffer across a thread pool for
            // every call measures the pool's wake-ups more than the cipher; the criterion
            // bench covers that case.)
            let start = Instant::now();
            let bytes: u64 = std::thread::scope(|s| {
                let workers: Vec<_> = (0..threads)
                    .map(|_| {
                        s.spawn(|| {
                            let mut buf = vec![0x42u8; mib << 20];
                            xts.encrypt_sectors(&mut buf, 0, unit).expect("warm up");
                            let mut bytes = 0u64;
                            while start.elapsed() < Duration::from_secs_f64(secs) {
                                xts.encrypt_sectors(&mut buf, 0, unit).expect("encrypt");
                                bytes += buf.len() as u64;
                            }
                            bytes
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().expect("worker")).sum()
            });
            let gbps = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
            println!("xts unit={} threads={threads} gbps={gbps:.3}", unit.bytes());
        }
    }
}
