//! `deltafed user ...`: the people who use the dashboard ([`crate::users`]), and their logins.

use super::{Error, Node, now};
use crate::roles::Role;
use crate::users::{self, User, Users};

fn user_error(e: users::Error) -> Error {
    use users::Error as E;
    match e {
        E::BadName(_) | E::Exists(_) => Error::invalid("NAME", e.to_string()),
        E::Unknown(_) => Error::not_found(e.to_string()),
        E::TooMany => Error::refused(e.to_string()),
        E::Corrupt { .. } | E::Random(_) | E::Store(_) => Error::internal("the users", e),
    }
}

impl Node {
    fn user_registry(&self) -> Users {
        Users::new(self.0.store.clone())
    }

    /// `deltafed user add`: the user and its login secret (shown this once), durable.
    pub async fn user_add(&self, name: &str, role: Role) -> Result<(User, String), Error> {
        let (user, secret) = self.user_registry().add(name, role, now()).map_err(user_error)?;
        self.0.durable.sync().await?;
        tracing::info!(user = %name, role = %role, "dashboard user added");
        Ok((user, secret))
    }

    pub fn users(&self) -> Result<Vec<User>, Error> {
        self.user_registry().list().map_err(user_error)
    }

    /// `deltafed user remove`: the user's sessions end at once.
    pub async fn user_remove(&self, name: &str) -> Result<User, Error> {
        let user = self.user_registry().remove(name).map_err(user_error)?;
        self.0.sessions.end_user(name);
        self.0.durable.sync().await?;
        tracing::info!(user = %name, "dashboard user removed");
        Ok(user)
    }

    /// The user whose name and secret these are.
    pub fn user_login(&self, name: &str, secret: &str) -> Result<Option<User>, Error> {
        self.user_registry().login(name, secret).map_err(user_error)
    }

    /// The dashboard's logins.
    pub fn sessions(&self) -> &crate::dashboard::Sessions {
        &self.0.sessions
    }

    /// Where the dashboard listens, as bound.
    pub fn dashboard_url(&self) -> &str {
        &self.0.dashboard_url
    }
}
