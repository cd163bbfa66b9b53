//! The admin API: JSON lines over the Unix socket `DIR/admin.sock` (mode 0600, so only the
//! node's own user can administer it). The CLI is one client, an operator's scripts can be
//! others; applications making sharing calls use the gateway ([`crate::gateway`]) instead, which
//! gives them none of these powers.
//!
//! Protocol: the client writes one [`api::Request`] as a JSON line; the node answers with one
//! [`api::Reply`] line (`{"ok":true,"result":…}` or `{"ok":false,"error":"…"}`) and the
//! connection may carry further requests. The `result` of each request is exactly what the
//! matching CLI command prints with `--json`.

pub mod api;
pub mod client;
mod dispatch;
mod server;

pub use server::{bind, serve};
