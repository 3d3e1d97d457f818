//! Blob transfers: existence check, cross-repository mount, monolithic and chunked upload,
//! and downloads streamed into the store that resume with `Range` after a break.

use std::io::Write as _;

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, HeaderValue, LOCATION, RANGE};
use reqwest::{Method, Response, StatusCode};
use tokio::sync::mpsc;
use url::Url;

use super::Error;
use super::auth::{self, Scope};
use super::client::{Body, Client, expect};
use crate::digest::Digest;
use crate::store::{self, Descriptor, Store};

/// Free space a download leaves in the store's file system, at least: 256 MiB.
pub const FREE_SPACE_RESERVE: u64 = 256 << 20;

/// How a blob came to be in the target repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPushed {
    /// It was there already (`HEAD` answered 200): nothing was sent.
    Existed,
    /// The registry mounted it from another repository: nothing was sent.
    Mounted,
    /// It was uploaded.
    Uploaded,
}

impl Client {
    /// `HEAD` a blob: its size if the repository has it.
    pub async fn blob_size(&self, repository: &str, digest: &Digest) -> Result<Option<u64>, Error> {
        self.head_blob(repository, digest, &vec![auth::repo_scope(repository, false)])
            .await
    }

    async fn head_blob(&self, repository: &str, digest: &Digest, scope: &Scope) -> Result<Option<u64>, Error> {
        let url = self.url(&format!("/v2/{repository}/blobs/{digest}"));
        let resp = self
            .send(Method::HEAD, url, HeaderMap::new(), Body::Empty, scope, true)
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = expect(resp, &Method::HEAD, &[StatusCode::OK]).await?;
        Ok(Some(resp.content_length().unwrap_or(0)))
    }

