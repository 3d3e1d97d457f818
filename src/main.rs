//! The `strata` command: sets up logging and one tokio runtime, calls the library, prints
//! the error chain once and exits non-zero on failure.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Build Linux initrds and signed system extensions from distribution packages,
/// reproducibly, in rootless podman containers.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, long_about = None)]
struct Cli {
    /// More log output (-v: debug, including the package manager's output; -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Log as JSON lines on stderr (for machines).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a layer set: base layer, kernel + modules layer and extension layers, then the
    /// kernel, the initrd, one NAME.sysext.raw per extension and products.json in the
    /// output directory.
    Build {
        /// The layer set directory (holding base.toml).
        #[arg(default_value = "layers/debian-trixie")]
        layer_set: PathBuf,
        /// Where the products and products.json go.
        #[arg(short, long, default_value = "out")]
        output: PathBuf,
        /// The cache directory holding the OCI layer store
        /// [default: $XDG_CACHE_HOME/strata or ~/.cache/strata].
        #[arg(long, env = "STRATA_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Rebuild every layer, even those the store already has.
        #[arg(long)]
        rebuild: bool,
        /// A registry repository (host[:port]/repo, no tag) to pull layers the store lacks
        /// from, before building them; layers are tagged KIND-<cache key hex>.
        #[arg(long, value_name = "REPO")]
        cache_from: Option<String>,
        /// A registry repository (host[:port]/repo, no tag) to push the build's layers to.
        #[arg(long, value_name = "REPO")]
        cache_to: Option<String>,
        /// Talk plain HTTP to the --cache-from/--cache-to registries (loopback always is).
        #[arg(long)]
        insecure: bool,
        /// PEM private key (RSA) that signs the extension images' verity root hashes
        /// (e.g. from `strata keygen`). Never put into any layer or product.
        #[arg(long, requires = "cert", value_name = "FILE")]
        key: Option<PathBuf>,
        /// PEM certificate of --key: the initrd gets it in /etc/verity.d/ and merges only
        /// extensions signed by that key.
        #[arg(long, requires = "key", value_name = "FILE")]
        cert: Option<PathBuf>,
        /// Build only this extension of the layer set (repeatable); default: all of them.
        #[arg(long = "extension", value_name = "NAME", conflicts_with = "no_extensions")]
        extensions: Vec<String>,
        /// Build no extension, only the kernel and the initrd.
        #[arg(long)]
        no_extensions: bool,
    },
    /// Write a directory tree as one compressed cpio (newc) initrd member, the way `build`
    /// flattens a layer: sorted, inodes renumbered, hard links kept, 4-byte aligned.
    Cpio {
        /// The directory to archive (its contents; the directory itself is the root).
        dir: PathBuf,
        /// The output file.
        #[arg(short, long)]
        output: PathBuf,
        /// none, zstd[:1-19], gzip[:1-9] or xz[:0-9].
        #[arg(long, default_value = "zstd:19")]
        compression: String,
        /// Clamp mtimes to this time (default: $SOURCE_DATE_EPOCH if set, else unchanged).
        #[arg(long)]
        source_date_epoch: Option<u64>,
    },
    /// Push the products (as OCI artifacts) and layers of the last build to a registry:
    /// REF (host[:port]/repo:TAG) gets an index of the products, REF-initrd, REF-kernel,
    /// REF-sysext-NAME each product, repo:base-HEX and repo:kernel-HEX the layers.
    Push {
        /// Where to push, e.g. registry.example/initrd/debian-trixie:13.
        reference: String,
        /// The build output directory (with products.json).
        #[arg(short, long, default_value = "out")]
        output: PathBuf,
        /// The cache directory holding the build's layer store
        /// [default: $XDG_CACHE_HOME/strata or ~/.cache/strata].
        #[arg(long, env = "STRATA_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// The org.opencontainers.image.version annotation [default: the tag].
        #[arg(long)]
        version: Option<String>,
        /// The org.opencontainers.image.source annotation (the sources' URL).
        #[arg(long)]
        source: Option<String>,
        /// Talk plain HTTP to the registry (loopback always is).
        #[arg(long)]
        insecure: bool,
    },
    /// Pull a product (or every product of a pushed build, given its index tag) from a
    /// registry into a directory, verifying every digest.
    Pull {
        /// What to pull, e.g. registry.example/initrd/network:13 or …/debian-trixie:13-initrd.
        reference: String,
        /// The directory to write the product file(s) to (a sysext as NAME.sysext.raw).
        #[arg(short, long)]
        output: PathBuf,
        /// Check a sysext against this certificate (PEM or DER) before installing it: the
        /// PKCS#7 signature of its root hash, the partition UUIDs and the recomputed verity
        /// tree. A failing image is not written.
        #[arg(long, value_name = "CRT")]
        cert: Option<PathBuf>,
        /// The cache directory whose store downloads pass through
        /// [default: $XDG_CACHE_HOME/strata or ~/.cache/strata].
        #[arg(long, env = "STRATA_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Talk plain HTTP to the registry (loopback always is).
        #[arg(long)]
        insecure: bool,
    },
    /// Make a development key and self-signed certificate for signing system extensions:
    /// DIR/sysext.key (0600) and DIR/sysext.crt (for the initrd's /etc/verity.d/).
    Keygen {
        /// The directory to write sysext.key and sysext.crt to.
        #[arg(short, long, default_value = "keys")]
        output: PathBuf,
        /// The certificate's subject common name.
        #[arg(long, default_value = "strata development key")]
        common_name: String,
        /// Replace an existing key pair.
        #[arg(long)]
        force: bool,
    },
    /// Boot a build's products under qemu, serial console on this terminal.
    Vm {
        /// The build output directory (with products.json).
        #[arg(default_value = "out")]
        output: PathBuf,
        /// A raw disk image to attach as /dev/vda (root=/dev/vda is added).
        #[arg(long)]
        disk: Option<PathBuf>,
        /// Extra kernel command-line arguments.
        #[arg(long)]
        append: Vec<String>,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 1024)]
        memory: u32,
        /// Use KVM acceleration.
        #[arg(long)]
        kvm: bool,
    },
}

