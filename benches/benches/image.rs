//! Whole-image jobs through the library: encrypt to a new file and in place (criterion).
//! The image lives in the temp directory (page cache); `cargo bench -p vmcrypt-benches --bench image`

use std::sync::atomic::AtomicBool;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmcrypt_core::disk::{ImageJob, NoProgress};
use vmcrypt_core::secret::Dek;
use vmcrypt_core::{Direction, SectorSize};

const LEN: u64 = 256 << 20;

fn image(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src.img");
    std::fs::write(&src, vec![0x17u8; LEN as usize]).expect("write image");
    let dek = Dek::generate_xts().expect("rng");
    let cancel = AtomicBool::new(false);
    let mut g = c.benchmark_group("image");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(LEN));
    g.bench_function("encrypt-to-new-file-256MiB", |b| {
        b.iter(|| {
            let out = dir.path().join("out.img");
            let _ = std::fs::remove_file(&out);
            ImageJob::builder(&src, &dek)
                .output(&out)
                .sector_size(SectorSize::S4096)
                .build()
                .expect("job")
                .run(&NoProgress, &cancel)
                .expect("run")
        })
    });
    g.bench_function("encrypt-in-place-256MiB", |b| {
        b.iter(|| {
            ImageJob::builder(&src, &dek)
                .sector_size(SectorSize::S4096)
                .direction(Direction::Encrypt)
                .build()
                .expect("job")
                .run(&NoProgress, &cancel)
                .expect("run")
        })
    });
    g.finish();
}

criterion_group!(benches, image);
criterion_main!(benches);
