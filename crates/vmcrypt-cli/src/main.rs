//! `vmcrypt`: the operator's command-line tool. See docs/cli.md.
#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod config;
mod output;
mod passphrase;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};
use output::Out;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    vmcrypt_core::disk::dangerous_allow_outside_folder(cli.allow_outside_folder);
    // Every command may hold keys: no core dump, no ptrace by other processes of the user.
    if let Err(e) = vmcrypt_core::agent::locked::harden_process() {
        tracing::warn!("{e}");
    }
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
    };
    let result = match &cli.command {
        Command::Provider(p) => cmd::provider::run(&cli, p, &out),
        Command::Encrypt(a) => cmd::disk::encrypt(&cli, a, &out),
        Command::Decrypt(a) => cmd::disk::decrypt(&cli, a, &out),
        Command::Inspect(a) => cmd::inspect::run(a, &out),
        Command::Recover(r) => cmd::recover::run(&cli, r, &out),
        Command::Rekey(a) => cmd::disk::rekey(&cli, a, &out),
        Command::Resume { disk, threads } => cmd::disk::resume(&cli, disk, *threads, &out),
        Command::Vm(v) => cmd::vm::run(&cli, v, &out),
        Command::Agent(a) => cmd::agent::run(&cli, a, &out),
        Command::Topology(t) => match cmd::topology::run(t, &out) {
            // The report is the output either way; only the exit code tells errors apart.
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out.error(&e);
            ExitCode::from(output::exit_code(&e))
        }
    }
}

/// Logs go to stderr: warnings by default (so the missing-backup warning shows), `-q` errors
/// only, `-v` info, `-vv` debug; a plain level in `RUST_LOG` wins.
fn init_logging(cli: &Cli) {
    use tracing::Level;
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.trim().parse::<Level>().ok());
    let level = from_env.unwrap_or(if cli.quiet {
        Level::ERROR
    } else {
        match cli.verbose {
            0 => Level::WARN,
            1 => Level::INFO,
            _ => Level::DEBUG,
        }
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .init();
}
