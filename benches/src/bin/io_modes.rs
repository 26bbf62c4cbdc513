//! Memory maps or `pread`/`pwrite`? Times the same XTS pass over one image file both ways, in
//! one run, so the choice in `vmcrypt_core::disk::job` rests on a measurement
//! (docs/performance.md). Usage: `io_modes FILE [ROUNDS]`; the file is rewritten in place
//! (encrypted, then decrypted back) and a copy is written beside it.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use rayon::prelude::*;
use vmcrypt_core::reencrypt::pieces::{PIECE, for_each_piece};
use vmcrypt_xts::{SectorSize, Xts};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = std::path::PathBuf::from(args.next().expect("usage: io_modes FILE [ROUNDS]"));
    let rounds: usize = args.next().and_then(|r| r.parse().ok()).unwrap_or(3);
    let len = std::fs::metadata(&path).expect("stat").len();
    let mut key = [0u8; 64];
    key[0] = 1;
    let xts = Xts::new(&key).expect("key");
    let unit = SectorSize::S4096;
    let cancel = AtomicBool::new(false);
    let out = path.with_extension("io-modes-out");
    let gb = |secs: f64| len as f64 / secs / 1e9;
    let best = |f: &mut dyn FnMut() -> f64| (0..rounds).map(|_| f()).fold(f64::MAX, f64::min);
    // The engine's way: pieces read, encrypted and written by two workers; seconds, fsync
    // included.
    let pread_pwrite = |src: &std::fs::File, dst: &std::fs::File| {
        let t = Instant::now();
        for_each_piece(len, 2, &cancel, |buf, off| {
            src.read_exact_at(buf, off).expect("read");
            xts.encrypt_sectors(buf, off, unit).expect("xts");
            dst.write_all_at(buf, off).expect("write");
            Ok(())
        })
        .expect("pieces");
        dst.sync_all().expect("fsync");
        t.elapsed().as_secs_f64()
    };

    let mut pwrite_in_place = || {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        pread_pwrite(&f, &f)
    };
    let a = best(&mut pwrite_in_place);

    let mut mmap_in_place = || {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let t = Instant::now();
        // SAFETY: the file is private to this benchmark; nothing else truncates it meanwhile.
        let mut m = unsafe { memmap2::MmapMut::map_mut(&f) }.expect("map");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        pool.install(|| {
            m.par_chunks_mut(PIECE).enumerate().for_each(|(i, p)| {
                xts.decrypt_sectors(p, (i * PIECE) as u64, unit)
                    .expect("xts");
            })
        });
        m.flush().expect("msync");
        t.elapsed().as_secs_f64()
    };
    let b = best(&mut mmap_in_place);

    // Buffered reads, O_DIRECT writes (ext4 only: tmpfs has no O_DIRECT), 4 KiB-aligned buffers.
    let mut direct_in_place = || {
        use std::os::unix::fs::OpenOptionsExt;
        let r = std::fs::File::open(&path).expect("open");
        let Ok(w) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        else {
            return f64::NAN;
        };
        let t = Instant::now();
        let layout = std::alloc::Layout::from_size_align(PIECE, 4096).expect("layout");
        let ok = std::sync::atomic::AtomicBool::new(true);
        let next = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    // SAFETY: a non-zero-sized layout; freed below with the same layout.
                    let p = unsafe { std::alloc::alloc(layout) };
                    assert!(!p.is_null());
                    // SAFETY: p points to PIECE writable bytes that nothing else aliases.
                    let buf = unsafe { std::slice::from_raw_parts_mut(p, PIECE) };
                    loop {
                        let off =
                            next.fetch_add(PIECE as u64, std::sync::atomic::Ordering::Relaxed);
                        if off >= len {
                            break;
                        }
                        r.read_exact_at(buf, off).expect("read");
                        xts.encrypt_sectors(buf, off, unit).expect("xts");
                        if w.write_all_at(buf, off).is_err() {
                            ok.store(false, std::sync::atomic::Ordering::Relaxed);
                            break;
                        }
                    }
                    // SAFETY: allocated above with this layout.
                    unsafe { std::alloc::dealloc(p, layout) };
                });
            }
        });
        if !ok.load(std::sync::atomic::Ordering::Relaxed) {
            return f64::NAN;
        }
        w.sync_data().expect("fsync");
        t.elapsed().as_secs_f64()
    };
    let e = best(&mut direct_in_place);

    let mut pwrite_new = || {
        let _ = std::fs::remove_file(&out);
        let src = std::fs::File::open(&path).expect("open");
        let dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&out)
            .expect("create");
        pread_pwrite(&src, &dst)
    };
    let c = best(&mut pwrite_new);

    let mut mmap_new = || {
        let _ = std::fs::remove_file(&out);
        let src = std::fs::File::open(&path).expect("open");
        let dst = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&out)
            .expect("create");
        let t = Instant::now();
        dst.set_len(len).expect("size");
        // SAFETY: both files are private to this benchmark and keep their length.
        let s = unsafe { memmap2::Mmap::map(&src) }.expect("map");
        // SAFETY: as above.
        let mut d = unsafe { memmap2::MmapMut::map_mut(&dst) }.expect("map");
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        pool.install(|| {
            d.par_chunks_mut(PIECE)
                .zip(s.par_chunks(PIECE))
                .enumerate()
                .for_each(|(i, (o, p))| {
                    o.copy_from_slice(p);
                    xts.encrypt_sectors(o, (i * PIECE) as u64, unit)
                        .expect("xts");
                })
        });
        d.flush().expect("msync");
        t.elapsed().as_secs_f64()
    };
    let d = best(&mut mmap_new);
    let _ = std::fs::remove_file(&out);

    println!(
        "file: {} ({} MiB), best of {rounds}, 2 threads",
        path.display(),
        len >> 20
    );
    println!("in place, pread/pwrite pieces: {a:.3} s  {:.2} GB/s", gb(a));
    println!("in place, memory map:          {b:.3} s  {:.2} GB/s", gb(b));
    println!("in place, O_DIRECT writes:     {e:.3} s  {:.2} GB/s", gb(e));
    println!("new file, pread/pwrite pieces: {c:.3} s  {:.2} GB/s", gb(c));
    println!("new file, memory maps:         {d:.3} s  {:.2} GB/s", gb(d));
}
