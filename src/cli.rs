//! The command line: clap's types for `strata` and its subcommands. `main` parses them; the
//! man page and shell completions are generated from the same definitions.
//!
//! The doc comments here are clap's help texts, written for a terminal (`host[:port]`,
//! `KIND-<cache key hex>`), not rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Build Linux initrds and signed system extensions from distribution packages,
/// reproducibly, in rootless podman containers.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about, long_about = None)]
pub struct Cli {
    /// More log output (-v: debug, including the package manager's output; -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Log as JSON lines on stderr (for machines).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
        /// Give up on a registry that sends nothing for this long (no answer, no body bytes):
        /// the request is tried again, 5 times in all, then fails naming the URL.
        #[arg(long, env = "STRATA_REGISTRY_TIMEOUT", value_name = "SECONDS", value_parser = seconds, default_value = "30")]
        registry_timeout: Duration,
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
        /// Give up on a registry that sends nothing for this long (no answer, no body bytes):
        /// the request is tried again, 5 times in all, then fails naming the URL.
        #[arg(long, env = "STRATA_REGISTRY_TIMEOUT", value_name = "SECONDS", value_parser = seconds, default_value = "30")]
        registry_timeout: Duration,
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
        /// Give up on a registry that sends nothing for this long (no answer, no body bytes):
        /// the request is tried again, 5 times in all, then fails naming the URL.
        #[arg(long, env = "STRATA_REGISTRY_TIMEOUT", value_name = "SECONDS", value_parser = seconds, default_value = "30")]
        registry_timeout: Duration,
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
    /// Write the man pages (strata.1 and one strata-COMMAND.1 per subcommand), generated
    /// from these definitions, into a directory.
    Man {
        /// The directory to write the pages to.
        #[arg(short, long, default_value = "man")]
        output: PathBuf,
    },
    /// Print a completion script for a shell on stdout, e.g.
    /// `strata completions bash > /etc/bash_completion.d/strata`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
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

/// `1.5` → 1.5 s; more than zero.
fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() => Duration::try_from_secs_f64(s).map_err(|e| e.to_string()),
        _ => Err(format!("`{text}` is not a number of seconds above 0 (e.g. 30 or 0.5)")),
    }
}

/// The man pages: `strata.1` and `strata-COMMAND.1` for each subcommand, as (file name,
/// roff text).
pub fn man_pages() -> std::io::Result<Vec<(String, Vec<u8>)>> {
    use clap::CommandFactory as _;
    let cmd = Cli::command();
    let mut pages = Vec::new();
    let mut page = |cmd: clap::Command, name: String| -> std::io::Result<()> {
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        pages.push((format!("{name}.1"), out));
        Ok(())
    };
    page(cmd.clone(), "strata".into())?;
    for sub in cmd.get_subcommands() {
        let name = format!("strata-{}", sub.get_name());
        page(sub.clone().name(name.clone()), name)?;
    }
    Ok(pages)
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    use clap::CommandFactory as _;
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "strata", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    #[test]
    fn registry_timeout_defaults_to_the_clients_and_takes_fractions() {
        let timeout = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Pull { registry_timeout, .. }) => Ok(registry_timeout),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        let base = ["strata", "pull", "r.example/x:1", "-o", "out"];
        assert!(
            std::env::var_os("STRATA_REGISTRY_TIMEOUT").is_none(),
            "run the tests without STRATA_REGISTRY_TIMEOUT"
        );
        assert_eq!(timeout(&base), Ok(crate::registry::DEFAULT_READ_TIMEOUT));
        let with = |v: &str| timeout(&[&base[..], &[format!("--registry-timeout={v}").as_str()]].concat());
        assert_eq!(with("0.5"), Ok(Duration::from_millis(500)));
        for bad in ["0", "-1", "x", "inf"] {
            assert!(
                with(bad).unwrap_err().contains("not a number of seconds above 0"),
                "{bad}"
            );
        }
    }

    #[test]
    fn man_pages_cover_every_subcommand() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in [
            "strata.1",
            "strata-build.1",
            "strata-pull.1",
            "strata-man.1",
            "strata-completions.1",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        let build = String::from_utf8(pages.iter().find(|(n, _)| n == "strata-build.1").unwrap().1.clone()).unwrap();
        assert!(build.starts_with(".ie") || build.contains(".TH"), "roff: {build}");
        assert!(
            build.contains("cache\\-from") || build.contains("cache-from"),
            "the page documents --cache-from"
        );
    }

    #[test]
    fn completions_know_the_subcommands() {
        let bash = String::from_utf8(completions(clap_complete::Shell::Bash)).unwrap();
        assert!(
            bash.contains("build") && bash.contains("keygen") && bash.contains("--cache-from"),
            "{bash}"
        );
    }
}
