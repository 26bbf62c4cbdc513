//! What dist/ ships that is made from the command line's definition (the manual pages and the
//! shell completions) is what this build makes: the documented interface cannot drift from
//! the parser. `just dist` writes them anew after a change to the flags.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist")
}

fn files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().into_string().expect("utf8 name");
            (name, std::fs::read_to_string(e.path()).expect("read page"))
        })
        .collect()
}

const STALE: &str =
    "dist/ is out of date with the command line: run `just dist` and commit the result";

#[test]
fn the_shipped_manual_pages_are_the_ones_this_build_makes() {
    let e = Env::new();
    let out = e.path("man");
    let said = e.ok(&["man", out.to_str().expect("utf8"), "--json"]);
    let made = files(&out);
    let doc: serde_json::Value = serde_json::from_str(&said).expect("json");
    assert_eq!(doc["pages"].as_array().map(Vec::len), Some(made.len()));
    // A page for the tool and for every verb, nested ones included.
    for page in [
        "vmcrypt.1",
        "vmcrypt-encrypt.1",
        "vmcrypt-provider-add-kmip.1",
        "vmcrypt-vm-rekey.1",
        "vmcrypt-topology-check.1",
        "vmcrypt-completions.1",
    ] {
        assert!(made.contains_key(page), "no {page}: {:?}", made.keys());
    }
    assert!(made["vmcrypt.1"].starts_with(".ie"), "troff");
    assert!(made["vmcrypt.1"].contains(".TH vmcrypt 1"));
    assert!(made["vmcrypt-encrypt.1"].contains("in\\-place"));
    let shipped = files(&dist().join("man"));
    assert_eq!(
        shipped.keys().collect::<Vec<_>>(),
        made.keys().collect::<Vec<_>>(),
        "{STALE}"
    );
    for (name, text) in &made {
        assert_eq!(&shipped[name], text, "{name}: {STALE}");
    }
    // Without DIR: vmcrypt(1) on stdout, the same page.
    assert_eq!(e.ok(&["man"]).trim_end(), made["vmcrypt.1"].trim_end());
}

#[test]
fn the_shipped_completions_are_the_ones_this_build_makes() {
    let e = Env::new();
    for (shell, file) in [
        ("bash", "vmcrypt.bash"),
        ("zsh", "_vmcrypt"),
        ("fish", "vmcrypt.fish"),
    ] {
        let made = e.ok(&["completions", shell]);
        for word in ["encrypt", "rekey", "--in-place", "add-kmip"] {
            assert!(made.contains(word), "{shell} completion lacks {word}");
        }
        let path = dist().join("completions").join(file);
        let shipped = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("{}: {err}: {STALE}", path.display()));
        assert_eq!(shipped, made, "{file}: {STALE}");
    }
    assert_eq!(e.run(&["completions", "tcsh"]).status.code(), Some(2));
}

/// The bash completion is a script bash itself accepts, and completes a verb.
#[test]
fn bash_loads_the_completion_and_completes_a_verb() {
    let script = dist().join("completions/vmcrypt.bash");
    let probe = format!(
        "source {}; COMP_WORDS=(vmcrypt enc); COMP_CWORD=1; COMP_LINE='vmcrypt enc'; COMP_POINT=11; _vmcrypt vmcrypt enc vmcrypt; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        script.display()
    );
    let o = std::process::Command::new("bash")
        .args(["--norc", "-c", &probe])
        .output()
        .expect("bash");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let words = String::from_utf8_lossy(&o.stdout);
    assert!(
        words.lines().any(|w| w == "encrypt"),
        "bash completed 'enc' to {words:?}"
    );
}
