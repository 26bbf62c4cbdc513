//! A QEMU guest for the live I/O tests and benches: QEMU's x86 system emulator and a Debian
//! kernel, downloaded as Debian packages (`apt-get download`) and unpacked under
//! target/guest-kit with `dpkg-deb -x` (nothing is installed system-wide: the machines' newer
//! qemu-utils would be replaced), and a busybox initramfs that loads the virtio modules, runs
//! the test's script and powers off.
//!
//! Facts behind the choices: /dev/kvm on these machines is KVM-PVM, which stock kernels
//! cannot use, so guests run under TCG (`-accel tcg,thread=multi -cpu max`), 6-8 s from start
//! to power-off; Debian builds virtio-pci and virtio-blk as modules; vhost-user needs guest
//! memory that the backend can map (a shared memfd).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Packages of the kit, beside the kernel (whose name apt resolves from linux-image-amd64).
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "ipxe-qemu",
    "busybox-static",
    "libcapstone4",
    "libdaxctl1",
    "libfdt1",
    "libibverbs1",
    "libndctl6",
    "libnl-3-200",
    "libnl-route-3-200",
    "libpmem1",
    "librdmacm1",
    "libslirp0",
    "libvdeplug2",
];

/// The modules the guest loads, in dependency order.
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "virtio_blk",
];

/// Bumped when the kit's layout or init changes, so old kits are rebuilt.
const KIT_VERSION: &str = "1";

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk; do
    insmod /mods/$m.ko || echo "GUEST-INSMOD-FAILED $m"
done
echo "GUEST-UP"
sh /test.sh
echo "GUEST-RC=$?"
sync
poweroff -f
"#;

/// The unpacked kit.
#[derive(Debug)]
pub struct Kit {
    root: PathBuf,
    kernel: PathBuf,
    /// The initramfs without a test script (an uncompressed newc archive).
    base: PathBuf,
}

