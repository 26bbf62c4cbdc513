//! Memory maps or `pread`/`pwrite`? Times the same XTS pass over one image file both ways, in
//! one run, so the choice in `vmcrypt_core::engine::copy` rests on a measurement
//! (docs/performance.md), and the same for the ways of getting a new file onto the disk.
//! Usage: `io_modes FILE [ROUNDS]`; the in-place passes scramble FILE (give it a scratch copy)
//! and copies are written beside it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use rayon::prelude::*;
use vmcrypt_core::engine::pieces::{Ended, PIECE, for_each_piece, for_each_piece_of};
use vmcrypt_core::engine::writeback::with_writeback;
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
    // One piece: read, encrypt, write; the write's result is the caller's to judge.
    let piece = |src: &File, dst: &File, buf: &mut [u8], off: u64| {
        src.read_exact_at(buf, off).expect("read");
        xts.encrypt_sectors(buf, off, unit).expect("xts");
        dst.write_all_at(buf, off)
    };
    // A new, empty output file (the previous round's removed).
    let fresh_out = |opts: &mut OpenOptions| {
        let _ = std::fs::remove_file(&out);
        opts.write(true).create_new(true).open(&out)
    };
    // Direct writes from `threads` workers' aligned `size`-byte pieces; false when the file
    // system refuses direct I/O (a refused write stops the workers).
    let direct_pass = |src: &File, dst: &File, size: usize, threads: usize| {
        let refused = AtomicBool::new(false);
        let ended = for_each_piece_of(size, len, threads, &refused, |buf, off| {
            if piece(src, dst, buf, off).is_err() {
                refused.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .expect("pieces");
        ended == Ended::Complete && !refused.into_inner()
    };
    // The engine's way: pieces read, encrypted and written by two workers; seconds, fsync
    // included.
    let pread_pwrite = |src: &File, dst: &File| {
        let t = Instant::now();
        for_each_piece(len, 2, &cancel, |buf, off| {
            piece(src, dst, buf, off).expect("write");
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
        let r = File::open(&path).expect("open");
        let Ok(w) = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
        else {
            return f64::NAN;
        };
        let t = Instant::now();
        if !direct_pass(&r, &w, PIECE, 2) {
            return f64::NAN;
        }
        w.sync_data().expect("fsync");
        t.elapsed().as_secs_f64()
    };
    let e = best(&mut direct_in_place);

    let mut pwrite_new = || {
        let src = File::open(&path).expect("open");
        let dst = fresh_out(&mut OpenOptions::new()).expect("create");
        pread_pwrite(&src, &dst)
    };
    let c = best(&mut pwrite_new);

    let mut mmap_new = || {
        let src = File::open(&path).expect("open");
        let dst = fresh_out(OpenOptions::new().read(true)).expect("create");
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
        let src = File::open(&path).expect("open");
        let dst = fresh_out(&mut OpenOptions::new()).expect("create");
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
                piece(&src, &dst, buf, off).expect("write");
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
        let src = File::open(&path).expect("open");
        let Ok(dst) = fresh_out(OpenOptions::new().custom_flags(libc::O_DIRECT)) else {
            return f64::NAN;
        };
        let t = Instant::now();
        if !direct_pass(&src, &dst, 1 << 20, 3) {
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
