//! Reading a layer set's files as the untrusted input they may be: regular files only,
//! bounded in size, never a FIFO opened or a device read.

use std::path::Path;

/// Largest layer-set TOML file strata reads (1 MiB; the shipped ones are a few KiB).
pub const MAX_TOML_BYTES: u64 = 1 << 20;

/// A layer-set TOML file: a regular file (after symlinks) of at most [`MAX_TOML_BYTES`], in
/// UTF-8.
pub(super) fn read_toml(file: &Path) -> anyhow::Result<String> {
    let data = read_regular_file(file, MAX_TOML_BYTES)?;
    String::from_utf8(data).map_err(|e| {
        anyhow::anyhow!(
            "it is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        )
    })
}

/// Read `path`, which must be a regular file (after symlinks; not a device, FIFO or
/// directory) of at most `limit` bytes. The read is bounded too, so a file that grows while
/// it is read, or a file system that misreports sizes, still cannot make strata read more.
/// A FIFO is never opened (that would block); the file is opened without blocking and
/// checked again once open, against a swap between the check and the open.
pub(crate) fn read_regular_file(path: &Path, limit: u64) -> anyhow::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let kind = |m: &std::fs::Metadata| {
        use std::os::unix::fs::FileTypeExt as _;
        let t = m.file_type();
        match () {
            _ if t.is_file() => None,
            _ if t.is_dir() => Some("a directory"),
            _ if t.is_fifo() => Some("a FIFO"),
            _ if t.is_char_device() => Some("a character device"),
            _ if t.is_block_device() => Some("a block device"),
            _ if t.is_socket() => Some("a socket"),
            _ => Some("not a regular file"),
        }
    };
    let not_regular = |what: &str| anyhow::anyhow!("it is {what}, not a regular file");
    let too_big = |size: u64| {
        anyhow::anyhow!(
            "it is {size} bytes or more, larger than the limit of {limit} bytes ({} MiB)",
            limit >> 20
        )
    };
    let meta = std::fs::metadata(path)?;
    if let Some(what) = kind(&meta) {
        return Err(not_regular(what));
    }
    if meta.len() > limit {
        return Err(too_big(meta.len()));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK | nix::libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if let Some(what) = kind(&meta) {
        return Err(not_regular(what));
    }
    let mut data = Vec::with_capacity(meta.len().min(limit) as usize);
    file.take(limit + 1).read_to_end(&mut data)?;
    if data.len() as u64 > limit {
        return Err(too_big(data.len() as u64));
    }
    Ok(data)
}
