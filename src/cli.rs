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
        /// Where the products and products.json go. A build replaces the previous build's
        /// products there as a whole, or not at all; other files are kept.
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
        /// from, before building them; layers are tagged KIND-<cache key hex>. Only layers
        /// signed by a --cache-trust certificate are taken; the others are built.
        #[arg(long, value_name = "REPO", value_parser = cache_repository)]
        cache_from: Option<String>,
        /// A registry repository (host[:port]/repo, no tag) to push the build's layers to,
        /// each with a signature (tag KIND-<cache key hex>.sig) by --cache-key, or --key.
        #[arg(long, value_name = "REPO", value_parser = cache_repository)]
        cache_to: Option<String>,
        /// PEM private key (RSA) that signs the layers pushed to --cache-to
        /// [default: --key].
        #[arg(long, requires = "cache_cert", value_name = "FILE")]
        cache_key: Option<PathBuf>,
        /// PEM certificate of --cache-key.
        #[arg(long, requires = "cache_key", value_name = "FILE")]
        cache_cert: Option<PathBuf>,
        /// A certificate (PEM or DER) whose signatures make --cache-from layers trusted
        /// (repeatable) [default: --cache-cert, else --cert].
        #[arg(long = "cache-trust", value_name = "CERT")]
        cache_trust: Vec<PathBuf>,
        /// Take --cache-from layers that are not signed by a trusted certificate. That
        /// registry can then put anything into the products (and get it signed with
        /// --key): only for a registry as trusted as this machine.
        #[arg(long)]
        cache_insecure_accept_unsigned: bool,
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
        /// Build only this extension of the layer set (repeatable, each name once); default:
        /// all of them.
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
        /// PEM private key (RSA) that signs the layers under their cache tags
        /// (KIND-<cache key hex>.sig), so that `build --cache-from` trusts them; without
        /// it they are pushed unsigned.
        #[arg(long, requires = "cert", value_name = "FILE")]
        key: Option<PathBuf>,
        /// PEM certificate of --key (what `build --cache-trust` names).
        #[arg(long, requires = "key", value_name = "FILE")]
        cert: Option<PathBuf>,
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

/// A `--cache-from`/`--cache-to` repository, checked when the command line is parsed, so a
/// bad one fails before any directory is made (the build checks it again when it connects).
fn cache_repository(given: &str) -> Result<String, String> {
    let r: crate::registry::Reference = given.parse().map_err(|e| format!("{e}"))?;
    if r.tag.is_some() || r.digest.is_some() {
        return Err(format!(
            "name a repository without a tag or digest (e.g. {}/{}); each layer is tagged with its cache key",
            r.registry, r.repository
        ));
    }
    Ok(given.to_string())
}

/// An error as `main` prints it: the chain on one line, `outer: inner: …`, leaving out a
/// cause whose text the message before it already ends with (an error type that prints its
/// source in its own message, as `{method} {url}: {source}` does, would otherwise show the
/// same words twice).
pub fn error_chain(e: &anyhow::Error) -> String {
    let mut shown: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if shown.last().is_some_and(|last| last.ends_with(&text)) {
            continue;
        }
        shown.push(text);
    }
    shown.join(": ")
}

/// The extensions `build` makes from its flags: `None` for all of the set's, none with
/// `--no-extensions`, else the `--extension` names, each at most once (a repeated name would
/// make two products of the same name, which `pull` refuses later).
pub fn extension_selection(extensions: Vec<String>, no_extensions: bool) -> anyhow::Result<Option<Vec<String>>> {
    if no_extensions {
        return Ok(Some(vec![]));
    }
    if extensions.is_empty() {
        return Ok(None);
    }
    for (i, name) in extensions.iter().enumerate() {
        if extensions[..i].contains(name) {
            anyhow::bail!("--extension {name} is given twice; name each extension once");
        }
    }
    Ok(Some(extensions))
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
    fn the_error_chain_shows_each_text_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("GET http://r/v2/: {source}")]
        struct Transport {
            source: std::io::Error,
        }
        let io = std::io::Error::other("error sending request for url (http://r/v2/)");
        let e = anyhow::Error::new(Transport { source: io }).context("fetching r/x:1");
        assert_eq!(
            format!("{e:#}"),
            "fetching r/x:1: GET http://r/v2/: error sending request for url (http://r/v2/): error sending request for url (http://r/v2/)",
            "the repetition this guards against"
        );
        assert_eq!(
            error_chain(&e),
            "fetching r/x:1: GET http://r/v2/: error sending request for url (http://r/v2/)"
        );
        let plain = anyhow::anyhow!("inner").context("middle").context("outer");
        assert_eq!(error_chain(&plain), "outer: middle: inner");
    }

    #[test]
    fn an_extension_named_twice_is_an_error() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(extension_selection(vec![], false).unwrap(), None);
        assert_eq!(extension_selection(vec![], true).unwrap(), Some(vec![]));
        assert_eq!(
            extension_selection(names(&["network", "storage"]), false).unwrap(),
            Some(names(&["network", "storage"]))
        );
        let e = extension_selection(names(&["network", "storage", "network"]), false).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--extension network is given twice; name each extension once"
        );
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
