//! Prints the XTS engine's throughput for the comparison script (benches/compare.sh), in the
//! same shape as `openssl speed`: each (unit, threads) case encrypts a buffer of whole units
//! repeatedly for about `XTS_SPEED_SECONDS` seconds (default 2) and reports GB/s (10^9 bytes/s).
//! Output: `backend <vaes|portable>` (`VMCRYPT_XTS_BACKEND=portable` picks the portable one), then
//! lines `xts unit=<bytes> threads=<n> gbps=<x>`.

use std::time::{Duration, Instant};

use vmcrypt_xts::{Direction, SectorSize, Xts};

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
    // 1 MiB buffers: like openssl speed, this measures the cipher, not memory bandwidth.
    let mut buf = vec![0x42u8; 1 << 20];
    for unit in [SectorSize::S512, SectorSize::S4096] {
        for threads in [1usize, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            let run = |buf: &mut [u8]| {
                if threads == 1 {
                    xts.encrypt_sectors(buf, 0, unit).expect("encrypt");
                } else {
                    pool.install(|| xts.par_sectors(buf, 0, unit, Direction::Encrypt))
                        .expect("encrypt");
                }
            };
            run(&mut buf); // warm up
            let start = Instant::now();
            let mut bytes = 0u64;
            while start.elapsed() < Duration::from_secs_f64(secs) {
                run(&mut buf);
                bytes += buf.len() as u64;
            }
            let gbps = bytes as f64 / start.elapsed().as_secs_f64() / 1e9;
            println!("xts unit={} threads={threads} gbps={gbps:.3}", unit.bytes());
        }
    }
}
