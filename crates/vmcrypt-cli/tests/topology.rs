//! `vmcrypt topology check`: the report, JSON, and exit codes that can gate a change.

mod common;

use std::path::PathBuf;

use common::*;

fn example(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata/topologies")
        .join(name)
        .to_str()
        .expect("utf8")
        .to_string()
}

#[test]
fn clean_topology_exits_0_and_errors_exit_1() {
    let e = Env::new();
    let out = e.expect(&["topology", "check", &example("two-site-a-f.toml")], 0);
    // Done right but for the reference system's timing: under ordered failover a chain of
    // hung servers costs a minute each (slow-failover, a warning: exit 0).
    assert!(
        out.contains("0 error(s), 2 warning(s)"),
        "one per site: {out}"
    );
    assert!(out.contains("warning [slow-failover]"), "{out}");
    assert!(
        out.contains("kms @ site-b") && out.contains("by KMS-D"),
        "{out}"
    );
    // Warnings alone still pass.
    let out = e.expect(&["topology", "check", &example("remote-first.toml")], 0);
    assert!(out.contains("warning [remote-first]"), "{out}");
    // Errors fail, with the report on stdout.
    let out = e.expect(
        &[
            "topology",
            "check",
            &example("vcenter-encrypted-by-own-provider.toml"),
        ],
        1,
    );
    assert!(
        out.contains("error [dependency-cycle]") && out.contains("fix:"),
        "{out}"
    );
}

#[test]
fn json_is_one_document_with_counts() {
    let e = Env::new();
    let out = e.expect(
        &["--json", "topology", "check", &example("single-kms.toml")],
        1,
    );
    let j = json(&out);
    assert_eq!(j["errors"], 1);
    assert_eq!(j["findings"][0]["check"], "single-kms");
    assert_eq!(j["findings"][0]["components"][0], "prod");
    assert!(j["scenarios"].is_array());
    assert_eq!(j["scenarios"][0]["kind"], "all-up");
}

#[test]
fn malformed_or_missing_files_are_clear_errors() {
    let e = Env::new();
    std::fs::write(
        e.path("bad.toml"),
        "[[provider]]\nname = \"p\"\nservers = [\"ghost\"]\n",
    )
    .expect("write");
    let o = e.run(&["topology", "check", "bad.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("names \"ghost\", which is not a kms"),
        "{}",
        stderr(&o)
    );
    let o = e.run(&["topology", "check", "missing.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("missing.toml"), "{}", stderr(&o));
}

#[test]
fn check_draws_the_topology_to_svg_and_dot_files() {
    let e = Env::new();
    // With errors, the pictures are written all the same (and the exit code says 1).
    e.expect(
        &[
            "topology",
            "check",
            &example("kms-on-encrypted-datastore.toml"),
            "--svg",
            "t.svg",
            "--dot",
            "t.dot",
        ],
        1,
    );
    let svg = std::fs::read_to_string(e.path("t.svg")).expect("svg written");
    assert!(svg.starts_with("<?xml") && svg.contains("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("class=\"edge red\""), "the loop in red");
    let dot = std::fs::read_to_string(e.path("t.dot")).expect("dot written");
    assert!(dot.starts_with("digraph topology {") && dot.contains("color=red"));
}
