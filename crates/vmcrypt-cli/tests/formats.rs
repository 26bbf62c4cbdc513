//! Files as QEMU makes them: descriptors from `qemu-img convert` and after a qemu-io write (a
//! NUL-padded 512-byte block), container formats that must not be taken for raw images, the
//! sparse-VMDK hint carried out as printed, and descriptors too close to the reader's cap.

mod common;

use std::process::Command;

use common::*;

const MIB: u64 = 1024 * 1024;

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

/// Writes through QEMU's VMDK driver (which rewrites the descriptor's CID), as a guest would.
fn vmdk_write(vmdk: &std::path::Path, command: &str) {
    let o = Command::new("qemu-io")
        .args(["-f", "vmdk", "-c", command, vmdk.to_str().expect("utf8")])
        .output()
        .expect("qemu-io is needed by this test (apt-get install qemu-utils)");
    assert!(o.status.success(), "qemu-io {command}: {}", stderr(&o));
}

#[test]
fn descriptors_written_by_qemu_are_read_and_keep_their_padding() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    let raw = e.raw_image("src.img", 2 * MIB);
    let vmdk = e.path("conv.vmdk");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        raw.to_str().expect("utf8"),
        vmdk.to_str().expect("utf8"),
    ]);
    // qemu-io writes through the VMDK driver, which rewrites the descriptor (a new CID) as a
    // NUL-padded 512-byte block.
    vmdk_write(&vmdk, "write -P 0x5c 4096 8192");
    let desc = std::fs::read(&vmdk).expect("descriptor");
    assert_eq!(desc.len(), 512, "qemu pads its descriptor to one block");
    assert!(desc.ends_with(&[0, 0, 0, 0]), "padded with NULs");
    let orig = e.path("orig.vmdk");
    qemu_img(&[
        "convert",
        "-f",
        "vmdk",
        "-O",
        "vmdk",
        "-o",
        "subformat=monolithicFlat",
        vmdk.to_str().expect("utf8"),
        orig.to_str().expect("utf8"),
    ]);
    let text = |b: &[u8]| {
        String::from_utf8(b.iter().copied().filter(|c| *c != 0).collect()).expect("text")
    };
    let padded = |b: &[u8]| b.len().is_multiple_of(512) && b.ends_with(&[0]);
    e.ok(&["encrypt", "conv.vmdk", "--in-place"]);
    let enc = std::fs::read(&vmdk).expect("descriptor");
    assert!(
        padded(&enc) && enc.len() > 512,
        "grown to whole padded blocks: {}",
        enc.len()
    );
    // QEMU still parses the descriptor vmcrypt rewrote.
    qemu_img(&["info", "-f", "vmdk", vmdk.to_str().expect("utf8")]);
    e.ok(&["decrypt", "conv.vmdk", "--in-place"]);
    let back = std::fs::read(&vmdk).expect("descriptor");
    assert!(padded(&back), "the padding is kept");
    assert_eq!(
        text(&back),
        text(&desc),
        "the descriptor is QEMU's again, line for line"
    );
    assert_identical(&orig, &vmdk);
}

#[test]
fn the_conversion_hint_for_other_vmdks_makes_a_disk_vmcrypt_accepts() {
    for sub in [
        "monolithicSparse",
        "twoGbMaxExtentSparse",
        "twoGbMaxExtentFlat",
        "streamOptimized",
    ] {
        let e = Env::new();
        e.ok(&["provider", "add-native", "native"]);
        let src = e.path("src.vmdk");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "vmdk",
            "-o",
            &format!("subformat={sub}"),
            src.to_str().expect("utf8"),
            "4M",
        ]);
        if sub != "streamOptimized" {
            vmdk_write(&src, "write -P 0x42 0 65536");
        }
        let before = snapshot(e.dir.path());
        let o = e.run(&["encrypt", "src.vmdk", "--in-place"]);
        assert_eq!(code(&o), Some(1), "{sub}");
        let err = stderr(&o);
        assert!(!err.contains("sector-size"), "{err}");
        assert_eq!(snapshot(e.dir.path()), before, "{sub}");
        // Carry out the command the hint prints, as an operator would paste it.
        let cmd = err
            .split('`')
            .find(|c| c.starts_with("qemu-img convert"))
            .unwrap_or_else(|| {
                panic!(
                    "{sub}: a qemu-img command in the hint: {err}\nthe source: {:?}",
                    String::from_utf8_lossy(
                        &std::fs::read(&src).unwrap_or_default()[..512.min(
                            std::fs::metadata(&src)
                                .map(|m| m.len() as usize)
                                .unwrap_or(0)
                        )]
                    )
                )
            });
        let words: Vec<&str> = cmd.split_whitespace().collect();
        let o = Command::new(words[0])
            .args(&words[1..])
            .current_dir(e.dir.path())
            .output()
            .expect("qemu-img");
        assert!(o.status.success(), "{cmd}: {}", stderr(&o));
        let flat = words.last().expect("output name").to_string();
        let o = e.run(&["encrypt", &flat, "--in-place"]);
        assert_eq!(
            code(&o),
            Some(0),
            "{sub}: {}\ndescriptor as qemu-img wrote it: {:?}",
            stderr(&o),
            String::from_utf8_lossy(&std::fs::read(e.path(&flat)).unwrap_or_default())
        );
        e.ok(&["decrypt", &flat, "--output", "back.vmdk"]);
        assert_identical(&src, &e.path("back.vmdk"));
    }
}

