//! Command-line grammar (clap derive). One variant per verb; each verb's code is in `cmd/`.

use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

/// The command line as parsed, shown by `--help` and written into the manual pages: the
/// derived definition, with the environment variables (from [`crate::environment::VARS`])
/// in the long help, so that `vmcrypt --help` and vmcrypt(1) list them.
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let mut long = cmd
        .get_after_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    long.push_str("\n\nEnvironment (checked before any command runs; docs/cli.md):");
    for v in crate::environment::VARS {
        long.push_str(&format!("\n  {}\n      {}", v.name, v.doc));
    }
    cmd.after_long_help(long)
}

/// vmcrypt: encrypt VM disks with per-disk keys wrapped by a key provider.
#[derive(Debug, Parser)]
#[command(
    name = "vmcrypt",
    version,
    about,
    after_help = "Examples:\n  vmcrypt encrypt disk.vmdk --output disk-enc.vmdk\n  vmcrypt inspect disk-enc.vmdk --json\n  vmcrypt decrypt disk-enc.vmdk --in-place\n\nExit codes: 0 ok, 1 failed, 2 usage, 3 key service unreachable (safe to retry), 4 unwrap or integrity failure, 5 disk in use (another job or program, e.g. QEMU, holds it), 130 interrupted."
)]
pub struct Cli {
    /// Configuration file (default: $VMCRYPT_CONFIG, else /etc/vmcrypt/config.toml for root,
    /// else $XDG_CONFIG_HOME/vmcrypt/config.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON document on stdout (never key material, except `recover`).
    #[arg(long, global = true)]
    pub json: bool,
    /// Only print errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Route every key operation through the host agent on this socket (`vmcrypt agent
    /// serve`): keys it holds work even when every key server is down.
    #[arg(long, global = true, value_name = "SOCKET", env = "VMCRYPT_AGENT")]
    pub agent: Option<PathBuf>,
    /// Record every key operation (create, fetch, rekey, backup, restore, reveal-key, forget)
    /// as a JSON line in this file, or `journald` (default: the config's `audit_log`).
    #[arg(
        long,
        global = true,
        value_name = "FILE|journald",
        env = "VMCRYPT_AUDIT_LOG"
    )]
    pub audit_log: Option<String>,
    /// Allow a VMDK's flat extent, or a VMX's disks, to resolve (symlink, absolute path)
    /// outside the folder of the file that names them; refused by default, since a hostile
    /// descriptor could otherwise point a job at any file.
    #[arg(long, global = true)]
    pub allow_outside_folder: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage key providers.
    #[command(subcommand)]
    Provider(ProviderCmd),
    /// Encrypt a disk (raw image or VMDK descriptor) with a new key.
    #[command(
        after_help = "Examples:\n  vmcrypt encrypt disk.img --output disk.img.enc     (metadata in disk.img.enc.vmcrypt)\n  vmcrypt encrypt disk.vmdk --in-place --sector-size 512"
    )]
    Encrypt(EncryptArgs),
    /// Decrypt an encrypted disk.
    #[command(
        after_help = "Examples:\n  vmcrypt decrypt disk.img.enc --output disk.img\n  vmcrypt decrypt disk.vmdk --in-place"
    )]
    Decrypt(DecryptArgs),
    /// Show a disk's encryption metadata (no key material).
    Inspect(InspectArgs),
    /// Rotate a disk's keys: --shallow re-wraps its DEK under a new KEK (metadata only);
    /// --deep re-encrypts every sector under a new DEK, in place and crash-safely. A disk
    /// that `vmcrypt serve` holds is rekeyed --deep online, by the server, while guests run.
    #[command(
        after_help = "Examples:\n  vmcrypt rekey disk.img --shallow --provider kms-b\n  vmcrypt rekey disk.img --deep\n  vmcrypt rekey served.img --deep --rate 200     (online: the server does it, at most 200 MB/s)\n\nOnline, Ctrl-C stops following the job and leaves it running; `vmcrypt jobs DISK` shows it."
    )]
    Rekey(RekeyArgs),
    /// The online job on a served disk (a deep rekey the server is carrying out), if any.
    #[command(
        after_help = "Examples:\n  vmcrypt jobs disk.img\n  vmcrypt jobs disk.img --follow      (a progress bar until it is done)"
    )]
    Jobs {
        /// Raw image or VMDK descriptor.
        disk: PathBuf,
        /// Follow the job until it is done (Ctrl-C stops following; the job goes on).
        #[arg(long)]
        follow: bool,
    },
    /// Finish an in-place job (encrypt, decrypt, deep rekey; of a disk or, given a .vmx, of a
    /// VM) that a crash, kill or Ctrl-C interrupted. Harmless when nothing is under way.
    Resume {
        /// Raw image, VMDK descriptor, or .vmx.
        disk: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Whole VMs: the .vmx and every disk it references.
    #[command(subcommand)]
    Vm(VmCmd),
    /// Break-glass access to an encrypted disk without vmcrypt.
    #[command(subcommand)]
    Recover(RecoverCmd),
    /// The host agent: a long-running key cache that keeps VMs usable through a KMS outage
    /// (docs/agent.md).
    #[command(subcommand)]
    Agent(AgentCmd),
    /// Serve an encrypted disk live: over NBD (QEMU, qemu-img, qemu-io) and/or as a
    /// vhost-user-blk device that QEMU guests boot from, without decrypting it
    /// (docs/live-io.md). The disk is locked while served.
    #[command(
        after_help = "Examples:\n  vmcrypt serve disk.img --nbd /run/vmcrypt/disk.sock &\n  qemu-img compare 'nbd+unix:///?socket=/run/vmcrypt/disk.sock' plain.img\n  vmcrypt serve disk.vmdk --nbd 10809 --read-only      (TCP on 127.0.0.1:10809)\n  vmcrypt serve disk.img --vhost-user /run/vmcrypt/disk.vhost --queues 2 &\n  qemu-system-x86_64 ... -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \\\n      -chardev socket,id=c0,path=/run/vmcrypt/disk.vhost -device vhost-user-blk-pci,chardev=c0,num-queues=2\n\nSIGTERM or Ctrl-C stops the server cleanly: requests under way are answered, the disk is flushed and unlocked, exit 0.\nTCP has no TLS and no authentication yet: anyone who can reach the port reads and writes the disk in plaintext. Prefer a Unix socket (created 0600)."
    )]
    Serve(ServeArgs),
    /// The KMS topology doctor: single points of failure, bad orders, dependency loops and
    /// failover timing of a described topology (docs/topology.md).
    #[command(subcommand)]
    Topology(TopologyCmd),
    /// Shell completions (bash, zsh, fish, elvish, powershell) on stdout, made from this
    /// command line's own definition.
    #[command(
        after_help = "Examples:\n  vmcrypt completions bash > /usr/share/bash-completion/completions/vmcrypt\n  vmcrypt completions zsh > /usr/share/zsh/vendor-completions/_vmcrypt\n  vmcrypt completions fish > /usr/share/fish/vendor_completions.d/vmcrypt.fish"
    )]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Manual pages (troff): vmcrypt(1) on stdout, or given DIR, a page for every command
    /// written there (vmcrypt.1, vmcrypt-encrypt.1, vmcrypt-provider-add-kmip.1, ...).
    #[command(
        after_help = "Examples:\n  vmcrypt man | man -l -\n  vmcrypt man /usr/share/man/man1"
    )]
    Man {
        /// Where to write every page (created if missing; existing pages are replaced).
        dir: Option<PathBuf>,
    },
}

