//! A blocking admin client (the CLI needs no async runtime to ask the node something).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::api::{Progress, Reply, Request};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no node is running for {dir} (no answer on {sock}); start one with `deltafed run --data-dir {dir}`")]
    NotRunning { dir: String, sock: String },
    #[error("talking to the node at {sock} failed: {source}")]
    Io { sock: String, source: std::io::Error },
    #[error("the node sent a reply this client does not understand: {0}")]
    BadReply(String),
    /// The node refused or failed the request; the message is the node's.
    #[error("{0}")]
    Node(String),
}

pub struct Client {
    stream: BufReader<UnixStream>,
    sock: PathBuf,
}

impl Client {
    /// Connects to the node whose data dir is `dir`.
    pub fn connect(dir: &Path, sock: &Path) -> Result<Client, Error> {
        let stream = UnixStream::connect(sock)
            .map_err(|_| Error::NotRunning { dir: dir.display().to_string(), sock: sock.display().to_string() })?;
        Ok(Client { stream: BufReader::new(stream), sock: sock.to_path_buf() })
    }

    /// Bounds how long one call may wait for the node (None: wait as long as it takes).
    pub fn set_timeout(&mut self, t: Option<Duration>) -> Result<(), Error> {
        self.stream.get_ref().set_read_timeout(t).map_err(|source| self.io(source))
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io { sock: self.sock.display().to_string(), source }
    }

    /// Sends one request and returns its result, decoded as `T`.
    pub fn call<T: DeserializeOwned>(&mut self, req: &Request) -> Result<T, Error> {
        let value = self.call_value(req)?;
        serde_json::from_value(value).map_err(|e| Error::BadReply(e.to_string()))
    }

    pub fn call_value(&mut self, req: &Request) -> Result<serde_json::Value, Error> {
        self.call_with_progress(req, |_| {})
    }

    /// Like [`Client::call_value`], calling `on_progress` for each progress line before the result.
    pub fn call_with_progress(
        &mut self,
        req: &Request,
        mut on_progress: impl FnMut(Progress),
    ) -> Result<serde_json::Value, Error> {
        let mut line = serde_json::to_string(req).map_err(|e| Error::BadReply(e.to_string()))?;
        line.push('\n');
        self.stream.get_mut().write_all(line.as_bytes()).map_err(|e| self.io(e))?;
        let reply = loop {
            let mut answer = String::new();
            let n = self.stream.read_line(&mut answer).map_err(|e| self.io(e))?;
            if n == 0 {
                return Err(Error::BadReply("the node closed the connection without answering".into()));
            }
            let reply: Reply = serde_json::from_str(&answer).map_err(|e| Error::BadReply(e.to_string()))?;
            match reply.progress {
                Some(p) => on_progress(p),
                None => break reply,
            }
        };
        match (reply.ok, reply.result, reply.error) {
            (true, Some(v), _) => Ok(v),
            (true, None, _) => Ok(serde_json::Value::Null),
            (false, _, Some(e)) => Err(Error::Node(e)),
            (false, _, None) => Err(Error::Node("the node refused the request without a reason".into())),
        }
    }
}
