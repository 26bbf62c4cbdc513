//! Key operations, which must never be the bottleneck of a job (criterion): wrapping and
//! unwrapping a DEK under a KEK, a native provider's KEK fetch (HKDF), opening a keystore, and
//! a KMIP Get round trip (TLS 1.3, one request on a reused connection and on a fresh one)
//! against a local PyKMIP server provisioned by vmcrypt-testkit.
//! `cargo bench -p vmcrypt-benches --bench keys`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use vmcrypt_core::SectorSize;
use vmcrypt_core::locator::KeyLocator;
use vmcrypt_core::provider::native::NativeProvider;
use vmcrypt_core::provider::{KeyProvider, KeyPurpose};
use vmcrypt_core::secret::{Dek, Kek};
use vmcrypt_core::wrap::{DiskIdentity, WrapContext, unwrap_dek, wrap_dek};
use vmcrypt_kmip::provider::{KmipProvider, KmipSettings};
use vmcrypt_testkit::pykmip;

fn keys(c: &mut Criterion) {
    let kek = Kek::generate().expect("rng");
    let dek = Dek::generate_xts().expect("rng");
    let disk = DiskIdentity {
        uuid: "4db6f0a5-ca32-44ea-a7da-f8e4d82359fd".into(),
        payload_size: 2 << 30,
        sector_size: SectorSize::S4096,
        payload_offset: 64 << 20,
    };
    let ctx = WrapContext {
        provider: "native",
        key_id: "k1",
        vm_uuid: None,
        disk: &disk,
        generation: 1,
    };
    let locator = wrap_dek(&kek, &dek, &ctx).expect("wrap");
    let KeyLocator::Pair { data: locked, .. } = &locator else {
        panic!("wrap_dek makes a pair");
    };
    let mut g = c.benchmark_group("keys");
    g.bench_function("wrap-dek", |b| {
        b.iter(|| wrap_dek(&kek, &dek, &ctx).expect("wrap"))
    });
    g.bench_function("unwrap-dek", |b| {
        b.iter(|| unwrap_dek(&kek, locked, &ctx).expect("unwrap"))
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let ks = dir.path().join("native.keystore");
    let native = NativeProvider::create("native", &ks).expect("keystore");
    let (id, _) = native
        .create_kek(&KeyPurpose::Vm("bench-vm".into()))
        .expect("create");
    g.bench_function("native-fetch-kek", |b| {
        b.iter(|| native.fetch_kek(&id).expect("fetch"))
    });
    g.bench_function("native-open-keystore-and-fetch", |b| {
        b.iter(|| {
            NativeProvider::open("native", &ks)
                .expect("open")
                .fetch_kek(&id)
                .expect("fetch")
        })
    });
    g.finish();

    // A KMIP Get against a local PyKMIP server: what a provider round trip costs.
    let cluster = pykmip::shared();
    let server = cluster.servers[0].clone();
    let kmip = KmipProvider::new(
        KmipSettings::new(
            "kms",
            vec![server.clone()],
            cluster.pki.ca.clone(),
            cluster.pki.client_cert.clone(),
            cluster.pki.client_key.clone(),
        )
        .timeout(Duration::from_secs(10)),
    )
    .expect("provider");
    let (kid, _) = kmip
        .create_kek(&KeyPurpose::Vm("bench-vm".into()))
        .expect("create on PyKMIP");
    let mut g = c.benchmark_group("kmip-pykmip");
    g.sample_size(20);
    g.bench_function("fetch-kek-new-connection", |b| {
        b.iter(|| kmip.fetch_kek(&kid).expect("fetch"))
    });
    let mut conn = kmip.connect(&server).expect("connect");
    g.bench_function("get-on-reused-connection", |b| {
        b.iter(|| conn.get_aes256(kid.as_str()).expect("get"))
    });
    g.finish();
}

criterion_group!(benches, keys);
criterion_main!(benches);
