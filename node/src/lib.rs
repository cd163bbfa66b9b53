//! # deltafed node
//!
//! Everything a running member needs: its data dir and key, the roster in force, the RocksDB
//! stores, the libp2p swarm, and the admin API the CLI talks to. The CLI is a thin layer over
//! this crate; this crate parses no arguments and installs no log subscriber.

pub mod access;
pub mod admin;
pub mod apps;
pub mod blobs;
pub mod catalog;
pub mod config;
pub mod dashboard;
pub mod datadir;
pub mod datapath;
pub mod durable;
pub mod exchange;
pub mod format;
pub mod gateway;
pub mod identity;
pub mod keyfile;
pub mod keyindex;
pub mod metrics;
pub mod net;
pub mod node;
pub mod outbox;
pub mod policy;
pub mod provenance;
pub mod roles;
pub mod rosterfile;
pub mod rpc;
pub mod secret;
pub mod sources;
pub mod store;
pub mod users;

pub use config::Config;
pub use datadir::DataDir;
pub use libp2p::{Multiaddr, PeerId};