fn fail(what: &str, detail: &str) -> ! {
    panic!(
        "the guest kit could not be made: {what}.\n{detail}\nIt needs apt-get (with package lists: \
         `apt-get update`), dpkg-deb and xz or zstd, and access to a Debian mirror; it is \
         unpacked under target/guest-kit."
    )
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| fail(what, &format!("{cmd:?}: {e}")));
    if !out.status.success() {
        fail(
            what,
            &format!(
                "{cmd:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Kit {
    /// The kit, made on first use (about 85 MB of packages, once per target directory).
    pub fn get() -> &'static Kit {
        static KIT: OnceLock<Kit> = OnceLock::new();
        KIT.get_or_init(|| {
            let dir = crate::target_dir().join("guest-kit");
            std::fs::create_dir_all(&dir).expect("create target/guest-kit");
            let lock = std::fs::File::create(dir.with_extension("lock")).expect("kit lock");
            lock.lock().expect("lock target/guest-kit");
            let kit = Kit {
                root: dir.join("root"),
                kernel: dir.join("vmlinuz"),
                base: dir.join("base.cpio"),
            };
            let stamp = dir.join(".ready");
            if std::fs::read_to_string(&stamp).ok().as_deref() != Some(KIT_VERSION) {
                kit.make(&dir);
                std::fs::write(&stamp, KIT_VERSION).expect("stamp");
            }
            kit
        })
    }

    fn make(&self, dir: &Path) {
        let debs = dir.join("debs");
        std::fs::create_dir_all(&debs).expect("debs");
        let depends = |c: &mut Command| run(c.args(["depends", "linux-image-amd64"]), "apt-cache");
        let mut text = depends(&mut Command::new("apt-cache"));
        let kernel_pkg = |t: &str| {
            t.lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|p| {
                    p.starts_with("linux-image-")
                        && p.chars().nth(12).is_some_and(|c| c.is_ascii_digit())
                })
                .map(str::to_string)
        };
        if kernel_pkg(&text).is_none() {
            run(
                Command::new("apt-get").args(["update", "-qq"]),
                "apt-get update",
            );
            text = depends(&mut Command::new("apt-cache"));
        }
        let kpkg = kernel_pkg(&text).unwrap_or_else(|| fail("no kernel package", &text));
        let have_debs = std::fs::read_dir(&debs).map(|d| d.count()).unwrap_or(0) > PACKAGES.len();
        if !have_debs {
            run(
                Command::new("apt-get")
                    .arg("download")
                    .args(PACKAGES)
                    .arg(&kpkg)
                    .current_dir(&debs),
                "apt-get download",
            );
        }
        let _ = std::fs::remove_dir_all(&self.root);
        std::fs::create_dir_all(&self.root).expect("root");
        for e in std::fs::read_dir(&debs).expect("debs") {
            let p = e.expect("entry").path();
            if p.extension().is_some_and(|x| x == "deb") {
                run(
                    Command::new("dpkg-deb").arg("-x").arg(&p).arg(&self.root),
                    "dpkg-deb -x",
                );
            }
        }
        let boot = self.root.join("boot");
        let vmlinuz = std::fs::read_dir(&boot)
            .expect("boot")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
            })
            .unwrap_or_else(|| fail("no kernel in the kernel package", ""));
        std::fs::copy(&vmlinuz, &self.kernel).expect("kernel");
        // The initramfs: busybox, the modules, the init.
        let mut files: Vec<(String, Vec<u8>, u32)> = vec![
            ("bin".into(), vec![], 0o040755),
            ("dev".into(), vec![], 0o040755),
            ("proc".into(), vec![], 0o040755),
            ("sys".into(), vec![], 0o040755),
            ("tmp".into(), vec![], 0o041777),
            ("mods".into(), vec![], 0o040755),
            (
                "bin/busybox".into(),
                std::fs::read(self.root.join("bin/busybox")).expect("busybox"),
                0o100755,
            ),
            ("init".into(), INIT.as_bytes().to_vec(), 0o100755),
        ];
        let modules = self.root.join("lib/modules");
        let kver = std::fs::read_dir(&modules)
            .expect("modules")
            .next()
            .and_then(|e| e.ok())
            .unwrap_or_else(|| fail("no modules in the kernel package", ""))
            .path();
        for m in MODULES {
            let found =
                find(&kver, &format!("{m}.ko")).unwrap_or_else(|| fail("a module is missing", m));
            let name = found.to_string_lossy().into_owned();
            let bytes = if name.ends_with(".xz") {
                run_bytes(Command::new("xz").arg("-dc").arg(&found), "xz -d")
            } else if name.ends_with(".zst") {
                run_bytes(Command::new("zstd").arg("-dqc").arg(&found), "zstd -d")
            } else {
                std::fs::read(&found).expect("module")
            };
            files.push((format!("mods/{m}.ko"), bytes, 0o100644));
        }
        std::fs::write(&self.base, newc(&files, true)).expect("initramfs");
        // The emulator runs with the unpacked libraries.
        let v = run(
            &mut self.qemu_command_raw(&["--version"]),
            "qemu-system-x86_64 --version",
        );
        assert!(v.contains("QEMU emulator"), "{v}");
    }

    fn lib_path(&self) -> String {
        format!(
            "{}:{}",
            self.root.join("usr/lib/x86_64-linux-gnu").display(),
            self.root.join("lib/x86_64-linux-gnu").display()
        )
    }

    fn qemu_command_raw(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.root.join("usr/bin/qemu-system-x86_64"));
        c.env("LD_LIBRARY_PATH", self.lib_path()).args(args);
        c
    }

    /// An initramfs that runs `script` (busybox sh) after loading the virtio modules, written
    /// into `dir`.
    pub fn initrd(&self, dir: &Path, script: &str) -> PathBuf {
        self.initrd_with(dir, script, &[])
    }

    /// [`Kit::initrd`] with more executables at the root of the guest's file system (a
    /// static benchmark program, say): (name, contents).
    pub fn initrd_with(&self, dir: &Path, script: &str, extra: &[(&str, &[u8])]) -> PathBuf {
        let mut bytes = std::fs::read(&self.base).expect("base initramfs");
        let mut files = vec![("test.sh".to_string(), script.as_bytes().to_vec(), 0o100755)];
        files.extend(
            extra
                .iter()
                .map(|(n, b)| (n.to_string(), b.to_vec(), 0o100755)),
        );
        bytes.extend(newc(&files, true));
        let p = dir.join("initrd.cpio");
        std::fs::write(&p, bytes).expect("initrd");
        p
    }

    /// QEMU for a guest of `mem_mib` MiB and 2 vCPUs under TCG, its serial console in `log`,
    /// with shared guest memory (for vhost-user) and no other device: add the disks. A reboot
    /// of the guest ends QEMU, as its power-off does.
    pub fn qemu(&self, initrd: &Path, log: &Path, mem_mib: u32) -> Command {
        let mut c = self.qemu_rebooting(initrd, log, mem_mib);
        c.arg("-no-reboot");
        c
    }

    /// [`Kit::qemu`] where a reboot of the guest boots it again (same script).
    pub fn qemu_rebooting(&self, initrd: &Path, log: &Path, mem_mib: u32) -> Command {
        let mut c = self.qemu_command_raw(&[]);
        c.arg("-L")
            .arg(self.root.join("usr/share/qemu"))
            .arg("-L")
            .arg(self.root.join("usr/share/seabios"))
            .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "2"])
            .args(["-m", &format!("{mem_mib}M")])
            .args([
                "-object",
                &format!("memory-backend-memfd,id=mem,size={mem_mib}M,share=on"),
            ])
            .args(["-numa", "node,memdev=mem"])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .args(["-monitor", "none", "-serial"])
            .arg(format!("file:{}", log.display()))
            .arg("-kernel")
            .arg(&self.kernel)
            .arg("-initrd")
            .arg(initrd)
            .args(["-append", "console=ttyS0 quiet panic=-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }
}

/// Runs a guest to its power-off (at most `limit`) and returns its console log.
///
/// # Panics
/// When the guest does not power off in time, or its script did not end with status 0.
pub fn run_guest(mut qemu: Command, log: &Path, limit: Duration) -> String {
    let errlog = log.with_extension("stderr");
    qemu.stderr(std::fs::File::create(&errlog).expect("stderr log"));
    let mut child = qemu.spawn().expect("start qemu-system-x86_64");
    let until = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the guest did not power off within {limit:?}; console:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let err = std::fs::read_to_string(&errlog).unwrap_or_default();
    assert!(
        status.success(),
        "qemu exited with {status}: {err}\nconsole:\n{text}"
    );
    assert!(
        text.contains("GUEST-RC=0"),
        "the guest's script failed: {err}\nconsole:\n{text}"
    );
    text
}

/// The values the guest's script printed as `KEY=VALUE` lines.
pub fn value<'a>(console: &'a str, key: &str) -> Option<&'a str> {
    console
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
}

