//! Running commands in a build container, one way.
//!
//! A [`Command`] is built by a pure function (the distribution backend's, unit-tested); [`run`]
//! logs it, runs it, and on a non-zero exit returns [`Failed`]: what failed, the exit code,
//! the output's tail and a `podman run …` line a user can paste to run the same command in
//! the same builder image. Commands answer on stdout with one JSON document, which
//! [`run_json`] parses with serde; everything else they print goes to stderr (the tail).

use serde::de::DeserializeOwned;
use tracing::debug;

use super::{ContainerSpec, Engine, ExecOutput};

/// A command for a build container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// What it does, for messages: "installing packages into the build root".
    pub what: String,
    pub argv: Vec<String>,
}

impl Command {
    pub fn new(what: impl Into<String>, argv: impl IntoIterator<Item = impl Into<String>>) -> Command {
        Command {
            what: what.into(),
            argv: argv.into_iter().map(Into::into).collect(),
        }
    }
}

/// A running build container: its id and what it was created from.
#[derive(Debug, Clone)]
pub struct Container {
    pub id: String,
    pub spec: ContainerSpec,
}

/// A command that exited non-zero.
#[derive(Debug, thiserror::Error)]
#[error("{what} failed (exit code {exit_code})\n--- last output ---\n{tail}\n--- to reproduce ---\n{reproduce}")]
pub struct Failed {
    pub what: String,
    pub exit_code: i64,
    pub tail: String,
    /// A `podman run …` line for a shell.
    pub reproduce: String,
}

/// A command's answer that is not the JSON it promised.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what}: its answer is not the JSON strata expects ({parse_error}): `{line}`\n--- to reproduce ---\n{reproduce}"
)]
pub struct BadAnswer {
    pub what: String,
    pub line: String,
    pub reproduce: String,
    /// Shown in the message, before the reproduce line, so not a `source` of the chain.
    pub parse_error: serde_json::Error,
}

/// The `podman run` line that runs `cmd` in a fresh container of `spec`'s image.
pub fn reproduce_line(spec: &ContainerSpec, cmd: &Command) -> String {
    let mut argv: Vec<String> = vec!["podman".into(), "run".into(), "--rm".into()];
    argv.push(
        if spec.network {
            "--network=host"
        } else {
            "--network=none"
        }
        .into(),
    );
    if spec.mounts {
        argv.push("--cap-add=SYS_ADMIN".into());
    }
    for e in &spec.env {
        argv.push("-e".into());
        argv.push(e.clone());
    }
    argv.push(spec.image.clone());
    argv.extend(cmd.argv.iter().cloned());
    crate::cmd::shell_line(&argv)
}

/// Run `cmd` in `c`; a non-zero exit is a [`Failed`] error.
pub async fn run<E: Engine>(engine: &E, c: &Container, cmd: &Command) -> anyhow::Result<ExecOutput> {
    debug!(command = %crate::cmd::shell_line(&cmd.argv), what = %cmd.what, "running in the build container");
    let out = engine.exec(&c.id, &cmd.argv).await?;
    if out.exit_code != 0 {
        return Err(Failed {
            what: cmd.what.clone(),
            exit_code: out.exit_code,
            tail: out.tail_text(),
            reproduce: reproduce_line(&c.spec, cmd),
        }
        .into());
    }
    Ok(out)
}

/// Run `cmd` in `c` and parse its stdout (the last non-empty line) as JSON.
pub async fn run_json<E: Engine, T: DeserializeOwned>(engine: &E, c: &Container, cmd: &Command) -> anyhow::Result<T> {
    let out = run(engine, c, cmd).await?;
    Ok(parse_answer(&out.stdout, &c.spec, cmd)?)
}

/// The JSON answer of `cmd`: the last non-empty line of its stdout.
pub fn parse_answer<T: DeserializeOwned>(stdout: &[u8], spec: &ContainerSpec, cmd: &Command) -> Result<T, BadAnswer> {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string();
    serde_json::from_str(&line).map_err(|parse_error| BadAnswer {
        what: cmd.what.clone(),
        line: line.chars().take(500).collect(),
        reproduce: reproduce_line(spec, cmd),
        parse_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fake::Fake;

    fn container() -> Container {
        Container {
            id: "c1".into(),
            spec: ContainerSpec {
                image: "localhost/strata-builder-debian:0123".into(),
                env: vec![],
                network: true,
                mounts: false,
                name_hint: "base".into(),
            },
        }
    }

    #[test]
    fn the_reproduce_line_runs_the_same_argv_in_the_same_image() {
        let cmd = Command::new("x", ["strata-install-root", "http://m/debian", "a b"]);
        assert_eq!(
            reproduce_line(&container().spec, &cmd),
            "podman run --rm --network=host localhost/strata-builder-debian:0123 strata-install-root http://m/debian 'a b'"
        );
    }

    #[tokio::test]
    async fn a_failure_carries_what_the_exit_code_the_tail_and_the_paste_line() {
        let fake = Fake::default();
        fake.exec_answers.lock().unwrap().push_back(ExecOutput {
            exit_code: 100,
            stdout: vec![],
            tail: vec!["E: something broke".into()],
        });
        let err = run(
            &fake,
            &container(),
            &Command::new("installing packages", ["strata-install-root"]),
        )
        .await
        .unwrap_err();
        let failed = err.downcast_ref::<Failed>().expect("a Failed error");
        assert_eq!((failed.exit_code, failed.tail.as_str()), (100, "E: something broke"));
        let text = err.to_string();
        assert!(text.starts_with("installing packages failed (exit code 100)"), "{text}");
        assert!(
            text.contains("podman run --rm --network=host localhost/strata-builder-debian:0123 strata-install-root"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn answers_are_json_on_the_last_line() {
        #[derive(serde::Deserialize, Debug, PartialEq)]
        struct A {
            version: String,
        }
        let fake = Fake::default();
        fake.exec_answers.lock().unwrap().push_back(ExecOutput {
            exit_code: 0,
            stdout: b"{\"version\":\"6.12\"}\n\n".to_vec(),
            tail: vec![],
        });
        fake.exec_answers.lock().unwrap().push_back(ExecOutput {
            exit_code: 0,
            stdout: b"STRATA_KERNEL_VERSION=6.12\n".to_vec(),
            tail: vec![],
        });
        let cmd = Command::new("fetching the kernel", ["strata-kernel-fetch"]);
        let a: A = run_json(&fake, &container(), &cmd).await.unwrap();
        assert_eq!(a, A { version: "6.12".into() });
        let err = run_json::<_, A>(&fake, &container(), &cmd)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("fetching the kernel: its answer is not the JSON") && err.contains("STRATA_KERNEL_VERSION"),
            "{err}"
        );
    }
}