#[test]
fn container_formats_are_refused_by_name_and_raw_can_be_insisted_on() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    // (qemu-img format, file, the name vmcrypt must give, extra options): a fixed-size VHD is
    // raw data with a footer at the end.
    let luks = [
        "--object",
        "secret,id=s0,data=not-a-real-secret",
        "-o",
        "key-secret=s0,iter-time=10",
    ];
    let made: Vec<(&str, &str)> = [
        ("qcow2", "d.qcow2", "qcow2", &[][..]),
        ("vpc", "d.vhd", "VHD", &[]),
        ("vpc", "fixed.vhd", "VHD", &["-o", "subformat=fixed"]),
        ("vhdx", "d.vhdx", "VHDX", &[]),
        ("vdi", "d.vdi", "VDI", &[]),
        ("qed", "d.qed", "QED", &[]),
        ("luks", "d.luks", "LUKS", &luks),
    ]
    .into_iter()
    .map(|(fmt, name, shown, extra)| {
        let path = e.path(name);
        let args = [
            &["create", "-q", "-f", fmt][..],
            extra,
            &[path.to_str().expect("utf8"), "4M"],
        ]
        .concat();
        qemu_img(&args);
        (name, shown)
    })
    .collect();
    let before = snapshot(e.dir.path());
    for (name, shown) in &made {
        let o = e.run(&["encrypt", name, "--in-place"]);
        let err = stderr(&o);
        assert_eq!(code(&o), Some(1), "{name}: {err}");
        assert!(err.contains(shown), "{name} is named as {shown}: {err}");
        assert!(!err.contains("sector-size"), "{err}");
        if *shown != "LUKS" {
            assert!(err.contains("qemu-img convert -O raw"), "{err}");
        }
    }
    assert_eq!(snapshot(e.dir.path()), before, "nothing changed");
    // A raw image that merely starts with a qcow2 magic.
    let raw = e.raw_image("odd.img", MIB);
    let mut bytes = std::fs::read(&raw).expect("read");
    bytes[..4].copy_from_slice(b"QFI\xfb");
    std::fs::write(&raw, &bytes).expect("write");
    e.expect(&["encrypt", "odd.img", "--in-place"], 1);
    e.ok(&["encrypt", "odd.img", "--in-place", "--format", "raw"]);
    e.ok(&["decrypt", "odd.img", "--output", "odd.back"]);
    assert_eq!(std::fs::read(e.path("odd.back")).expect("read"), bytes);
}

#[test]
fn a_descriptor_near_the_size_cap_is_refused_before_the_job() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    let vmdk = e.vmdk("big.vmdk", MIB);
    let mut text = std::fs::read_to_string(&vmdk).expect("descriptor");
    let pad = 1024 * 1024 - text.len() - 4096;
    text.push_str(&format!("# {}\n", "x".repeat(pad)));
    std::fs::write(&vmdk, &text).expect("write");
    let before = snapshot(e.dir.path());
    let o = e.run(&["encrypt", "big.vmdk", "--in-place"]);
    assert_eq!(code(&o), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("limit"), "{}", stderr(&o));
    assert_eq!(
        snapshot(e.dir.path()),
        before,
        "refused before anything changed"
    );
    // Still readable by vmcrypt, as it was.
    e.ok(&["inspect", "big.vmdk"]);
}

