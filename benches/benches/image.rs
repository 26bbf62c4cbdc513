//! Whole-image jobs through the library, as the CLI runs them (criterion): encrypt and decrypt
//! to a new file, and the crash-safe in-place encrypt and decrypt, on a 256 MiB raw image in
//! the temp directory (page cache). `cargo bench -p vmcrypt-benches --bench image`

use std::path::Path;
use std::sync::atomic::AtomicBool;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::provider::{KeyProvider, Registry};
use vmcrypt_core::{DiskJob, NoProgress};

const LEN: u64 = 256 << 20;

fn image(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ks = dir.path().join("native.keystore");
    let native: std::sync::Arc<dyn KeyProvider> =
        std::sync::Arc::new(NativeProvider::create("native", &ks).expect("keystore"));
    let registry = Registry::of(native);
    let src = dir.path().join("src.img");
    std::fs::write(&src, vec![0x17u8; LEN as usize]).expect("write image");
    let cancel = AtomicBool::new(false);
    let remove = |p: &Path| {
        let _ = std::fs::remove_file(p);
        let _ = std::fs::remove_file(p.with_extension("img.vmcrypt"));
    };
    let mut g = c.benchmark_group("image-256MiB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(LEN));
    let enc = dir.path().join("enc.img");
    g.bench_function("encrypt-to-new-file", |b| {
        b.iter(|| {
            remove(&enc);
            DiskJob::encrypt(&src)
                .provider("native")
                .output(&enc)
                .run(&registry, &NoProgress, &cancel)
                .expect("encrypt")
        })
    });
    let dec = dir.path().join("dec.img");
    g.bench_function("decrypt-to-new-file", |b| {
        b.iter(|| {
            remove(&dec);
            DiskJob::decrypt(&enc)
                .output(&dec)
                .run(&registry, &NoProgress, &cancel)
                .expect("decrypt")
        })
    });
    // In place: each iteration encrypts (moving the payload up a window) and decrypts (moving
    // it back), so the image is the same before every iteration; throughput counts both.
    let work = dir.path().join("work.img");
    std::fs::copy(&src, &work).expect("copy");
    g.throughput(Throughput::Bytes(2 * LEN));
    g.bench_function("encrypt-then-decrypt-in-place-crash-safe", |b| {
        b.iter(|| {
            DiskJob::encrypt(&work)
                .provider("native")
                .run(&registry, &NoProgress, &cancel)
                .expect("encrypt");
            DiskJob::decrypt(&work)
                .run(&registry, &NoProgress, &cancel)
                .expect("decrypt")
        })
    });
    g.finish();
}

criterion_group!(benches, image);
criterion_main!(benches);
