//! The CLI behaves like a Unix tool: a reader that goes away, SIGINT, and `--json` printing
//! exactly one document whatever happens (argument errors included).

mod common;

use std::process::Stdio;

use common::*;

const MIB: u64 = 1024 * 1024;

#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", MIB);
    e.ok(&["encrypt", "d.img", "--in-place"]);
    for args in [
        vec!["inspect", "d.img"],
        vec!["--json", "inspect", "d.img"],
        vec!["provider", "list"],
        vec!["--help"],
    ] {
        let mut child = e
            .command(&args, &[])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        // The reader is gone before the command writes a byte.
        drop(child.stdout.take());
        let o = child.wait_with_output().expect("wait");
        let err = stderr(&o);
        assert!(
            matches!(o.status.code(), Some(0) | Some(141)),
            "{args:?}: {:?} {err}",
            o.status
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn sigint_stops_a_job_with_130_after_its_clean_up() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", 8 * MIB);
    std::fs::copy(e.path("d.img"), e.path("d.orig")).expect("copy");
    e.ok(&["encrypt", "d.img", "--in-place"]);
    let held = hold(&e, &["decrypt", "d.img", "--in-place"]);
    interrupt(&held);
    let o = release(held);
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    assert!(stderr(&o).contains("cancelled"), "{}", stderr(&o));
    // Nothing is lost: whatever state the job left, resume and decrypt give the original.
    e.ok(&["resume", "d.img"]);
    let info = json(&e.ok(&["--json", "inspect", "d.img"]));
    if info["encrypted"] == true {
        e.ok(&["decrypt", "d.img", "--in-place"]);
    }
    assert_eq!(
        std::fs::read(e.path("d.img")).expect("read"),
        std::fs::read(e.path("d.orig")).expect("read")
    );
}

#[test]
fn json_prints_exactly_one_document_whatever_happens() {
    let e = Env::new();
    e.ok(&["provider", "add-native", "native"]);
    e.raw_image("d.img", MIB);
    let cases: &[(&[&str], i32, &str)] = &[
        (&["--json", "encrypt", "d.img"], 2, "usage"),
        (&["--json", "bogus"], 2, "usage"),
        (
            &[
                "encrypt",
                "d.img",
                "--in-place",
                "--sector-size",
                "7",
                "--json",
            ],
            2,
            "usage",
        ),
        (
            &["--json", "decrypt", "d.img", "--in-place"],
            1,
            "invalid_input",
        ),
        (&["--json", "inspect", "missing.img"], 1, "io"),
        (&["--json", "encrypt", "d.img", "--in-place"], 0, ""),
        (&["--json", "inspect", "d.img"], 0, ""),
    ];
    for (args, code, kind) in cases {
        let o = e.run(args);
        assert_eq!(o.status.code(), Some(*code), "{args:?}: {}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(out.lines().count(), 1, "{args:?}: one document: {out}");
        let j = json(&out);
        assert_eq!(j["version"], 1, "{args:?}");
        if !kind.is_empty() {
            assert_eq!(j["error"]["kind"], *kind, "{args:?}: {j}");
            assert_eq!(j["error"]["exit_code"], *code, "{args:?}");
            assert!(
                j["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        }
        if *code == 2 {
            assert!(
                j["error"]["hint"]
                    .as_str()
                    .is_some_and(|h| h.contains("--help")),
                "{j}"
            );
        }
    }
}
