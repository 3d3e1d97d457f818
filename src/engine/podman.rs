//! podman through its Docker-compatible REST API (bollard).
//!
//! Socket discovery, in order: `CONTAINER_HOST`, `DOCKER_HOST` (an explicitly named socket
//! must answer, or it is an error), the rootless socket `$XDG_RUNTIME_DIR/podman/podman.sock`,
//! the rootful `/run/podman/podman.sock`. If none answers, strata starts
//! `podman system service` on a private socket and stops it when the [`Podman`] is dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder,
    RemoveContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tracing::{debug, info};

use super::{ContainerSpec, Engine, Error, ExecOutput, Tail};

/// A connection to podman's API, possibly owning the service process.
pub struct Podman {
    docker: Docker,
    /// The service strata started, if it did: dropping it stops the service.
    _service: Option<Service>,
}

struct Service {
    child: Child,
    dir: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        crate::interrupt::forget_child(self.child.id());
        // SIGTERM lets podman clean up its socket; wait so no zombie is left.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn api(operation: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let operation = operation.into();
    move |e| Error::Api {
        operation,
        source: Box::new(e),
    }
}

/// Where a socket candidate came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The environment variable that named it, if any (explicit candidates must answer).
    pub var: Option<&'static str>,
    /// `unix:///path` or a bare path.
    pub socket: String,
}

/// The sockets to try, in order, from the environment (pure; unit-tested).
pub fn candidates(env: impl Fn(&str) -> Option<String>, uid: u32) -> Vec<Candidate> {
    let mut out = Vec::new();
    for var in ["CONTAINER_HOST", "DOCKER_HOST"] {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            out.push(Candidate {
                var: Some(var),
                socket: v,
            });
            // An explicit setting is the user's choice: don't look further.
            return out;
        }
    }
    if let Some(dir) = env("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        out.push(Candidate {
            var: None,
            socket: format!("unix://{dir}/podman/podman.sock"),
        });
    }
    if uid == 0 {
        out.push(Candidate {
            var: None,
            socket: "unix:///run/podman/podman.sock".into(),
        });
    }
    out
}

impl Podman {
    /// Find an answering API socket or start a private podman service.
    pub async fn connect() -> Result<Podman, Error> {
        let uid = nix::unistd::getuid().as_raw();
        for c in candidates(|k| std::env::var(k).ok(), uid) {
            match try_connect(&c.socket).await {
                Ok(docker) => {
                    info!(socket = %c.socket, "using the container API");
                    return Ok(Podman { docker, _service: None });
                }
                Err(reason) => {
                    if let Some(var) = c.var {
                        return Err(Error::SocketDead {
                            var,
                            socket: c.socket,
                            reason,
                        });
                    }
                    debug!(socket = %c.socket, %reason, "socket does not answer");
                }
            }
        }
        Self::start_service().await
    }