/// `serve DISK --nbd ... | --vhost-user ...`, or `serve DISK --status`
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("protocol").multiple(true).args(["nbd", "vhost_user"])))]
pub struct ServeArgs {
    /// Encrypted disk (or, with --plaintext, a plaintext one): raw image or VMDK descriptor.
    pub disk: PathBuf,
    /// Where to serve NBD: a Unix socket path (created mode 0600), PORT (TCP on 127.0.0.1),
    /// or HOST:PORT. TCP has no TLS: see below.
    #[arg(long, value_name = "SOCKET|PORT|HOST:PORT",
          required_unless_present_any = ["vhost_user", "status"])]
    pub nbd: Option<String>,
    /// Where to serve vhost-user-blk: a Unix socket path (created mode 0600) for QEMU's
    /// `-chardev socket` (libvirt `<disk type='vhostuser'>`). Frontends may disconnect and
    /// reconnect; the disk stays open.
    #[arg(long, value_name = "SOCKET")]
    pub vhost_user: Option<PathBuf>,
    /// vhost-user: virtqueues offered, each served by a worker thread of its own
    /// (default: the number of cores, at most 16).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=16))]
    pub queues: Option<u16>,
    /// vhost-user: descriptors per virtqueue (a power of two).
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u16).range(2..=1024))]
    pub queue_size: u16,
    /// vhost-user: helper threads that move one half of each large request (256 KiB and
    /// more) while the queue's worker moves the other, so one request in flight uses two
    /// cores; 0 moves everything on the queue's workers (default: one per queue).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(0..=64))]
    pub io_threads: Option<u16>,
    /// vhost-user: the serial the guest reads (GET_ID, up to 20 bytes; default: the disk's
    /// file name).
    #[arg(long)]
    pub serial: Option<String>,
    /// NBD export name (default: the disk's file name); clients asking for the default
    /// export ("") get it too.
    #[arg(long)]
    pub name: Option<String>,
    /// Serve a plaintext disk (one vmcrypt has not encrypted) as it is, under the same lock:
    /// no key is needed, and no other program may write it meanwhile.
    #[arg(long)]
    pub plaintext: bool,
    /// Refuse writes, trims and zeroing.
    #[arg(long)]
    pub read_only: bool,
    /// Seconds an NBD client may stall in the middle of a request before it is cut off.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stall_timeout: u64,
    /// Serve nothing: show the server that holds DISK, if any, and its online job (as
    /// `vmcrypt jobs DISK`).
    #[arg(long, conflicts_with_all = ["protocol", "plaintext", "read_only", "queues", "io_threads", "serial", "name", "metrics"])]
    pub status: bool,
    /// Export I/O counters and the online job's progress for Prometheus on
    /// http://ADDR/metrics: PORT (127.0.0.1) or HOST:PORT.
    #[arg(long, value_name = "PORT|HOST:PORT")]
    pub metrics: Option<String>,
}

