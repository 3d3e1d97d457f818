//! The `strata` command: sets up logging and one tokio runtime, calls the library, prints
//! the error chain once and exits non-zero on failure.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::Parser as _;
use strata::cli::{Cli, Command};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// How push, pull and the remote build cache talk to registries.
fn registry_client(insecure: bool, read_timeout: std::time::Duration) -> strata::registry::ClientOptions {
    strata::registry::ClientOptions {
        insecure,
        read_timeout,
        ..Default::default()
    }
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
    let fmt = tracing_subscriber::fmt::layer()
        .with_span_events(FmtSpan::CLOSE)
        .with_target(verbose > 0);
    if json {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt.json().with_writer(std::io::stderr))
            .init();
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
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt.with_ansi(false).with_writer(std::io::stderr))
            .init();
        None
    }
}

async fn run(cli: Cli, cancel: strata::interrupt::CancellationToken) -> Result<ExitCode> {
    match cli.command {
        Command::Build {
            layer_set,
            output,
            cache_dir,
            rebuild,
            cache_from,
            cache_to,
            cache_key,
            cache_cert,
            cache_trust,
            cache_insecure_accept_unsigned,
            insecure,
            registry_timeout,
            key,
            cert,
            extensions,
            no_extensions,
        } => {
            let cache_dir = match cache_dir {
                Some(d) => d,
                None => default_cache_dir()?,
            };
            let opts = strata::pipeline::Options {
                layer_set,
                output,
                cache_dir,
                rebuild,
                source_date_epoch: strata::pipeline::source_date_epoch_from_env()?,
                remote_cache: strata::registry::cache::Options {
                    from: cache_from,
                    to: cache_to,
                    client: registry_client(insecure, registry_timeout),
                    trust: cache_trust,
                    accept_unsigned: cache_insecure_accept_unsigned,
                    signing: None,
                }
                .with_defaults(cache_key.zip(cache_cert), key.clone().zip(cert.clone())),
                signing: key.zip(cert),
                extensions: strata::cli::extension_selection(extensions, no_extensions)?,
                cancel,
            };
            let (_report, products) = strata::pipeline::run(&opts).await?;
            for p in &products.products {
                println!("{}\t{}\t{}", p.kind, opts.output.join(&p.file).display(), p.sha256);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cpio {
            dir,
            output,
            compression,
            source_date_epoch,
        } => {
            let compression: strata_format::compress::Compression = compression.parse()?;
            let epoch = match source_date_epoch {
                Some(e) => Some(e),
                None => strata::pipeline::source_date_epoch_from_env()?,
            };
            let mut layer = strata::fsread::read_tree(&dir)?;
            if let Some(e) = epoch {
                layer.clamp_mtimes(e);
            }
            let data = strata::products::initrd::write_member(&layer, compression)?;
            strata::store::write_atomic(&output, &data)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Push {
            reference,
            output,
            cache_dir,
            version,
            source,
            insecure,
            key,
            cert,
            registry_timeout,
        } => {
            let cache_dir = match cache_dir {
                Some(d) => d,
                None => default_cache_dir()?,
            };
            let opts = strata::registry::push::Options {
                reference,
                output,
                cache_dir,
                version,
                source,
                client: registry_client(insecure, registry_timeout),
                signing: key.zip(cert),
            };
            let summary = strata::registry::push::run(&opts).await?;
            for line in summary.lines() {
                println!("{line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull {
            reference,
            output,
            cert,
            cache_dir,
            insecure,
            registry_timeout,
        } => {
            let cache_dir = match cache_dir {
                Some(d) => d,
                None => default_cache_dir()?,
            };
            let opts = strata::registry::pull::Options {
                reference,
                output,
                cache_dir,
                cert,
                client: registry_client(insecure, registry_timeout),
            };
            for p in strata::registry::pull::run(&opts).await? {
                println!(
                    "{}\t{}\t{}\treceived {} bytes",
                    p.kind,
                    p.path.display(),
                    p.digest,
                    p.bytes_received
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen {
            output,
            common_name,
            force,
        } => {
            let w = strata::keygen::run(&output, &common_name, force)?;
            println!("key\t{}", w.key.display());
            println!("certificate\t{}\tsha256:{}", w.certificate.display(), w.fingerprint);
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { output } => {
            for (name, text) in strata::cli::man_pages().context("rendering the man pages")? {
                let path = output.join(name);
                strata::store::write_atomic(&path, &text).with_context(|| format!("writing {}", path.display()))?;
                println!("{}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use std::io::Write as _;
            std::io::stdout()
                .write_all(&strata::cli::completions(shell))
                .context("writing the completion script")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Vm {
            output,
            disk,
            append,
            memory,
            kvm,
        } => {
            let status = strata::vm::run(&strata::vm::Options {
                output,
                disk,
                append,
                memory_mib: memory,
                kvm,
            })?;
            Ok(if status.success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let spinner = init_logging(cli.verbose, cli.json);
    // The one place signals are handled; the token goes down the pipeline.
    let cancel = match strata::interrupt::install() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: watching for Ctrl-C: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli, cancel.clone()));
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    if cancel.is_cancelled() {
        if let Err(e) = &result {
            strata::interrupt::say(format_args!("error: {}", strata::cli::error_chain(e)));
        }
        // Blocking threads may still be compressing: do not wait for them.
        runtime.shutdown_timeout(std::time::Duration::ZERO);
        strata::interrupt::exit_now();
    }
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", strata::cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
