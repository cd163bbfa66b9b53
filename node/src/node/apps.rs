//! Local applications (`deltafed app ...`): register, list, rotate, remove, and the look-up the
//! gateway makes on every call. The registry itself is [`crate::apps`].

use std::sync::Arc;
use std::time::Duration;

use deltafed_protocol::DatasetRef;
use tokio_util::sync::CancellationToken;

use super::{Error, Node, now};
use crate::apps::{self, App, Issued};

/// How often call counters are written (and at shutdown).
const FLUSH_EVERY: Duration = Duration::from_secs(1);

fn app_error(e: apps::Error) -> Error {
    use apps::Error as E;
    match e {
        E::BadName(_) | E::Exists(_) => Error::invalid("NAME", e.to_string()),
        E::Unknown(_) => Error::not_found(e.to_string()),
        E::BadRate(_) => Error::invalid("--rate", e.to_string()),
        E::TooManyDatasets(_) => Error::invalid("--datasets", e.to_string()),
        E::TooMany => Error::refused(e.to_string()),
        E::Corrupt { .. } | E::Random(_) | E::Store(_) => Error::internal("the application registry", e),
    }
}

impl Node {
    /// `deltafed app add`: an application allowed to call `datasets` (other members'
    /// datasets, unversioned) at `rate` calls per second (default from the config).
    pub async fn app_add(&self, name: String, datasets: Vec<DatasetRef>, rate: Option<u32>) -> Result<Issued, Error> {
        let roster = self.roster();
        for d in &datasets {
            if d.version.is_some() {
                return Err(Error::invalid(
                    "--datasets",
                    format!("give {} without a version: an application always calls the newest one", d.unversioned()),
                ));
            }
            if d.publisher == self.0.member {
                return Err(Error::invalid(
                    "--datasets",
                    format!("{d} is this member's own dataset; applications call other members' datasets"),
                ));
            }
            if roster.roster.key_of(&d.publisher).is_none() {
                return Err(Error::invalid(
                    "--datasets",
                    format!("{} is not a member of the federation (see `deltafed status`)", d.publisher),
                ));
            }
        }
        let rate = rate.unwrap_or(self.0.config.gateway.default_rate);
        let issued = self.0.apps.add(&name, datasets, rate, now()).map_err(app_error)?;
        self.0.durable.sync().await?;
        tracing::info!(app = %name, rate, "application added");
        Ok(issued)
    }

    /// `deltafed app rotate`: a new token; the old one is refused from now on.
    pub async fn app_rotate(&self, name: &str) -> Result<Issued, Error> {
        let issued = self.0.apps.rotate(name).map_err(app_error)?;
        self.0.durable.sync().await?;
        tracing::info!(app = %name, "application token rotated");
        Ok(issued)
    }

    /// `deltafed app remove`: the application and its token are gone from now on.
    pub async fn app_remove(&self, name: &str) -> Result<Arc<App>, Error> {
        let app = self.0.apps.remove(name).map_err(app_error)?;
        self.0.durable.sync().await?;
        tracing::info!(app = %name, "application removed");
        Ok(app)
    }

    /// `deltafed app list`.
    pub fn apps(&self) -> Vec<Arc<App>> {
        self.0.apps.list()
    }

    /// The application a bearer token belongs to.
    pub fn app_by_token(&self, token: &str) -> Option<Arc<App>> {
        self.0.apps.by_token(token)
    }

    /// Writes the call counters that changed (cheap, unsynced; a crash loses at most the last
    /// second of counts, never an application).
    pub(super) fn flush_app_usage(&self) {
        if let Err(e) = self.0.apps.flush_usage() {
            tracing::warn!(error = %e, "cannot save the applications' call counters");
        }
    }
}

/// Saves the call counters every [`FLUSH_EVERY`] until shutdown.
pub(super) async fn flush_usage(node: Node, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = tick.tick() => node.flush_app_usage(),
        }
    }
}