    async fn start_service() -> Result<Podman, Error> {
        let dir = tempfile::Builder::new()
            .prefix("strata-podman-")
            .tempdir()
            .map_err(|e| Error::Api {
                operation: "creating a directory for the podman socket".into(),
                source: Box::new(e),
            })?
            .keep();
        let socket = format!("unix://{}", dir.join("podman.sock").display());
        let stderr_path = dir.join("service.log");
        let stderr = std::fs::File::create(&stderr_path).map_err(|e| Error::Api {
            operation: format!("creating {}", stderr_path.display()),
            source: Box::new(e),
        })?;
        info!(%socket, "no container API socket answers; starting `podman system service`");
        let child = match Command::new("podman")
            .args(["system", "service", "--time=0", &socket])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
        {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::PodmanMissing);
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::Api {
                    operation: "starting `podman system service`".into(),
                    source: Box::new(e),
                });
            }
        };
        crate::interrupt::register_child(child.id(), &dir);
        let mut service = Service { child, dir };
        let seconds = 20;
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            if let Ok(docker) = try_connect(&socket).await {
                return Ok(Podman {
                    docker,
                    _service: Some(service),
                });
            }
            let exited = matches!(service.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                return Err(Error::ServiceStart {
                    socket,
                    seconds,
                    stderr: stderr.trim().to_string(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn try_connect(socket: &str) -> Result<Docker, String> {
    let path = socket.strip_prefix("unix://").unwrap_or(socket);
    if socket.contains("://") && !socket.starts_with("unix://") {
        return Err(format!("only unix:// sockets are supported, not `{socket}`"));
    }
    if !Path::new(path).exists() {
        return Err(format!("{path} does not exist"));
    }
    let docker = Docker::connect_with_unix(path, 600, bollard::API_DEFAULT_VERSION).map_err(|e| e.to_string())?;
    let docker = tokio::time::timeout(Duration::from_secs(5), docker.negotiate_version())
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(5), docker.ping())
        .await
        .map_err(|_| "no answer to ping within 5 s".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(docker)
}

impl Engine for Podman {
    async fn image_exists(&self, tag: &str) -> Result<bool, Error> {
        match self.docker.inspect_image(tag).await {
            Ok(_) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
            Err(e) => Err(api(format!("inspecting image {tag}"))(e)),
        }
    }

    async fn build_image(&self, tag: &str, containerfile: &str, context_tar: Vec<u8>) -> Result<(), Error> {
        let opts = BuildImageOptionsBuilder::default()
            .dockerfile(containerfile)
            .t(tag)
            .rm(true)
            .forcerm(true)
            .networkmode("host")
            .build();
        let mut stream = self
            .docker
            .build_image(opts, None, Some(bollard::body_full(context_tar.into())));
        let mut tail = Tail::default();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| Error::ImageBuild {
                tag: tag.into(),
                message: e.to_string(),
                tail: String::new(),
            })?;
            if let Some(s) = info.stream {
                for line in tail.push(s.as_bytes()) {
                    debug!(target: "strata::builder", "{line}");
                }
            }
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(Error::ImageBuild {
                    tag: tag.into(),
                    message: err,
                    tail: tail.finish().join("\n"),
                });
            }
        }
        // podman's compat endpoint reports some failures only by not producing the image.
        if !self.image_exists(tag).await? {
            return Err(Error::ImageBuild {
                tag: tag.into(),
                message: "the build ended without producing the image".into(),
                tail: tail.finish().join("\n"),
            });
        }
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, Error> {
        let suffix: String = format!("{:08x}", rand_suffix());
        let name = format!("strata-{}-{suffix}", spec.name_hint);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: Some(vec!["sleep".into(), "infinity".into()]),
            env: Some(spec.env.clone()),
            labels: Some([("io.strata.build".to_string(), "1".to_string())].into()),
            host_config: Some(HostConfig {
                network_mode: Some(if spec.network { "host".into() } else { "none".into() }),
                cap_add: spec.mounts.then(|| vec!["SYS_ADMIN".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = self
            .docker
            .create_container(Some(opts), body)
            .await
            .map_err(api(format!("creating container from {}", spec.image)))?;
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let _ = self.remove(&created.id).await;
            return Err(api(format!("starting container {name}"))(e));
        }
        debug!(container = %name, id = %created.id, "container started");
        Ok(created.id)
    }

    async fn exec(&self, id: &str, argv: &[String]) -> Result<ExecOutput, Error> {
        let what = || format!("running `{}` in container {}", argv.join(" "), short(id));
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(argv.to_vec()),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..Default::default()
                },
            )
            .await
            .map_err(api(what()))?;
        let mut out = ExecOutput::default();
        let mut tail = Tail::default();
        if let StartExecResults::Attached { mut output, .. } =
            self.docker.start_exec(&exec.id, None).await.map_err(api(what()))?
        {
            while let Some(msg) = output.next().await {
                let msg = msg.map_err(api(what()))?;
                let (bytes, is_stdout) = match msg {
                    bollard::container::LogOutput::StdOut { message } => (message, true),
                    bollard::container::LogOutput::StdErr { message } => (message, false),
                    bollard::container::LogOutput::Console { message } => (message, true),
                    bollard::container::LogOutput::StdIn { .. } => continue,
                };
                if is_stdout {
                    out.stdout.extend_from_slice(&bytes);
                }
                for line in tail.push(&bytes) {
                    debug!(target: "strata::container", "{line}");
                }
            }
        }
        let inspect = self.docker.inspect_exec(&exec.id).await.map_err(api(what()))?;
        out.exit_code = inspect.exit_code.unwrap_or(-1);
        out.tail = tail.finish();
        Ok(out)
    }

    async fn put_archive(&self, id: &str, dest_dir: &str, tar: Vec<u8>) -> Result<(), Error> {
        let opts = UploadToContainerOptionsBuilder::default().path(dest_dir).build();
        self.docker
            .upload_to_container(id, Some(opts), bollard::body_full(tar.into()))
            .await
            .map_err(api(format!("copying files into {dest_dir} of container {}", short(id))))
    }

    async fn get_archive(&self, id: &str, path: &str) -> Result<Vec<u8>, Error> {
        let opts = DownloadFromContainerOptionsBuilder::default().path(path).build();
        let mut stream = self.docker.download_from_container(id, Some(opts));
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(api(format!("copying {path} out of container {}", short(id))))?);
        }
        Ok(out)
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        let opts = RemoveContainerOptionsBuilder::default().force(true).v(true).build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(api(format!("removing container {}", short(id)))(e)),
        }
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A name suffix that differs between concurrent builds (names must be unique in podman).
fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    h.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| pairs.iter().find(|(key, _)| *key == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn explicit_socket_wins_and_stops_the_search() {
        let c = candidates(
            env(&[
                ("CONTAINER_HOST", "unix:///x.sock"),
                ("XDG_RUNTIME_DIR", "/run/user/1000"),
            ]),
            1000,
        );
        assert_eq!(
            c,
            [Candidate {
                var: Some("CONTAINER_HOST"),
                socket: "unix:///x.sock".into()
            }]
        );
        let c = candidates(env(&[("DOCKER_HOST", "unix:///d.sock")]), 0);
        assert_eq!(c[0].var, Some("DOCKER_HOST"));
    }

    #[test]
    fn rootless_then_rootful_defaults() {
        let c = candidates(env(&[("XDG_RUNTIME_DIR", "/run/user/1000")]), 1000);
        assert_eq!(
            c,
            [Candidate {
                var: None,
                socket: "unix:///run/user/1000/podman/podman.sock".into()
            }]
        );
        let c = candidates(env(&[]), 0);
        assert_eq!(
            c,
            [Candidate {
                var: None,
                socket: "unix:///run/podman/podman.sock".into()
            }]
        );
    }
}