    /// Make the blob `desc` (from `store`) exist in `repository`: nothing is sent when it is
    /// there already or can be mounted from one of the `mount_from` repositories of the same
    /// registry; otherwise it is uploaded, in chunks above the size threshold. A failed
    /// upload is restarted (bounded) when the failure is transient.
    pub async fn push_blob(
        &self,
        store: &Store,
        repository: &str,
        desc: &Descriptor,
        mount_from: &[String],
    ) -> Result<BlobPushed, Error> {
        let digest = &desc.digest;
        let path = store.blob_path(digest);
        let local = std::fs::metadata(&path).map_err(|_| store::Error::Missing {
            root: store.root().to_path_buf(),
            digest: digest.clone(),
        })?;
        if local.is_dir() {
            return Err(store::Error::NotABlob { path }.into());
        }
        if local.len() != desc.size {
            return Err(store::Error::SizeMismatch {
                digest: digest.clone(),
                expected: desc.size,
                found: local.len(),
            }
            .into());
        }
        let mut scope = vec![auth::repo_scope(repository, true)];
        scope.extend(
            mount_from
                .iter()
                .filter(|r| *r != repository)
                .map(|r| auth::repo_scope(r, false)),
        );
        if self.head_blob(repository, digest, &scope).await?.is_some() {
            return Ok(BlobPushed::Existed);
        }
        // Mount from the first candidate repository that has the blob. A registry that
        // cannot mount answers 202 and opens an ordinary upload instead, which is used.
        let mut session = None;
        let mut source = None;
        for from in mount_from.iter().filter(|r| *r != repository) {
            if self.head_blob(from, digest, &scope).await?.is_some() {
                source = Some(from);
                break;
            }
        }
        if let Some(from) = source {
            let mut url = self.url(&format!("/v2/{repository}/blobs/uploads/"));
            url.query_pairs_mut()
                .append_pair("mount", &digest.to_string())
                .append_pair("from", from);
            let resp = self
                .send(Method::POST, url.clone(), HeaderMap::new(), Body::Empty, &scope, true)
                .await?;
            let resp = expect(resp, &Method::POST, &[StatusCode::CREATED, StatusCode::ACCEPTED]).await?;
            if resp.status() == StatusCode::CREATED {
                tracing::debug!(%digest, from, repository, "mounted");
                return Ok(BlobPushed::Mounted);
            }
            session = Some(location(self, &resp, &Method::POST, &url)?);
        }
        let retries = self.options().retries;
        let mut attempt = 0;
        loop {
            let start = match session.take() {
                Some(url) => url,
                None => self.start_upload(repository, &scope).await?,
            };
            let result = if desc.size > self.options().chunk_threshold {
                self.upload_chunked(start, &path, desc, &scope).await
            } else {
                self.upload_monolithic(start, &path, desc, &scope).await
            };
            match result {
                Ok(()) => return Ok(BlobPushed::Uploaded),
                Err(e) if e.is_transient() && attempt < retries => {
                    attempt += 1;
                    tracing::warn!(%digest, repository, attempt, "upload failed ({e}); starting it again");
                    tokio::time::sleep(self.backoff(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn start_upload(&self, repository: &str, scope: &Scope) -> Result<Url, Error> {
        let url = self.url(&format!("/v2/{repository}/blobs/uploads/"));
        let resp = self
            .send(Method::POST, url.clone(), HeaderMap::new(), Body::Empty, scope, true)
            .await?;
        let resp = expect(resp, &Method::POST, &[StatusCode::ACCEPTED]).await?;
        location(self, &resp, &Method::POST, &url)
    }

    async fn upload_monolithic(
        &self,
        mut url: Url,
        path: &std::path::Path,
        desc: &Descriptor,
        scope: &Scope,
    ) -> Result<(), Error> {
        url.query_pairs_mut().append_pair("digest", &desc.digest.to_string());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        let body = Body::File {
            path: path.to_path_buf(),
            offset: 0,
            len: desc.size,
        };
        let resp = self.send(Method::PUT, url, headers, body, scope, false).await?;
        expect(resp, &Method::PUT, &[StatusCode::CREATED]).await.map(drop)
    }

    async fn upload_chunked(
        &self,
        mut url: Url,
        path: &std::path::Path,
        desc: &Descriptor,
        scope: &Scope,
    ) -> Result<(), Error> {
        let chunk = self.options().chunk_size.max(1);
        let mut offset = 0;
        while offset < desc.size {
            let len = chunk.min(desc.size - offset);
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            let range = format!("{offset}-{}", offset + len - 1);
            headers.insert(CONTENT_RANGE, HeaderValue::from_str(&range).expect("digits and a dash"));
            let body = Body::File {
                path: path.to_path_buf(),
                offset,
                len,
            };
            let resp = self
                .send(Method::PATCH, url.clone(), headers, body, scope, false)
                .await?;
            let resp = expect(resp, &Method::PATCH, &[StatusCode::ACCEPTED]).await?;
            url = location(self, &resp, &Method::PATCH, &url)?;
            offset += len;
        }
        url.query_pairs_mut().append_pair("digest", &desc.digest.to_string());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
        let resp = self
            .send(Method::PUT, url, headers, Body::Bytes(Bytes::new()), scope, false)
            .await?;
        expect(resp, &Method::PUT, &[StatusCode::CREATED]).await.map(drop)
    }

    /// Download the blob `desc` from `repository` into `store`, verified against its digest
    /// and size. After a broken connection or a short body the download continues from
    /// where it stopped with a `Range` request (bounded); a registry that ignores `Range`
    /// makes it start over. Returns the bytes received (0 when the store had the blob).
    pub async fn pull_blob(&self, store: &Store, repository: &str, desc: &Descriptor) -> Result<u64, Error> {
        if store.has_blob(&desc.digest) {
            return Ok(0);
        }
        let name = format!("{}/{repository}@{}", self.registry(), desc.digest);
        self.check_room(store, desc, &name)?;
        let mut sink = Sink::spawn(store.clone());
        match self.download(&mut sink, repository, desc, &name).await {
            Ok(received) => match sink.commit(&desc.digest, desc.size).await {
                Ok(()) => Ok(received),
                Err(store::Error::DigestMismatch { expected, found, .. }) => Err(Error::DigestMismatch {
                    reference: name,
                    expected,
                    found,
                }),
                Err(store::Error::SizeMismatch { expected, found, .. }) => Err(Error::SizeMismatch {
                    reference: name,
                    expected,
                    found,
                }),
                Err(e) => Err(e.into()),
            },
            Err(e) => {
                sink.discard().await;
                Err(e)
            }
        }
    }

    /// Refuse a blob whose descriptor claims more than [`ClientOptions::max_blob_size`]
    /// or than the store's file system has free (less [`FREE_SPACE_RESERVE`]), before a
    /// byte of it is written.
    ///
    /// [`ClientOptions::max_blob_size`]: super::ClientOptions::max_blob_size
    fn check_room(&self, store: &Store, desc: &Descriptor, name: &str) -> Result<(), Error> {
        let limit = self.options().max_blob_size;
        if desc.size > limit {
            return Err(Error::BlobTooLarge {
                reference: name.to_string(),
                size: desc.size,
                limit,
            });
        }
        let dir = store.root().join("blobs/sha256");
        let fs = nix::sys::statvfs::statvfs(&dir).map_err(|e| store::Error::Io {
            path: dir.clone(),
            source: e.into(),
        })?;
        let free = fs.blocks_available().saturating_mul(fs.fragment_size());
        if desc.size.saturating_add(FREE_SPACE_RESERVE) > free {
            return Err(Error::NoSpace {
                reference: name.to_string(),
                size: desc.size,
                free,
                reserve: FREE_SPACE_RESERVE,
                store: store.root().to_path_buf(),
            });
        }
        Ok(())
    }

    async fn download(&self, sink: &mut Sink, repository: &str, desc: &Descriptor, name: &str) -> Result<u64, Error> {
        let url = self.url(&format!("/v2/{repository}/blobs/{}", desc.digest));
        let scope = vec![auth::repo_scope(repository, false)];
        let (mut have, mut total, mut breaks) = (0u64, 0u64, 0u32);
        loop {
            let mut headers = HeaderMap::new();
            if have > 0 {
                headers.insert(RANGE, HeaderValue::from_str(&format!("bytes={have}-")).expect("digits"));
            }
            let resp = self
                .send(Method::GET, url.clone(), headers, Body::Empty, &scope, true)
                .await?;
            let mut resp = expect(resp, &Method::GET, &[StatusCode::OK, StatusCode::PARTIAL_CONTENT]).await?;
            if resp.status() == StatusCode::OK && have > 0 {
                tracing::warn!(name, "the registry ignored the Range request; starting over");
                sink.reset().await?;
                have = 0;
            } else if resp.status() == StatusCode::PARTIAL_CONTENT {
                let start = resp
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(range_start);
                if start != Some(have) {
                    return Err(Error::BadHeader {
                        method: "GET".into(),
                        url: resp.url().to_string(),
                        header: "Content-Range",
                    });
                }
            }
            let broke = loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        let n = chunk.len() as u64;
                        if have + n > desc.size {
                            return Err(Error::SizeMismatch {
                                reference: name.to_string(),
                                expected: desc.size,
                                found: have + n,
                            });
                        }
                        sink.write(chunk).await?;
                        have += n;
                        total += n;
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            let stalled = broke.as_ref().is_some_and(reqwest::Error::is_timeout);
            if have == desc.size {
                return Ok(total);
            }
            breaks += 1;
            if breaks > self.options().retries {
                if stalled {
                    return Err(self.stalled(&Method::GET, &url, breaks));
                }
                return Err(Error::Truncated {
                    reference: name.to_string(),
                    expected: desc.size,
                    received: have,
                    attempts: breaks,
                });
            }
            let why = broke.map_or_else(|| "the body ended early".to_string(), |e| e.to_string());
            tracing::warn!(name, have, size = desc.size, "download broke off ({why}); resuming");
            tokio::time::sleep(self.backoff(breaks)).await;
        }
    }
}

/// The `Location` of an upload answer, resolved against the request URL.
fn location(client: &Client, resp: &Response, method: &Method, url: &Url) -> Result<Url, Error> {
    let bad = || Error::BadHeader {
        method: method.to_string(),
        url: url.to_string(),
        header: "Location",
    };
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?;
    let resolved = url.join(loc).map_err(|_| bad())?;
    // Uploads must stay on the registry (or a host it names absolutely); never downgrade.
    if client.url("/").scheme() == "https" && resolved.scheme() != "https" {
        return Err(bad());
    }
    Ok(resolved)
}

/// `bytes 100-199/200` → 100.
fn range_start(v: &str) -> Option<u64> {
    v.trim().strip_prefix("bytes")?.trim().split('-').next()?.parse().ok()
}

/// The store side of a download: a blocking task that owns a [`store::BlobWriter`],
/// hashing and writing while the network side keeps receiving.
struct Sink {
    tx: Option<mpsc::Sender<Msg>>,
    task: tokio::task::JoinHandle<Result<(), store::Error>>,
}

enum Msg {
    Data(Bytes),
    Reset,
    Commit(Digest, u64),
}

impl Sink {
    fn spawn(store: Store) -> Sink {
        let (tx, mut rx) = mpsc::channel::<Msg>(32);
        let task = tokio::task::spawn_blocking(move || {
            let mut writer = store.blob_writer()?;
            while let Some(msg) = rx.blocking_recv() {
                match msg {
                    Msg::Data(b) => writer.write_all(&b).map_err(|source| store::Error::Io {
                        path: store.root().join("blobs/sha256"),
                        source,
                    })?,
                    // The old writer is dropped: its temporary file goes with it.
                    Msg::Reset => writer = store.blob_writer()?,
                    Msg::Commit(d, n) => return writer.commit(Some((&d, n))).map(drop),
                }
            }
            Ok(())
        });
        Sink { tx: Some(tx), task }
    }

    async fn send(&mut self, msg: Msg) -> Result<(), Error> {
        let tx = self.tx.as_ref().expect("the sink is open until commit or discard");
        if tx.send(msg).await.is_err() {
            // The writer stopped: its error says why.
            self.tx = None;
            let task = &mut self.task;
            return Err(match task.await {
                Ok(Err(e)) => e.into(),
                Ok(Ok(())) => unreachable!("the writer only stops early on an error"),
                Err(join) => std::panic::resume_unwind(join.into_panic()),
            });
        }
        Ok(())
    }

    async fn write(&mut self, data: Bytes) -> Result<(), Error> {
        self.send(Msg::Data(data)).await
    }

    async fn reset(&mut self) -> Result<(), Error> {
        self.send(Msg::Reset).await
    }

    async fn commit(mut self, digest: &Digest, size: u64) -> Result<(), store::Error> {
        if let Some(tx) = self.tx.take()
            && tx.send(Msg::Commit(digest.clone(), size)).await.is_err()
        {
            // The writer already stopped; the task's result below says why.
            tracing::debug!(%digest, "blob writer stopped before the commit");
        }
        match self.task.await {
            Ok(r) => r,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    /// Drop the partial blob and wait until its temporary file is gone.
    async fn discard(mut self) {
        self.tx = None;
        match self.task.await {
            // Any write error is moot: the download already failed and is reported.
            Ok(_) => {}
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_range_starts() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/*"), Some(0));
        assert_eq!(range_start("items 1-2"), None);
    }
}