/// `topology ...`
#[derive(Debug, Subcommand)]
pub enum TopologyCmd {
    /// Check a topology file. Exit 0 when it has no error (warnings allowed), 1 with errors.
    #[command(
        after_help = "Example:\n  vmcrypt topology check site-a-b.toml\n  vmcrypt topology check site-a-b.toml --json | jq '.findings[].check'\n  vmcrypt topology check topology.toml --live     (also ask this host's configured servers now)\n  vmcrypt topology check topology.toml --svg topology.svg --dot topology.dot"
    )]
    Check {
        /// Topology description (TOML; schema in docs/topology.md).
        file: PathBuf,
        /// Also measure the servers of each provider this host's configuration has (as
        /// `provider check --replication`: reachable, TLS trust, latency, replication lag,
        /// with a probe key created and destroyed) and flag those that are down or lag.
        #[arg(long)]
        live: bool,
        /// Also write the topology as a Graphviz DOT graph to this file (sites as clusters,
        /// loops and single points of failure in red, failover orders numbered).
        #[arg(long, value_name = "OUT.dot")]
        dot: Option<PathBuf>,
        /// Also draw the topology as an SVG picture (laid out by vmcrypt) to this file.
        #[arg(long, value_name = "OUT.svg")]
        svg: Option<PathBuf>,
    },
    /// Write a topology file to start from, on standard output.
    #[command(
        after_help = "Example:\n  vmcrypt topology init --from-config > topology.toml\n  $EDITOR topology.toml     (sites, hosts, datastores, power: what the config cannot know)\n  vmcrypt topology check topology.toml"
    )]
    Init {
        /// Fill in the providers, their servers and orders, timeouts, hedging and demotion
        /// from this host's vmcrypt configuration (else: a commented skeleton).
        #[arg(long)]
        from_config: bool,
    },
}

