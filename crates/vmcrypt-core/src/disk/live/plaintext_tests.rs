//! A plaintext disk served as such (`serve --plaintext`): bytes stored as the guest writes
//! them, whole and partial blocks, discards; the lock keeps a second server away; an
//! encrypted disk or a ragged file is refused.

use vmcrypt_xts::SectorSize;

use super::fixture::disk_with;
use super::{EncryptedDisk, Scratch};

#[test]
fn a_plaintext_disk_is_served_as_its_bytes_under_the_lock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("p.img");
    let mut model: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    std::fs::write(&img, &model).expect("write");
    let disk = EncryptedDisk::open_plaintext(&img).expect("open");
    assert!(disk.is_plaintext());
    assert_eq!(disk.len(), 1 << 20);
    assert_eq!(disk.unit_size(), 512);
    let again = img.clone();
    assert!(
        std::thread::spawn(move || EncryptedDisk::open_plaintext(&again).is_err())
            .join()
            .expect("thread"),
        "one server at a time"
    );
    let mut scratch = Scratch::default();
    // Whole blocks, a run of several, and a 512-byte write into the middle of a 4 KiB page.
    disk.write_at(&[7u8; 8192], 65536, &mut scratch)
        .expect("write");
    model[65536..73728].fill(7);
    disk.write_at(&[9u8; 512], 4096 + 1024, &mut scratch)
        .expect("write");
    model[5120..5632].fill(9);
    let mut back = vec![0u8; 1 << 20];
    disk.read_at(&mut back, 0).expect("read");
    assert!(back == model, "reads give what was written");
    disk.flush().expect("flush");
    assert!(
        std::fs::read(&img).expect("file") == model,
        "the file holds the bytes as written"
    );
    assert!(
        disk.start_deep_rekey(&super::fixture::registry(dir.path()))
            .is_err()
    );
    drop(disk);

    let ragged = dir.path().join("r.img");
    std::fs::write(&ragged, vec![1u8; 1000]).expect("write");
    assert!(
        EncryptedDisk::open_plaintext(&ragged).is_err(),
        "not whole blocks"
    );

    let (enc, e_img) = disk_with(dir.path(), &[3u8; 65536], SectorSize::S4096);
    drop(enc);
    let err = EncryptedDisk::open_plaintext(&e_img).expect_err("encrypted");
    assert!(err.to_string().contains("encrypted"), "{err}");
}
