//! Command lines for people: quoting an argv so it can be pasted into a shell (in logs and
//! in the `podman run …` line of a failed container command).

use std::ffi::OsStr;

/// Quote one argument for a POSIX shell.
pub fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The command as a pasteable shell line.
pub fn shell_line<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter().map(|a| quote(a.as_ref())).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(
            shell_line(&["qemu", "-append", "console=ttyS0 panic=-1", "it's"]),
            "qemu -append 'console=ttyS0 panic=-1' 'it'\\''s'"
        );
    }
}