/// `agent ...`
#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Serve key requests on a Unix socket (mode 0600; only this user and root are served),
    /// holding every key fetched or created in locked memory. Stops cleanly on SIGTERM or
    /// Ctrl-C, zeroing the cache.
    #[command(
        after_help = "Example:\n  vmcrypt agent serve --socket /run/vmcrypt/agent.sock &\n  vmcrypt --agent /run/vmcrypt/agent.sock vm decrypt /vms/web01/web01.vmx --in-place"
    )]
    Serve {
        /// Socket path.
        #[arg(long, value_name = "PATH")]
        socket: PathBuf,
        /// How many KEKs the cache holds (locked memory: 32 bytes each).
        #[arg(long, default_value_t = vmcrypt_agent::cache::DEFAULT_CAPACITY)]
        cache_size: usize,
        /// Key requests under way at one provider at a time; the rest wait in the agent (a
        /// boot storm must not drown the key servers).
        #[arg(long, default_value_t = vmcrypt_agent::limit::DEFAULT_IN_FLIGHT as u64,
              value_parser = clap::value_parser!(u64).range(1..=4096))]
        max_in_flight: u64,
        /// Export the cache's and the key servers' counters for Prometheus on
        /// http://ADDR/metrics: PORT (127.0.0.1) or HOST:PORT. No key ids, no keys.
        #[arg(long, value_name = "PORT|HOST:PORT")]
        metrics: Option<String>,
    },
    /// Show what a running agent holds (provider and key id of each cached key; never keys).
    Status {
        /// Socket path (default: --agent).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Make a running agent forget cached keys (zeroed at once), e.g. after revoking a KEK on
    /// purpose: without this the agent would go on serving it until it restarts.
    #[command(
        after_help = "Examples:\n  vmcrypt --agent /run/vmcrypt/agent.sock agent forget --provider kms --key-id 42\n  vmcrypt --agent /run/vmcrypt/agent.sock agent forget --provider old-kms\n  vmcrypt --agent /run/vmcrypt/agent.sock agent forget --all"
    )]
    Forget {
        /// Socket path (default: --agent).
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
        /// Every key of this provider (with --key-id: that key only).
        #[arg(long, required_unless_present = "all")]
        provider: Option<String>,
        /// One key of --provider.
        #[arg(long, requires = "provider")]
        key_id: Option<String>,
        /// Every cached key.
        #[arg(long, conflicts_with_all = ["provider", "key_id"])]
        all: bool,
    },
}

/// `provider ...`
#[derive(Debug, Subcommand)]
pub enum ProviderCmd {
    /// Add the embedded key provider (creates its keystore, or registers an existing one).
    AddNative {
        /// Provider name.
        name: String,
        /// Keystore file (default: beside the config file).
        #[arg(long, value_name = "FILE")]
        keystore: Option<PathBuf>,
    },
    /// Add a KMIP key provider: a cluster of replicating servers tried in the given order.
    #[command(
        after_help = "Example (site A lists its own servers first):\n  vmcrypt provider add-kmip site-a --server kms-a:5696 --server kms-b:5696 --server kms-d:5696 \\\n      --ca kms-ca.pem --cert client.pem --key client.key --timeout 60"
    )]
    AddKmip(AddKmipArgs),
    /// Check a provider: for KMIP, each server's reachability, TLS trust, KMIP version and
    /// latency; with --replication, how long a new key takes to reach every server.
    Check {
        /// Provider name.
        name: String,
        /// Create a probe key, time its arrival on each server, then destroy it.
        #[arg(long)]
        replication: bool,
    },
    /// List the configured providers.
    List,
    /// Make a provider the default for new keys.
    Default {
        /// Provider name.
        name: String,
    },
    /// Remove a provider from the configuration (its keystore file is kept).
    Remove {
        /// Provider name.
        name: String,
    },
    /// Export a native provider's key under a passphrase.
    #[command(
        after_help = "The passphrase comes from --passphrase-file, else $VMCRYPT_PASSPHRASE, else a terminal prompt; at least 12 characters (--allow-short-passphrase to accept fewer)."
    )]
    Backup {
        /// Provider name.
        name: String,
        /// Backup file to create.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[command(flatten)]
        pass: PassphraseArgs,
        /// Accept a passphrase shorter than 12 characters. The backup can be attacked offline
        /// by whoever copies it; a short passphrase is guessed.
        #[arg(long)]
        allow_short_passphrase: bool,
    },
    /// Import a native provider from a backup.
    #[command(
        after_help = "The passphrase comes from --passphrase-file, else $VMCRYPT_PASSPHRASE, else a terminal prompt.\nDisks name their provider in their keySafes: restore under the name the backup records (the default), or they will not find it."
    )]
    Restore {
        /// Backup file.
        file: PathBuf,
        /// Name of the restored provider (default: the name the backup records; a backup
        /// made before vmcrypt recorded it needs --name).
        #[arg(long)]
        name: Option<String>,
        /// Keystore file to create (default: beside the config file).
        #[arg(long, value_name = "FILE")]
        keystore: Option<PathBuf>,
        #[command(flatten)]
        pass: PassphraseArgs,
    },
}

