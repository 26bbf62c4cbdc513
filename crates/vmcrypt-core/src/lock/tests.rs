use std::fs::OpenOptions;

use super::*;

fn other_description(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .expect("open")
}

#[test]
fn an_exclusive_lock_excludes_every_other_description_until_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("disk.img");
    std::fs::write(&p, [0u8; 4096]).expect("write");
    let lock = DiskLock::acquire(&[(&p, Access::Write)]).expect("lock");
    // What QEMU does: a read lock on its permission bytes.
    let qemu = other_description(&p);
    assert!(!ofd::try_lock(&qemu, ofd::Kind::Read, 100, 2).expect("fcntl"));
    drop(lock);
    assert!(ofd::try_lock(&qemu, ofd::Kind::Read, 100, 2).expect("fcntl"));
    // ... and now vmcrypt is refused, with the file named.
    match DiskLock::acquire(&[(&p, Access::Write)]) {
        Err(Error::InUse { path, .. }) => assert_eq!(path, p),
        other => panic!("expected InUse, got {other:?}"),
    }
}

#[test]
fn the_same_thread_may_nest_another_thread_may_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("disk.img");
    std::fs::write(&p, [0u8; 512]).expect("write");
    let outer = DiskLock::acquire(&[(&p, Access::Write)]).expect("lock");
    let inner = DiskLock::acquire(&[(&p, Access::Write), (&p, Access::Read)]).expect("nested");
    let q = p.clone();
    let from_other =
        std::thread::spawn(move || DiskLock::acquire(&[(&q, Access::Write)]).map(drop))
            .join()
            .expect("thread");
    assert!(
        matches!(from_other, Err(Error::InUse { ref holder, .. }) if holder.contains("this process"))
    );
    drop(inner);
    // The outer lock still holds.
    assert!(!ofd::try_lock(&other_description(&p), ofd::Kind::Read, 0, 0).expect("fcntl"));
    drop(outer);
    assert!(ofd::try_lock(&other_description(&p), ofd::Kind::Write, 0, 0).expect("fcntl"));
}

#[test]
fn a_failed_set_releases_what_it_took() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    std::fs::write(&a, b"a").expect("write");
    std::fs::write(&b, b"b").expect("write");
    let other = other_description(&b);
    assert!(ofd::try_lock(&other, ofd::Kind::Write, 0, 0).expect("fcntl"));
    assert!(DiskLock::acquire(&[(&a, Access::Write), (&b, Access::Write)]).is_err());
    assert!(ofd::try_lock(&other_description(&a), ofd::Kind::Write, 0, 0).expect("fcntl"));
}

#[test]
fn a_shared_lock_is_refused_beside_a_qemu_writer_and_blocks_exclusive_jobs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("ro.img");
    std::fs::write(&p, [0u8; 512]).expect("write");
    let qemu = other_description(&p);
    assert!(ofd::try_lock(&qemu, ofd::Kind::Read, 100, 2).expect("fcntl"));
    // A read-only job on a file it cannot write: shared lock, refused while QEMU writes.
    let ro = OpenOptions::new().read(true).open(&p).expect("open");
    assert!(ofd::try_lock(&ro, ofd::Kind::Read, 0, 0).expect("fcntl"));
    assert!(ofd::conflicts(&ro, ofd::Kind::Write, QEMU_PERM_WRITE, 1).expect("fcntl"));
    drop(ro);
    drop(qemu);
    let shared = std::fs::File::open(&p).expect("open");
    take(&shared, Access::Read, &p).expect("shared lock");
    assert!(!ofd::try_lock(&other_description(&p), ofd::Kind::Write, 0, 0).expect("fcntl"));
}

#[test]
fn a_rewritten_file_stays_locked_under_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("disk.vmdk");
    std::fs::write(&p, b"old").expect("write");
    let lock = DiskLock::acquire(&[(&p, Access::Write)]).expect("lock");
    crate::fsutil::write_atomic(&p, b"new", 0o644).expect("rewrite");
    assert_eq!(std::fs::read(&p).expect("read"), b"new");
    assert!(!ofd::try_lock(&other_description(&p), ofd::Kind::Read, 100, 1).expect("fcntl"));
    // Nested and released in order: still one entry, released with the lock.
    drop(lock);
    assert!(ofd::try_lock(&other_description(&p), ofd::Kind::Write, 0, 0).expect("fcntl"));
    assert!(
        registry()
            .iter()
            .all(|h| h.key != key_of(&std::fs::metadata(&p).expect("stat")))
    );
}

#[test]
fn a_fifo_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("fifo");
    rustix::fs::mkfifoat(rustix::fs::CWD, &p, rustix::fs::Mode::from_raw_mode(0o600))
        .expect("mkfifo");
    let r = DiskLock::acquire(&[(&p, Access::Write)]);
    assert_eq!(
        r.map(|_| ()).map_err(|e| e.kind()),
        Err(crate::ErrorKind::InvalidInput)
    );
}
