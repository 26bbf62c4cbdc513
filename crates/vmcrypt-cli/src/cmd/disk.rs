//! `encrypt`, `decrypt`, `rekey` and `resume`: each builds a job of vmcrypt-core, runs it and
//! hands back its report; `main` presents it.

use vmcrypt_core::{DiskJob, Error, Report, Result};

use super::{load_config, provider_for_new_key, tuning};
use crate::cli::{Cli, DecryptArgs, EncryptArgs, FormatArg, RekeyArgs, SectorSizeArg};
use crate::output::Out;
use crate::progress::{Bar, cancel_on_signal};

fn with_threads(job: DiskJob, threads: Option<usize>) -> DiskJob {
    match threads {
        Some(n) => job.threads(n),
        None => job,
    }
}

pub fn encrypt(cli: &Cli, a: &EncryptArgs, out: &Out) -> Result<Report> {
    // A served plaintext disk: its server does the job, online.
    if a.target.in_place
        && let Some(c) = super::online::server_of(&a.disk)?
    {
        if matches!(a.sector_size, Some(SectorSizeArg::S4096)) || a.format.is_some() {
            return Err(Error::input(format!(
                "{} is served (`vmcrypt serve --plaintext`): an online encryption keeps the 512-byte blocks its guests were given and the file as it was opened; drop --sector-size and --format, or stop the server first",
                a.disk.display()
            )));
        }
        let mut cfg = load_config(cli)?;
        let provider = provider_for_new_key(&mut cfg, a.provider.as_deref(), out)?;
        return super::online::encrypt(c, &a.disk, &provider, a.rate, out);
    }
    refuse_offline_rate(a.rate, &a.disk)?;
    let unit = a.sector_size.unwrap_or(SectorSizeArg::S4096);
    let mut job = DiskJob::encrypt(&a.disk)
        .sector_size(unit.into())
        .assume_raw(a.format == Some(FormatArg::Raw))
        .tuning(tuning());
    if let Some(o) = &a.target.output {
        job = job.output(o);
    }
    let job = with_threads(job, a.threads);
    // Refuse a bad request before a first-use provider is created for it.
    job.check()?;
    let mut cfg = load_config(cli)?;
    let provider = provider_for_new_key(&mut cfg, a.provider.as_deref(), out)?;
    let bar = Bar::new(out.quiet, out.json, "encrypting");
    job.provider(provider)
        .run(&cfg.registry(), &bar, &cancel_on_signal())
}

pub fn decrypt(cli: &Cli, a: &DecryptArgs, out: &Out) -> Result<Report> {
    // A served disk: its server does the job, online, and serves it as plaintext afterwards.
    if a.target.in_place
        && let Some(c) = super::online::server_of(&a.disk)?
    {
        return super::online::decrypt(c, &a.disk, a.rate, out);
    }
    refuse_offline_rate(a.rate, &a.disk)?;
    let cfg = load_config(cli)?;
    let mut job = DiskJob::decrypt(&a.disk).tuning(tuning());
    if let Some(o) = &a.target.output {
        job = job.output(o);
    }
    let bar = Bar::new(out.quiet, out.json, "decrypting");
    with_threads(job, a.threads).run(&cfg.registry(), &bar, &cancel_on_signal())
}

/// `--rate` is for a job the disk's server does.
fn refuse_offline_rate(rate: Option<u64>, disk: &std::path::Path) -> Result<()> {
    match rate {
        Some(_) => Err(Error::input(format!(
            "--rate is for an online --in-place job, and {} is not served (`vmcrypt serve`)",
            disk.display()
        ))),
        None => Ok(()),
    }
}

pub fn rekey(cli: &Cli, a: &RekeyArgs, out: &Out) -> Result<Report> {
    if a.depth.deep {
        if a.provider.is_some() {
            return Err(vmcrypt_core::Error::InvalidInput {
                reason: "--deep keeps the disk's KEK; change provider with --shallow --provider"
                    .into(),
            });
        }
        // A served disk: its server does the job, online.
        if let Some(report) = super::online::deep_rekey(&a.disk, a.rate, out)? {
            return Ok(report);
        }
        refuse_offline_rate(a.rate, &a.disk)?;
        let cfg = load_config(cli)?;
        let bar = Bar::new(out.quiet, out.json, "rekeying");
        let job = with_threads(DiskJob::rekey_deep(&a.disk).tuning(tuning()), a.threads);
        return job.run(&cfg.registry(), &bar, &cancel_on_signal());
    }
    if a.rate.is_some() {
        return Err(vmcrypt_core::Error::input(
            "--rate is for an online rekey --deep; a shallow rekey is metadata only",
        ));
    }
    let mut cfg = load_config(cli)?;
    let provider = provider_for_new_key(&mut cfg, a.provider.as_deref(), out)?;
    // A served disk: its server re-wraps the key (it holds the lock).
    if let Some(report) = super::online::shallow_rekey(&a.disk, &provider, out)? {
        return Ok(report);
    }
    DiskJob::rekey_shallow(&a.disk).provider(provider).run(
        &cfg.registry(),
        &vmcrypt_core::NoProgress,
        &cancel_on_signal(),
    )
}

pub fn resume(
    cli: &Cli,
    path: &std::path::Path,
    threads: Option<usize>,
    out: &Out,
) -> Result<Report> {
    let cfg = load_config(cli)?;
    let bar = Bar::new(out.quiet, out.json, "resuming");
    if path
        .extension()
        .is_some_and(|x| x.eq_ignore_ascii_case("vmx"))
    {
        // A VM's deep rekey interrupted while it ran: its served disks go on in their servers.
        let mut job = vmcrypt_core::VmJob::resume(path).tuning(tuning());
        if let Some(n) = threads {
            job = job.threads(n);
        }
        let servers = super::online::VmServers { rate: None, out };
        return job.run_served(&cfg.registry(), &bar, &cancel_on_signal(), &servers);
    }
    let job = with_threads(DiskJob::resume(path).tuning(tuning()), threads);
    job.run(&cfg.registry(), &bar, &cancel_on_signal())
}
