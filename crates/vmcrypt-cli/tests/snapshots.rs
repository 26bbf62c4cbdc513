//! The documented interface, pinned: `--help`, usage errors, and the text and JSON output of
//! an operator's session (tests/cmd/), so that a change to what vmcrypt prints shows up in
//! review instead of in an operator's script. The manual pages and completions are pinned by
//! tests/dist.rs. After a deliberate change: `TRYCMD=overwrite cargo test -p vmcrypt-cli
//! --test snapshots`, then put the wildcards back where ids and timings are.

#[test]
fn the_command_lines_output_matches_its_snapshots() {
    trycmd::TestCases::new()
        .register_bin(
            "vmcrypt",
            std::path::Path::new(env!("CARGO_BIN_EXE_vmcrypt")),
        )
        .env("RUST_LOG", "warn")
        .case("tests/cmd/*.toml")
        .case("tests/cmd/*.md");
}
