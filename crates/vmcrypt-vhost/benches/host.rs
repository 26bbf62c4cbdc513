//! The host-only figure of the vhost-user-blk backend: GB/s through the device's queue code
//! (decode, disk I/O, XTS, copies to and from guest memory) at queue depth 32, with 128 KiB
//! and 1 MiB requests, reading and writing a 256 MiB encrypted image in the page cache. No
//! guest and no socket: under TCG a guest would only measure itself.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vmcrypt_core::provider::KeyProvider;
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::{DiskJob, EncryptedDisk, NoProgress};
use vmcrypt_vhost::hostbench::HostQueue;

const DISK: u64 = 256 << 20;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ks = dir.path().join("native.keystore");
    NativeProvider::create("native", &ks).expect("keystore");
    let registry = move |name: &str| -> vmcrypt_core::Result<Arc<dyn KeyProvider>> {
        Ok(Arc::new(NativeProvider::open(name, &ks)?))
    };
    let img = dir.path().join("d.img");
    let f = std::fs::File::create(&img).expect("image");
    f.set_len(DISK).expect("size");
    // Data everywhere (no holes), so every read decrypts.
    let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8 + 1).collect();
    for i in 0..DISK >> 20 {
        std::os::unix::fs::FileExt::write_all_at(&f, &block, i << 20).expect("fill");
    }
    drop(f);
    DiskJob::encrypt(&img)
        .provider("native")
        .run(&registry, &NoProgress, &AtomicBool::new(false))
        .expect("encrypt");
    let disk = Arc::new(EncryptedDisk::open(&img, &registry).expect("open"));
    let mut g = c.benchmark_group("vhost_qd32");
    for request in [128u32 << 10, 1 << 20] {
        let mut q = HostQueue::new(Arc::clone(&disk), 32, request);
        let per_round = 32 * u64::from(request);
        g.throughput(Throughput::Bytes(per_round));
        for write in [false, true] {
            let name = format!(
                "{}_{}k",
                if write { "write" } else { "read" },
                request >> 10
            );
            let mut off = 0u64;
            g.bench_function(&name, |b| {
                b.iter(|| {
                    let n = q.round(write, off);
                    off = (off + n) % DISK;
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
