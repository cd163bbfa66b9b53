//! Serves the admin socket: one task per client connection, each request dispatched to the node.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::api::{MAX_REQUEST_LINE, Reply, Request};
use crate::node::Node;

/// Binds the socket with mode 0600. It is bound inside a fresh directory only this user can
/// enter, given its mode there, and only then renamed into place: no one else can connect in
/// the moment between bind and chmod. A leftover socket file is replaced: the caller holds the
/// data dir lock, so no other node can be using it.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let private = tempfile::Builder::new()
        .prefix(".admin-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(parent)?;
    let staged = private.path().join("admin.sock");
    let listener = UnixListener::bind(&staged)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
    std::fs::rename(&staged, path)?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, node: Node, tasks: TaskTracker, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let node = node.clone();
                    let shutdown = shutdown.clone();
                    tasks.spawn(async move { connection(stream, node, shutdown).await });
                }
                Err(e) => tracing::warn!(error = %e, "admin socket accept failed"),
            },
        }
    }
}

async fn connection(stream: UnixStream, node: Node, shutdown: CancellationToken) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = String::new();
    loop {
        line.clear();
        // A line longer than the limit is cut there, fails to parse, and gets an error reply.
        let mut limited = (&mut lines).take(MAX_REQUEST_LINE as u64);
        let n = tokio::select! {
            () = shutdown.cancelled() => return,
            n = limited.read_line(&mut line) => n,
        };
        match n {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(error = %e, "admin connection read failed");
                return;
            }
        }
        if !line.ends_with('\n') && line.len() >= MAX_REQUEST_LINE {
            let reply = format!("{{\"ok\":false,\"error\":\"admin request longer than {MAX_REQUEST_LINE} bytes\"}}\n");
            let _ = write.write_all(reply.as_bytes()).await;
            return;
        }
        let reply = match serde_json::from_str::<Request>(&line) {
            Ok(req) => {
                // Long operations report progress on lines of their own before the reply.
                let (tx, mut rx) = tokio::sync::mpsc::channel(64);
                let op = node.admin(req, Some(tx));
                tokio::pin!(op);
                loop {
                    tokio::select! {
                        res = &mut op => break match res {
                            Ok(result) => Reply { ok: true, progress: None, result: Some(result), error: None, kind: None },
                            Err(e) => Reply { ok: false, progress: None, result: None, kind: Some(e.kind().into()), error: Some(e.to_string()) },
                        },
                        Some(p) = rx.recv() => {
                            let line = Reply { ok: true, progress: Some(p), result: None, error: None, kind: None };
                            if write_line(&mut write, &line).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            Err(e) => Reply {
                ok: false,
                progress: None,
                result: None,
                error: Some(format!("malformed admin request: {e}")),
                kind: Some("invalid".into()),
            },
        };
        if write_line(&mut write, &reply).await.is_err() {
            return;
        }
    }
}

async fn write_line(write: &mut tokio::net::unix::OwnedWriteHalf, reply: &Reply) -> std::io::Result<()> {
    let mut out = match serde_json::to_string(reply) {
        Ok(s) => s,
        Err(e) => format!("{{\"ok\":false,\"error\":\"cannot encode reply: {e}\"}}"),
    };
    out.push('\n');
    write.write_all(out.as_bytes()).await
}
