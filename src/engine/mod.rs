//! The container engine, in strata's own verbs.
//!
//! One real implementation, [`podman::Podman`] (podman's Docker-compatible REST API through
//! bollard), and a recording fake for unit tests ([`fake::Fake`]). Build steps only see this
//! trait: files go in and out of containers as tar streams, commands run through `exec`.

#[cfg(test)]
pub mod fake;
pub mod podman;
pub mod run;

use std::collections::VecDeque;
use std::future::Future;

/// What a build container is created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Image reference (a builder image tag).
    pub image: String,
    /// `KEY=value` environment entries.
    pub env: Vec<String>,
    /// Whether the container needs the network (package downloads). Host networking is used:
    /// it works the same rootless and rootful and needs no extra setup.
    pub network: bool,
    /// Whether the container may mount file systems (`CAP_SYS_ADMIN`): the package manager
    /// mounts /proc in the build root, which maintainer scripts need (forky's
    /// `systemd-tmpfiles --create` refuses to run without it). Rootless, the capability holds
    /// only inside podman's user namespace.
    pub mounts: bool,
    /// Shown in `podman ps` (a random suffix is added).
    pub name_hint: String,
}

/// The result of a command run in a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    /// Everything the command wrote to stdout.
    pub stdout: Vec<u8>,
    /// The last lines of stdout and stderr, interleaved as they came, for error messages.
    pub tail: Vec<String>,
}

impl ExecOutput {
    /// The tail, one line per line, for an error message.
    pub fn tail_text(&self) -> String {
        self.tail.join("\n")
    }
}

/// How many output lines an [`ExecOutput`] keeps for error messages.
pub const TAIL_LINES: usize = 40;

/// Collects output lines into a bounded tail.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
    partial: String,
}

impl Tail {
    /// Add a chunk of output; complete lines are returned (for logging) and kept in the tail.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<String> {
        self.partial.push_str(&String::from_utf8_lossy(chunk));
        let mut done = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            let line = line.trim_end_matches(['\n', '\r']).to_string();
            self.keep(line.clone());
            done.push(line);
        }
        done
    }

    fn keep(&mut self, line: String) {
        if self.lines.len() == TAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    /// The kept lines (including an unterminated last line).
    pub fn finish(mut self) -> Vec<String> {
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.keep(last);
        }
        self.lines.into()
    }
}

/// Engine errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(
        "podman is not installed (not found on PATH) and no container API socket answers; install podman (see ci/setup.sh) or point CONTAINER_HOST at a running API service"
    )]
    PodmanMissing,
    #[error(
        "{var}={socket} does not answer: {reason}. Start the service (`podman system service --time=0 {socket}`) or unset {var} to let strata start its own"
    )]
    SocketDead {
        var: &'static str,
        socket: String,
        reason: String,
    },
    #[error("started `podman system service` on {socket}, but it did not answer within {seconds} s: {stderr}")]
    ServiceStart {
        socket: String,
        seconds: u64,
        stderr: String,
    },
    #[error("container engine: {operation}")]
    Api {
        operation: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("building image {tag} failed: {message}\n{tail}")]
    ImageBuild { tag: String, message: String, tail: String },
}

/// The container engine operations a build uses.
pub trait Engine: Send + Sync {
    /// Whether an image with this tag exists locally.
    fn image_exists(&self, tag: &str) -> impl Future<Output = Result<bool, Error>> + Send;
    /// Build `containerfile` (a path inside `context_tar`) and tag it `tag`.
    fn build_image(
        &self,
        tag: &str,
        containerfile: &str,
        context_tar: Vec<u8>,
    ) -> impl Future<Output = Result<(), Error>> + Send;
    /// Create and start a long-lived container (it runs `sleep infinity`); returns its id.
    fn create(&self, spec: &ContainerSpec) -> impl Future<Output = Result<String, Error>> + Send;
    /// Run `argv` in the container; output is logged at debug level as it streams.
    fn exec(&self, id: &str, argv: &[String]) -> impl Future<Output = Result<ExecOutput, Error>> + Send;
    /// Unpack `tar` into `dest_dir` inside the container.
    fn put_archive(&self, id: &str, dest_dir: &str, tar: Vec<u8>) -> impl Future<Output = Result<(), Error>> + Send;
    /// A tar stream of `path` inside the container (its last component is the top entry).
    fn get_archive(&self, id: &str, path: &str) -> impl Future<Output = Result<Vec<u8>, Error>> + Send;
    /// Stop and remove the container.
    fn remove(&self, id: &str) -> impl Future<Output = Result<(), Error>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_and_partials() {
        let mut t = Tail::default();
        let mut logged = Vec::new();
        for i in 0..100 {
            logged.extend(t.push(format!("line {i}\n").as_bytes()));
        }
        logged.extend(t.push(b"half"));
        logged.extend(t.push(b" line\nend"));
        assert_eq!(logged.len(), 101);
        let kept = t.finish();
        assert_eq!(kept.len(), TAIL_LINES);
        assert_eq!(kept.last().unwrap(), "end");
        assert_eq!(kept[kept.len() - 2], "half line");
    }
}