/// `provider add-kmip`
#[derive(Debug, Args)]
pub struct AddKmipArgs {
    /// Provider (cluster) name; it is recorded in every keySafe.
    pub name: String,
    /// A server as HOST:PORT; repeat in the order to try them (local site first).
    #[arg(long, required = true, value_name = "HOST:PORT")]
    pub server: Vec<String>,
    /// CA certificate(s) that sign the servers' certificates (PEM).
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// Client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Client private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Name the server certificates must carry (default: each server's host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Seconds a server may take to answer before the next one is tried.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
    /// Key fetches (Get) only: when a server has not answered after this many milliseconds,
    /// also ask the next one; the first good answer wins. 0 turns hedging off.
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub hedge_ms: u64,
    /// Key fetches only: try a server that was unreachable after the others for this many
    /// seconds (matters in a long-running agent). 0 turns it off.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub demote_secs: u64,
    /// Open a new TLS connection for every operation instead of keeping connections open.
    #[arg(long)]
    pub no_reuse: bool,
}

/// Where a passphrase comes from (never argv).
#[derive(Debug, Args)]
pub struct PassphraseArgs {
    /// Read the passphrase from the first line of this file.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// In place or to a new file: exactly one must be given.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// Rewrite the disk itself.
    #[arg(long)]
    pub in_place: bool,
    /// Write the result to a new disk (a raw image gets PATH.vmcrypt beside it; a VMDK
    /// output PATH.vmdk gets PATH-flat.vmdk).
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// `encrypt`
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Raw image or VMDK descriptor.
    pub disk: PathBuf,
    /// Key provider for the new KEK (default: the configured default).
    #[arg(long)]
    pub provider: Option<String>,
    /// XTS data unit size [default: 4096; an online encryption of a served disk uses 512,
    /// the block size its guests were given].
    #[arg(long, value_enum)]
    pub sector_size: Option<SectorSizeArg>,
    #[command(flatten)]
    pub target: Target,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Online --in-place only (a disk `vmcrypt serve --plaintext` holds): at most this many
    /// MB/s. Default: as for `rekey --deep`.
    #[arg(long, value_name = "MB/s", value_parser = parse_rate)]
    pub rate: Option<u64>,
    /// Treat DISK as a raw image even though its first bytes name another format (qcow2,
    /// VHD, VHDX, VDI, QED, LUKS): only for a raw image that merely starts with such bytes.
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
}

/// Formats `--format` can insist on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FormatArg {
    /// A raw image.
    Raw,
}

/// `decrypt`
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Encrypted raw image or VMDK descriptor.
    pub disk: PathBuf,
    #[command(flatten)]
    pub target: Target,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Online --in-place only (a disk `vmcrypt serve` holds): at most this many MB/s.
    /// Default: as for `rekey --deep`.
    #[arg(long, value_name = "MB/s", value_parser = parse_rate)]
    pub rate: Option<u64>,
}

/// `rekey`
#[derive(Debug, Args)]
pub struct RekeyArgs {
    /// Encrypted raw image or VMDK descriptor.
    pub disk: PathBuf,
    #[command(flatten)]
    pub depth: RekeyDepth,
    /// Provider of the new KEK (default: the configured default).
    #[arg(long)]
    pub provider: Option<String>,
    /// Worker threads for --deep (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Online --deep only: at most this many MB/s (10^6 bytes). Default: the job holds the
    /// disk at most half the time while guests do I/O, and goes full speed while they idle.
    #[arg(long, value_name = "MB/s", value_parser = parse_rate)]
    pub rate: Option<u64>,
}

/// `--rate MB/s` in bytes per second.
fn parse_rate(s: &str) -> Result<u64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 1e6 => Ok((r * 1e6) as u64),
        _ => Err(format!(
            "{s:?} is not a rate in MB/s (a number above 0, at most 1000000)"
        )),
    }
}

