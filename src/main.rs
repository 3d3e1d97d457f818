//! The `strata` command: sets up logging and one tokio runtime, calls the library, prints
//! the error chain once and exits non-zero on failure.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Build Linux initrds (and, later, system extensions) from distribution packages,
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
    /// Build a layer set: base layer, kernel + modules layer, then the initrd and kernel
    /// products and products.json in the output directory.
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

fn default_cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("strata"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir")?;
    Ok(PathBuf::from(home).join(".cache/strata"))
}

fn init_logging(verbose: u8, json: bool) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("STRATA_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::CLOSE)
        .with_target(verbose > 0);
    if json {
        builder.json().init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Build { layer_set, output, cache_dir, rebuild } => {
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
        Command::Vm { output, disk, append, memory, kvm } => {
            let status = strata::vm::run(&strata::vm::Options { output, disk, append, memory_mib: memory, kvm })?;
            Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
