//! Running external programs on the host, one way: argv built by a pure function, run by
//! [`run`], which logs the command, keeps the stderr tail in the error and prints a line a
//! user can paste to reproduce the failure.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

use anyhow::{Result, bail};
use tracing::debug;

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

/// Run `argv` with captured output; a non-zero exit is an error with the stderr tail and
/// the command to reproduce it.
pub fn run<S: AsRef<OsStr>>(argv: &[S]) -> Result<Output> {
    let line = shell_line(argv);
    debug!(command = %line, "running");
    let (program, args) = argv.split_first().ok_or_else(|| anyhow::anyhow!("empty command"))?;
    let out = Command::new(program.as_ref())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run `{}`: {e}", program.as_ref().to_string_lossy()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        bail!(
            "`{}` failed ({}):\n{}\nto reproduce: {line}",
            program.as_ref().to_string_lossy(),
            out.status,
            tail.join("\n")
        );
    }
    Ok(out)
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

    #[test]
    fn failure_names_the_command_and_keeps_stderr() {
        let err = run(&["sh", "-c", "echo oops >&2; exit 3"]).unwrap_err().to_string();
        assert!(
            err.contains("oops") && err.contains("to reproduce: sh -c 'echo oops >&2; exit 3'"),
            "{err}"
        );
        assert!(
            run(&["/nonexistent/prog"])
                .unwrap_err()
                .to_string()
                .contains("cannot run")
        );
    }
}
