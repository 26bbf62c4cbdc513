//! `vmcrypt completions SHELL` and `vmcrypt man [DIR]`: made from the clap definitions, so
//! they cannot disagree with the parser. The copies shipped in dist/ are checked against
//! these by tests/dist.rs.

use std::path::Path;

use vmcrypt_core::{Error, Result};

use crate::output::Out;

/// Prints the completion script for `shell` on stdout.
pub fn completions(shell: clap_complete::Shell) {
    let mut cmd = crate::cli::command();
    clap_complete::generate(shell, &mut cmd, "vmcrypt", &mut std::io::stdout());
}

/// vmcrypt(1) on stdout, or every command's page into `dir`.
pub fn man(dir: Option<&Path>, out: &Out) -> Result<()> {
    let cmd = crate::cli::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        // As generate_to writes it: no page for the `help` verb, so none listed.
        clap_mangen::Man::new(cmd.disable_help_subcommand(true))
            .render(&mut page)
            .map_err(Error::io("render", "vmcrypt.1"))?;
        crate::output::print_line(String::from_utf8_lossy(&page).trim_end());
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    clap_mangen::generate_to(cmd, dir).map_err(Error::io("write manual pages into", dir))?;
    let mut pages: Vec<String> = std::fs::read_dir(dir)
        .map_err(Error::io("read directory", dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("vmcrypt") && n.ends_with(".1"))
        .collect();
    pages.sort();
    out.result(
        &format!("wrote {} manual pages into {}", pages.len(), dir.display()),
        serde_json::json!({"dir": dir, "pages": pages}),
    );
    Ok(())
}