/// Shallow or deep: exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct RekeyDepth {
    /// New KEK, DEK re-wrapped: metadata only, seconds.
    #[arg(long)]
    pub shallow: bool,
    /// New DEK, every sector re-encrypted in place (crash-safe; `resume` finishes it).
    #[arg(long)]
    pub deep: bool,
}

/// `vm ...`
#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Encrypt a VM: one KEK, its configuration sealed, every disk in place under its own DEK.
    #[command(after_help = "Example:\n  vmcrypt vm encrypt /vms/web01/web01.vmx --provider site-a")]
    Encrypt {
        /// The .vmx file; several, or --from-file, for a fleet (one JSON line per VM).
        #[arg(required_unless_present = "from_file")]
        vmx: Vec<PathBuf>,
        /// Key provider for the VM's KEK (default: the configured default).
        #[arg(long)]
        provider: Option<String>,
        /// XTS data unit size for the disks.
        #[arg(long, value_enum, default_value = "4096")]
        sector_size: SectorSizeArg,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Decrypt a VM: every disk, then the .vmx back to its original bytes.
    Decrypt {
        /// The .vmx file.
        vmx: PathBuf,
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Rotate a VM's keys: --shallow wraps every key under a new KEK (no data rewritten).
    Rekey {
        /// The .vmx file; several, or --from-file, for a fleet (one JSON line per VM).
        #[arg(required_unless_present = "from_file")]
        vmx: Vec<PathBuf>,
        #[command(flatten)]
        depth: RekeyDepth,
        /// Provider of the new KEK (default: the VM's current provider).
        #[arg(long)]
        provider: Option<String>,
        /// --deep of a running VM: the most each server rekeys its disk at, in MB/s (default:
        /// one that leaves the guests at least half of their I/O).
        #[arg(long, value_name = "MB/s", value_parser = parse_rate)]
        rate: Option<u64>,
        #[command(flatten)]
        fleet: FleetArgs,
    },
    /// Show a VM's encryption state and each disk's (no key material).
    Inspect {
        /// The .vmx file.
        vmx: PathBuf,
    },
}

/// Many VMs at once (`vm encrypt`, `vm rekey`): docs/vm.md, "Fleets".
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Also the VMs listed in this file, one .vmx path per line (`#` comments allowed).
    #[arg(long, value_name = "LIST")]
    pub from_file: Option<PathBuf>,
    /// VMs run at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub parallel: u64,
    /// Append each VM's JSON line to FILE, and skip the VMs FILE already records as done by
    /// the same operation: the same command again does only what is left.
    #[arg(long, value_name = "FILE")]
    pub results: Option<PathBuf>,
}

impl FleetArgs {
    /// Whether a fleet run was asked for beyond the one VM named.
    pub fn wanted(&self, named: usize) -> bool {
        named != 1 || self.from_file.is_some() || self.results.is_some()
    }
}

/// `inspect`
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Raw image or VMDK descriptor.
    pub disk: PathBuf,
}

/// `recover ...`
#[derive(Debug, Subcommand)]
pub enum RecoverCmd {
    /// Print the dm-crypt table line that opens the payload without vmcrypt (reveals the key).
    #[command(
        after_help = "Example:\n  vmcrypt recover dm-table disk.img --reveal-key | sudo dmsetup create disk --readonly"
    )]
    DmTable {
        /// Encrypted raw image or VMDK descriptor.
        disk: PathBuf,
        /// Acknowledge that the output contains the disk's key in clear.
        #[arg(long, required = true)]
        reveal_key: bool,
    },
}

/// `--sector-size`
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum SectorSizeArg {
    /// 512-byte data units.
    #[value(name = "512")]
    S512,
    /// 4096-byte data units.
    #[value(name = "4096")]
    S4096,
}

impl From<SectorSizeArg> for vmcrypt_core::SectorSize {
    fn from(s: SectorSizeArg) -> Self {
        match s {
            SectorSizeArg::S512 => vmcrypt_core::SectorSize::S512,
            SectorSizeArg::S4096 => vmcrypt_core::SectorSize::S4096,
        }
    }
}
