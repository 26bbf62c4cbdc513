//! `vmcrypt`: the operator's command-line tool. See docs/cli.md.
#![forbid(unsafe_code)]

mod cli;
mod cmd;
mod environment;
mod output;
mod passphrase;
mod present;
mod progress;

use std::process::ExitCode;

use clap::FromArgMatches;

use cli::{Cli, Command};
use output::Out;

fn main() -> ExitCode {
    let parsed = cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    init_logging(&cli);
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
        printed: std::cell::Cell::new(false),
    };
    if let Err(e) = environment::check() {
        out.error(&e);
        return ExitCode::from(output::exit_code(&e));
    }
    vmcrypt_core::disk::dangerous_allow_outside_folder(cli.allow_outside_folder);
    // Every command may hold keys: no core dump, no ptrace by other processes of the user.
    if let Err(e) = vmcrypt_agent::harden_process() {
        tracing::warn!("{e}");
    }
    let result = match &cli.command {
        Command::Provider(p) => cmd::provider::run(&cli, p, &out),
        Command::Encrypt(a) => cmd::disk::encrypt(&cli, a, &out).map(|r| present::report(&out, &r)),
        Command::Decrypt(a) => cmd::disk::decrypt(&cli, a, &out).map(|r| present::report(&out, &r)),
        Command::Inspect(a) => cmd::inspect::run(a, &out),
        Command::Recover(r) => cmd::recover::run(&cli, r, &out),
        Command::Rekey(a) => cmd::disk::rekey(&cli, a, &out).map(|r| present::report(&out, &r)),
        Command::Jobs { disk, follow } => cmd::online::jobs(disk, *follow, &out),
        Command::Resume { disk, threads } => {
            cmd::disk::resume(&cli, disk, *threads, &out).map(|r| present::report(&out, &r))
        }
        // Many VMs: one JSON line each, and the exit code says whether all of them succeeded.
        Command::Vm(v) if cmd::vm::is_fleet(v) => return cmd::vm::run_fleet(&cli, v, &out),
        Command::Vm(v) => {
            cmd::vm::run(&cli, v, &out).map(|r| r.iter().for_each(|r| present::report(&out, r)))
        }
        Command::Agent(a) => cmd::agent::run(&cli, a, &out),
        Command::Serve(a) => cmd::serve::run(&cli, a, &out),
        Command::Completions { shell } => {
            cmd::generate::completions(*shell);
            Ok(())
        }
        Command::Man { dir } => cmd::generate::man(dir.as_deref(), &out),
        Command::Topology(t) => match cmd::topology::run(&cli, t, &out) {
            // The report is the output either way; only the exit code tells errors apart.
            Ok(code) => return ExitCode::from(code),
            Err(e) => Err(e),
        },
    };
    // A command that is a key operation in itself is recorded once it is over.
    if let (Ok(Some(log)), Some(rec)) = (
        cmd::audit_log(&cli, None),
        cmd::command_record(&cli, &result),
    ) {
        log.record(rec);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            out.error(&e);
            ExitCode::from(output::exit_code(&e))
        }
    }
}

/// An argument error: clap's own message and exit code 2, or with `--json` anywhere on the
/// command line one JSON document (help and version print as usual).
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind as K;
    let wants_json = std::env::args_os().skip(1).any(|a| a == "--json");
    if !wants_json
        || matches!(
            e.kind(),
            K::DisplayHelp | K::DisplayVersion | K::DisplayHelpOnMissingArgumentOrSubcommand
        )
    {
        // clap prints (ignoring a closed pipe) and exits: 0 for help and version, 2 otherwise.
        e.exit();
    }
    // clap's text: the error in the first paragraph, then tips, usage and "try --help".
    let text = e.render().to_string();
    let (what, rest) = text.split_once("\n\n").unwrap_or((&text, ""));
    let one_line = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    let message = one_line(what.trim_start_matches("error:"));
    let hint = one_line(rest);
    let doc = serde_json::json!({
        "version": output::JSON_VERSION,
        "error": {"kind": "usage", "message": message, "causes": [], "exit_code": 2,
                  "hint": if hint.is_empty() { None } else { Some(hint) }},
    });
    output::print_line(&doc.to_string());
    ExitCode::from(2)
}

/// Logs go to stderr: warnings by default (so the missing-backup warning shows), `-q` errors
/// only, `-v` info, `-vv` debug; a plain level in `RUST_LOG` wins.
fn init_logging(cli: &Cli) {
    use tracing::Level;
    let level = environment::log_level().unwrap_or(if cli.quiet {
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
