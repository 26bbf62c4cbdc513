//! XTS engine throughput by backend, data unit size and thread count (criterion).
//! `cargo bench -p vmcrypt-benches --bench xts`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use vmcrypt_xts::{Backend, Direction, SectorSize, Xts};

fn key() -> [u8; 64] {
    let mut k = [0u8; 64];
    for (i, b) in k.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(29) ^ 0x5c;
    }
    k
}

fn xts(c: &mut Criterion) {
    for backend in [Backend::Vaes, Backend::Portable] {
        let xts = Xts::with_backend(&key(), backend).expect("halves differ");
        if xts.backend() != backend {
            eprintln!("this CPU has no {} backend; skipped", backend.as_str());
            continue;
        }
        bench_backend(c, &xts);
    }
}

fn bench_backend(c: &mut Criterion, xts: &Xts) {
    let mut g = c.benchmark_group(format!("xts-encrypt-{}", xts.backend().as_str()));
    // 1 MiB stays in L2/L3: the cipher's own speed. 16 MiB streams through memory.
    for &len in &[1usize << 20, 16 << 20] {
        let mut buf = vec![0x42u8; len];
        g.throughput(Throughput::Bytes(len as u64));
        for unit in [SectorSize::S512, SectorSize::S4096] {
            for threads in [1usize, 2] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("pool");
                let id = BenchmarkId::new(
                    format!("unit{}-threads{threads}", unit.bytes()),
                    format!("{}KiB", len / 1024),
                );
                g.bench_function(id, |b| {
                    b.iter(|| {
                        pool.install(|| xts.par_sectors(&mut buf, 0, unit, Direction::Encrypt))
                            .expect("encrypt")
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, xts);
criterion_main!(benches);
