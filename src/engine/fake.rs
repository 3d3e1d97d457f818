//! A recording fake engine for unit tests: it records every call and answers `exec` and
//! `get_archive` from scripted responses.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use super::{ContainerSpec, Engine, Error, ExecOutput};

/// One recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    ImageExists(String),
    BuildImage(String),
    Create(ContainerSpec),
    Exec(Vec<String>),
    PutArchive(String),
    GetArchive(String),
    Remove(String),
}

/// See the module documentation.
#[derive(Default)]
pub struct Fake {
    pub calls: Mutex<Vec<Call>>,
    /// Images that exist.
    pub images: Mutex<Vec<String>>,
    /// Answers for `exec`, in order; a missing answer is exit code 0 with no output.
    pub exec_answers: Mutex<VecDeque<ExecOutput>>,
    /// Answers for `get_archive` by path.
    pub archives: Mutex<HashMap<String, Vec<u8>>>,
}

impl Fake {
    /// The calls so far.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("not poisoned").clone()
    }

    fn record(&self, c: Call) {
        self.calls.lock().expect("not poisoned").push(c);
    }
}

impl Engine for Fake {
    async fn image_exists(&self, tag: &str) -> Result<bool, Error> {
        self.record(Call::ImageExists(tag.into()));
        Ok(self.images.lock().expect("not poisoned").iter().any(|i| i == tag))
    }

    async fn build_image(&self, tag: &str, _containerfile: &str, _context_tar: Vec<u8>) -> Result<(), Error> {
        self.record(Call::BuildImage(tag.into()));
        self.images.lock().expect("not poisoned").push(tag.into());
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<String, Error> {
        self.record(Call::Create(spec.clone()));
        Ok("fake0000".into())
    }

    async fn exec(&self, _id: &str, argv: &[String]) -> Result<ExecOutput, Error> {
        self.record(Call::Exec(argv.to_vec()));
        Ok(self
            .exec_answers
            .lock()
            .expect("not poisoned")
            .pop_front()
            .unwrap_or_default())
    }

    async fn put_archive(&self, _id: &str, dest_dir: &str, _tar: Vec<u8>) -> Result<(), Error> {
        self.record(Call::PutArchive(dest_dir.into()));
        Ok(())
    }

    async fn get_archive(&self, _id: &str, path: &str) -> Result<Vec<u8>, Error> {
        self.record(Call::GetArchive(path.into()));
        self.archives
            .lock()
            .expect("not poisoned")
            .get(path)
            .cloned()
            .ok_or_else(|| Error::Api {
                operation: format!("fake: no archive scripted for {path}"),
                source: "not scripted".into(),
            })
    }

    async fn remove(&self, id: &str) -> Result<(), Error> {
        self.record(Call::Remove(id.into()));
        Ok(())
    }
}