fn run_bytes(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| fail(what, &e.to_string()));
    if !out.status.success() {
        fail(what, &String::from_utf8_lossy(&out.stderr));
    }
    out.stdout
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()? {
        let p = e.ok()?.path();
        if p.is_dir() {
            if let Some(f) = find(&p, stem) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| {
            let n = n.to_string_lossy();
            n == stem
                || n.strip_prefix(stem)
                    .is_some_and(|rest| rest.starts_with('.'))
        }) {
            return Some(p);
        }
    }
    None
}

/// An uncompressed cpio archive in the "newc" format (the kernel's initramfs format), with
/// the trailer when `last`. Entries: path, contents, mode (type bits included).
fn newc(files: &[(String, Vec<u8>, u32)], last: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut entry = |ino: usize, name: &str, data: &[u8], mode: u32| {
        let namesize = name.len() + 1;
        let fields = [
            ino as u32,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            namesize as u32,
            0,
        ];
        let _ = write!(out, "070701");
        for f in fields {
            let _ = write!(out, "{f:08x}");
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while out.len() % 4 != 0 {
            out.push(0);
        }
        out.extend_from_slice(data);
        while out.len() % 4 != 0 {
            out.push(0);
        }
    };
    for (i, (name, data, mode)) in files.iter().enumerate() {
        entry(i + 1, name, data, *mode);
    }
    if last {
        entry(0, "TRAILER!!!", &[], 0);
    }
    out
}
