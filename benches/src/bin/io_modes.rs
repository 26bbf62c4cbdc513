//! Memory maps or `pread`/`pwrite`? Times the same XTS pass over one image file both ways, in
//! one run, so the choice in `vmcrypt_core::disk::job` rests on a measurement
//! (docs/performance.md), and the same for the ways of getting a new file onto the disk.
//! Usage: `io_modes FILE [ROUNDS]`; the file is rewritten in place (encrypted, then decrypted
//! back) and copies are written beside it.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use rayon::prelude::*;
use vmcrypt_core::reencrypt::pieces::{Ended, PIECE, for_each_piece, for_each_piece_of};
use vmcrypt_core::reencrypt::writeback::with_writeback;
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

    // Buffered reads, O_DIRECT writes (ext4 only: tmpfs has no O_DIRECT), from the workers'
    // page-aligned buffers.
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
        // A refused write (no O_DIRECT here) stops the workers.
        let refused = AtomicBool::new(false);
        let ended = for_each_piece(len, 2, &refused, |buf, off| {
            r.read_exact_at(buf, off).expect("read");
            xts.encrypt_sectors(buf, off, unit).expect("xts");
            if w.write_all_at(buf, off).is_err() {
                refused.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .expect("pieces");
        if ended == Ended::Cancelled || refused.into_inner() {
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

    // Three ways to get a new file onto the disk while it is written, alternating so that
    // all see the same moments of a noisy disk: an fdatasync every 16 MiB; a started writeback
    // every 16 MiB (what the engine does, fsutil::start_writeback); O_DIRECT writes from 1 MiB
    // aligned pieces with a third worker to cover the waits. Each ends with an fsync.
    let steps = |fadvise: bool| {
        let _ = std::fs::remove_file(&out);
        let src = std::fs::File::open(&path).expect("open");
        let dst = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&out)
            .expect("create");
        let t = Instant::now();
        let flush = || {
            if fadvise {
                vmcrypt_core::fsutil::start_writeback(&dst).expect("fadvise");
            } else {
                dst.sync_data().expect("fdatasync");
            }
            Ok(())
        };
        with_writeback(true, flush, |written| {
            for_each_piece(len, 2, &cancel, |buf, off| {
                src.read_exact_at(buf, off).expect("read");
                xts.encrypt_sectors(buf, off, unit).expect("xts");
                dst.write_all_at(buf, off).expect("write");
                written.add(buf.len() as u64);
                Ok(())
            })
        })
        .expect("pieces");
        dst.sync_all().expect("fsync");
        t.elapsed().as_secs_f64()
    };
    let direct_new = || {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::remove_file(&out);
        let src = std::fs::File::open(&path).expect("open");
        let Ok(dst) = OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_DIRECT)
            .open(&out)
        else {
            return f64::NAN;
        };
        let t = Instant::now();
        let refused = AtomicBool::new(false);
        for_each_piece_of(1 << 20, len, 3, &refused, |buf, off| {
            src.read_exact_at(buf, off).expect("read");
            xts.encrypt_sectors(buf, off, unit).expect("xts");
            if dst.write_all_at(buf, off).is_err() {
                refused.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .expect("pieces");
        if refused.into_inner() {
            return f64::NAN;
        }
        dst.sync_all().expect("fsync");
        t.elapsed().as_secs_f64()
    };
    let (mut fsyncs, mut started, mut direct) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        fsyncs.push(steps(false));
        started.push(steps(true));
        direct.push(direct_new());
    }
    let _ = std::fs::remove_file(&out);
    let range = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::MAX, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        format!(
            "best {lo:.3} s  {:.2} GB/s, worst {hi:.3} s  {:.2} GB/s",
            gb(lo),
            gb(hi)
        )
    };

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
    println!("new file, fdatasync per 16 MiB:        {}", range(&fsyncs));
    println!(
        "new file, writeback started per 16 MiB: {}",
        range(&started)
    );
    println!("new file, O_DIRECT, 1 MiB x 3 workers:  {}", range(&direct));
}
