//! Who holds a lock, for the "in use" message.
//!
//! OFD locks have no owning process (`F_OFD_GETLK` reports pid -1), but Linux lists every lock
//! on a descriptor in `/proc/PID/fdinfo/FD` as `lock:\t1: OFDLCK ADVISORY WRITE -1
//! MAJ:MIN:INODE START END`. Scanning those finds the process; for a vmcrypt job its command
//! line is shown (vmcrypt never takes a secret on its command line), for any other program only
//! its name: another program's arguments may hold secrets (`-object secret,data=...`).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

/// Bytes read of one `/proc` file at most.
const PROC_READ_CAP: u64 = 64 * 1024;

/// A short description of whoever else holds a lock on `file`.
pub(super) fn describe(file: &File) -> String {
    let unknown = || {
        // A vmcrypt job is non-dumpable, so even a job of the same user hides its /proc/PID/fd
        // from users without CAP_SYS_PTRACE; so do other users' processes.
        "another program (e.g. QEMU) or another vmcrypt job, whose process this user cannot see"
            .into()
    };
    let Ok(meta) = file.metadata() else {
        return unknown();
    };
    let dev = meta.dev();
    let needle = format!(
        "{:02x}:{:02x}:{}",
        rustix::fs::major(dev),
        rustix::fs::minor(dev),
        meta.ino()
    );
    match find_pid(&needle) {
        Some(pid) => describe_pid(pid),
        None => unknown(),
    }
}

fn read_capped(path: &std::path::Path) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    File::open(path)
        .ok()?
        .take(PROC_READ_CAP)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// The first other process with a descriptor that carries a lock on the file `needle` names.
fn find_pid(needle: &str) -> Option<u32> {
    let me = std::process::id();
    let procs = std::fs::read_dir("/proc").ok()?;
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Some(info) = read_capped(&fd.path()) else {
                continue;
            };
            let text = String::from_utf8_lossy(&info);
            let locks = text
                .lines()
                .filter_map(|l| l.strip_prefix("lock:"))
                .any(|l| l.split_whitespace().nth(5) == Some(needle));
            if locks {
                return Some(pid);
            }
        }
    }
    None
}

fn describe_pid(pid: u32) -> String {
    let base = std::path::PathBuf::from(format!("/proc/{pid}"));
    let args: Vec<String> = read_capped(&base.join("cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // The program's name: its argv[0] without the folder (comm is cut at 15 bytes:
    // "qemu-storage-da"), else comm.
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| {
            read_capped(&base.join("comm")).map(|c| String::from_utf8_lossy(&c).trim().to_string())
        })
        .unwrap_or_default();
    if name == "vmcrypt" {
        let mut line = args.join(" ");
        if line.chars().count() > 300 {
            line = line.chars().take(300).collect::<String>() + " ...";
        }
        format!("another vmcrypt job (pid {pid}: {line})")
    } else if name.is_empty() {
        format!("another program (pid {pid})")
    } else {
        format!("another program ({name}, pid {pid})")
    }
}