/// How push, pull and the remote build cache talk to registries.
fn registry_client(insecure: bool) -> strata::registry::ClientOptions {
    strata::registry::ClientOptions { insecure, ..Default::default() }
}

fn default_cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("strata"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir")?;
    Ok(PathBuf::from(home).join(".cache/strata"))
}

/// Set up logging on stderr; returns the terminal spinner if one is shown.
fn init_logging(verbose: u8, json: bool) -> Option<indicatif::ProgressBar> {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer().with_span_events(FmtSpan::CLOSE).with_target(verbose > 0);
    if json {
        tracing_subscriber::registry().with(filter).with(fmt.json().with_writer(std::io::stderr)).init();
        None
    } else if std::io::stderr().is_terminal() {
        let bar = strata::progress::spinner();
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt.with_writer(strata::progress::SuspendingStderr(bar.clone())))
            .with(strata::progress::StepMessages(bar.clone()))
            .init();
        Some(bar)
    } else {
        tracing_subscriber::registry().with(filter).with(fmt.with_ansi(false).with_writer(std::io::stderr)).init();
        None
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Build {
            layer_set,
            output,
            cache_dir,
            rebuild,
            cache_from,
            cache_to,
            insecure,
            key,
            cert,
            extensions,
            no_extensions,
        } => {
            let cache_dir = match cache_dir {
                Some(d) => d,
                None => default_cache_dir()?,
            };
            let opts = strata::build::Options {
                layer_set,
                output,
                cache_dir,
                rebuild,
                source_date_epoch: strata::build::source_date_epoch_from_env()?,
                remote_cache: strata::build::remote_cache::Options {
                    from: cache_from,
                    to: cache_to,
                    client: registry_client(insecure),
                },
                signing: key.zip(cert),
                extensions: match (no_extensions, extensions.is_empty()) {
                    (true, _) => Some(vec![]),
                    (false, true) => None,
                    (false, false) => Some(extensions),
                },
            };
            let (_report, products) = strata::build::run(&opts).await?;
            for p in &products.products {
                println!("{}\t{}\t{}", p.kind, opts.output.join(&p.file).display(), p.sha256);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cpio { dir, output, compression, source_date_epoch } => {
            let compression: strata_format::compress::Compression = compression.parse()?;
            let epoch = match source_date_epoch {
                Some(e) => Some(e),
                None => strata::build::source_date_epoch_from_env()?,
            };
            let mut layer = strata::fsread::read_tree(&dir)?;
            if let Some(e) = epoch {
                layer.clamp_mtimes(e);
            }
            let data = strata::initrd::write_member(&layer, compression)?;
            strata::store::write_atomic(&output, &data)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Push { reference, output, cache_dir, version, source, insecure } => {
            let cache_dir = match cache_dir {
                Some(d) => d,
                None => default_cache_dir()?,
            };
            let opts = strata::push::Options { reference, output, cache_dir, version, source, client: registry_client(insecure) };
            let summary = strata::push::run(&opts).await?;
            for line in summary.lines() {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull { reference, output, cert, cache_dir, insecure } => {
            let cache_dir = match cache_dir {
                Some(d) => d,
                None => default_cache_dir()?,
            };
            let opts = strata::pull::Options { reference, output, cache_dir, cert, client: registry_client(insecure) };
            for p in strata::pull::run(&opts).await? {
                println!("{}\t{}\t{}\treceived {} bytes", p.kind, p.path.display(), p.digest, p.bytes_received);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { output, common_name, force } => {
            let w = strata::keygen::run(&output, &common_name, force)?;
            println!("key\t{}", w.key.display());
            println!("certificate\t{}\tsha256:{}", w.certificate.display(), w.fingerprint);
            Ok(ExitCode::SUCCESS)
        }
        Command::Vm { output, disk, append, memory, kvm } => {
            let status = strata::vm::run(&strata::vm::Options { output, disk, append, memory_mib: memory, kvm })?;
            Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let spinner = init_logging(cli.verbose, cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