#[test]
fn a_descriptor_with_leftover_bytes_after_its_nul_is_read_as_qemu_reads_it() {
    // QEMU writes its CID without leading zeros, in place: a shorter CID leaves the old
    // text's last byte behind the NUL, as seen after a qemu-io write:
    // `ddb.toolsVersion = "2147483647"\n\0\n\0\0...`.
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    let vmdk = e.vmdk("r.vmdk", MIB);
    let flat = e.path("r-flat.vmdk");
    let orig = std::fs::read(&flat).expect("flat");
    let text = std::fs::read(&vmdk).expect("descriptor");
    let mut block = text.clone();
    block.extend_from_slice(b"\0\n");
    block.resize(512, 0);
    std::fs::write(&vmdk, &block).expect("write");
    // QEMU reads it (up to the NUL).
    qemu_img(&["info", "-f", "vmdk", vmdk.to_str().expect("utf8")]);
    e.ok(&["encrypt", "r.vmdk", "--in-place"]);
    qemu_img(&["info", "-f", "vmdk", vmdk.to_str().expect("utf8")]);
    e.ok(&["decrypt", "r.vmdk", "--in-place"]);
    assert_eq!(std::fs::read(&flat).expect("flat"), orig);
    let back = std::fs::read(&vmdk).expect("descriptor");
    let end = back.iter().position(|b| *b == 0).expect("padded");
    assert_eq!(&back[..end], &text[..], "the text is QEMU's, line for line");
    assert!(back[end..].iter().all(|b| *b == 0) && back.len().is_multiple_of(512));
}

/// The extent line of `vmdk`: its offset in 512-byte sectors.
fn extent_offset(vmdk: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(vmdk).expect("read descriptor");
    let line = text
        .lines()
        .find(|l| l.contains(" FLAT "))
        .expect("an extent line");
    line.rsplit(' ')
        .next()
        .expect("offset")
        .parse()
        .expect("a number")
}

#[test]
fn the_extent_line_follows_the_payload_through_in_place_jobs() {
    // An in-place encryption moves the payload up in the flat file; the descriptor's extent
    // line must say where it is, or a tool copying the VMDK by its extent (qemu-img convert, a
    // backup) copies the wrong bytes. An edited offset is refused; decrypting moves it back.
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    let vmdk = e.vmdk("v.vmdk", 8 * MIB);
    let flat = e.path("v-flat.vmdk");
    let original = std::fs::read(&flat).expect("read");
    // A plain VMDK's extent must start at 0.
    let plain = std::fs::read_to_string(&vmdk).expect("read");
    std::fs::write(
        &vmdk,
        plain.replace("\"v-flat.vmdk\" 0", "\"v-flat.vmdk\" 8"),
    )
    .expect("edit");
    let o = e.run(&["encrypt", "v.vmdk", "--in-place"]);
    assert!(
        code(&o) != Some(0) && stderr(&o).contains("offset 8"),
        "a plain extent at offset 8: {}",
        stderr(&o)
    );
    std::fs::write(&vmdk, &plain).expect("restore");
    assert!(std::fs::read(&flat).expect("read") == original);
    e.ok(&["encrypt", "v.vmdk", "--in-place"]);
    let at = std::fs::metadata(&flat).expect("stat").len() - 8 * MIB;
    assert!(at > 0, "the payload moved");
    assert_eq!(extent_offset(&vmdk) * 512, at);
    let copy = e.path("copy.raw");
    qemu_img(&[
        "convert",
        "-U",
        "-f",
        "vmdk",
        "-O",
        "raw",
        vmdk.to_str().expect("utf8"),
        copy.to_str().expect("utf8"),
    ]);
    let on_disk = std::fs::read(&flat).expect("read");
    assert!(
        std::fs::read(&copy).expect("read") == on_disk[at as usize..],
        "qemu-img convert copies the payload where it is"
    );
    let text = std::fs::read_to_string(&vmdk).expect("read");
    let good = format!("\"v-flat.vmdk\" {}", at / 512);
    std::fs::write(&vmdk, text.replace(&good, "\"v-flat.vmdk\" 8")).expect("edit");
    let o = e.run(&["decrypt", "v.vmdk", "--in-place"]);
    assert_eq!(code(&o), Some(4), "an edited extent offset: {}", stderr(&o));
    std::fs::write(&vmdk, &text).expect("restore");
    e.ok(&["decrypt", "v.vmdk", "--in-place"]);
    assert_eq!(extent_offset(&vmdk), 0);
    assert!(std::fs::read(&flat).expect("read") == original);
}
