//! `strata vm`: boot a build's products under qemu with the serial console on the terminal.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::products;
use crate::registry::artifact;

/// How to boot.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The build output directory (with `products.json`).
    pub output: PathBuf,
    /// A raw disk image attached as a virtio disk (`/dev/vda`).
    pub disk: Option<PathBuf>,
    /// Extra kernel command line, appended after strata's defaults.
    pub append: Vec<String>,
    pub memory_mib: u32,
    /// Use KVM (off by default: not every host has a usable one).
    pub kvm: bool,
}

/// The qemu command line (pure; unit-tested).
pub fn qemu_argv(kernel: &Path, initrd: &Path, opts: &Options) -> Vec<String> {
    let mut cmdline = vec![
        "console=ttyS0".to_string(),
        "panic=-1".into(),
        "systemd.show_status=1".into(),
    ];
    if opts.disk.is_some() {
        cmdline.push("root=/dev/vda".into());
        cmdline.push("rw".into());
    }
    cmdline.extend(opts.append.iter().cloned());
    let mut argv: Vec<String> = vec![
        "qemu-system-x86_64".into(),
        "-m".into(),
        opts.memory_mib.max(256).to_string(),
        "-nographic".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        kernel.display().to_string(),
        "-initrd".into(),
        initrd.display().to_string(),
        "-append".into(),
        cmdline.join(" "),
    ];
    if let Some(disk) = &opts.disk {
        argv.push("-drive".into());
        argv.push(format!("file={},if=virtio,format=raw", disk.display()));
    }
    if opts.kvm {
        argv.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]);
    }
    argv
}

/// Boot the products in `opts.output`; returns qemu's exit status.
pub fn run(opts: &Options) -> Result<std::process::ExitStatus> {
    let p = products::read(&opts.output)?;
    let kernel = p.find("kernel").context("products.json lists no kernel")?;
    let initrd = p.find("initrd").context("products.json lists no initrd")?;
    let (kernel, initrd) = (
        artifact::product_path(&opts.output, kernel)?,
        artifact::product_path(&opts.output, initrd)?,
    );
    let argv = qemu_argv(&kernel, &initrd, opts);
    tracing::info!(command = %crate::cmd::shell_line(&argv), "booting");
    std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .status()
        .with_context(|| format!("running {} (install qemu-system-x86)", argv[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_with_disk_and_append() {
        let o = Options {
            disk: Some("root.img".into()),
            append: vec!["quiet".into()],
            memory_mib: 1024,
            ..Default::default()
        };
        let a = qemu_argv(Path::new("out/vmlinuz"), Path::new("out/initrd.cpio.zst"), &o);
        let line = a.join(" ");
        assert!(line.contains("-kernel out/vmlinuz -initrd out/initrd.cpio.zst"));
        assert!(line.contains("console=ttyS0 panic=-1 systemd.show_status=1 root=/dev/vda rw quiet"));
        assert!(line.contains("-drive file=root.img,if=virtio,format=raw"));
        assert!(!line.contains("kvm"));
    }
}
