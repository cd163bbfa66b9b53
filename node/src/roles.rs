//! Who may do what: the roles of the people who use the dashboard, and the one function that
//! decides whether a role permits an action ([`permits`]). The dashboard asks it for every page
//! and every form it serves, and shows only what it allows; nothing else decides.
//!
//! Separation of duties (GB/T 39477 §6.2): an auditor reads everything and changes nothing, an
//! approver decides on access but cannot touch users, applications or the roster, an operator
//! watches the node, a publisher manages datasets; an admin may do all of it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Approver,
    Publisher,
    Auditor,
    Operator,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Admin, Role::Approver, Role::Publisher, Role::Auditor, Role::Operator];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Publisher => "publisher",
            Role::Auditor => "auditor",
            Role::Operator => "operator",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a role: admin, approver, publisher, auditor or operator"))
    }
}

/// What a person may ask of the node through the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// The overview: member, federation, roster version, members and their connection state.
    ViewOverview,
    /// Node status, peers and the metrics: what an operator watches.
    ViewStatus,
    ViewCatalog,
    ViewRequests,
    ViewGrants,
    /// Running fetches and recent calls.
    ViewExchanges,
    /// Per-call statistics.
    ViewStats,
    ViewProvenance,
    ViewApps,
    ViewUsers,
    /// Publish a dataset from a database source (`publish --source`).
    Publish,
    Withdraw,
    Approve,
    Deny,
    Grant,
    Revoke,
    VerifyProvenance,
    ManageUsers,
    ManageApps,
    ManageRoster,
}

impl Action {
    pub const ALL: [Action; 20] = [
        Action::ViewOverview,
        Action::ViewStatus,
        Action::ViewCatalog,
        Action::ViewRequests,
        Action::ViewGrants,
        Action::ViewExchanges,
        Action::ViewStats,
        Action::ViewProvenance,
        Action::ViewApps,
        Action::ViewUsers,
        Action::Publish,
        Action::Withdraw,
        Action::Approve,
        Action::Deny,
        Action::Grant,
        Action::Revoke,
        Action::VerifyProvenance,
        Action::ManageUsers,
        Action::ManageApps,
        Action::ManageRoster,
    ];

    /// Reads the node's state, changes nothing.
    pub fn is_view(self) -> bool {
        matches!(
            self,
            Action::ViewOverview
                | Action::ViewStatus
                | Action::ViewCatalog
                | Action::ViewRequests
                | Action::ViewGrants
                | Action::ViewExchanges
                | Action::ViewStats
                | Action::ViewProvenance
                | Action::ViewApps
                | Action::ViewUsers
        )
    }
}

/// Whether `role` may take `action`: the whole policy of the dashboard.
pub fn permits(role: Role, action: Action) -> bool {
    use Action as A;
    match role {
        Role::Admin => true,
        // Read-only everything, and checking the record (verifying changes nothing).
        Role::Auditor => action.is_view() || action == A::VerifyProvenance,
        Role::Operator => matches!(action, A::ViewOverview | A::ViewStatus | A::ViewExchanges | A::ViewStats),
        Role::Publisher => matches!(action, A::ViewOverview | A::ViewCatalog | A::Publish | A::Withdraw),
        Role::Approver => matches!(
            action,
            A::ViewOverview
                | A::ViewCatalog
                | A::ViewRequests
                | A::ViewGrants
                | A::Approve
                | A::Deny
                | A::Grant
                | A::Revoke
        ),
    }
}

/// Who took a decision, as the provenance log records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The node's owner, through the admin socket (the CLI).
    Owner,
    /// A dashboard user.
    User { name: String, role: Role },
    /// A `publish --every` schedule, run by the node; `set_by` is who set it ([`Actor::who`]).
    Schedule { set_by: String },
}

impl Default for Actor {
    /// Whoever is at the admin socket: the node's owner.
    fn default() -> Actor {
        Actor::Owner
    }
}

impl Actor {
    /// The end of a decision's note: `by the node owner (admin socket)` or `by dashboard user
    /// alice (approver)`.
    pub fn note(&self) -> String {
        match self {
            Actor::Schedule { set_by } => format!("by the schedule {set_by} set"),
            other => format!("by {}", other.who()),
        }
    }

    /// `the node owner (admin socket)`, `dashboard user alice (approver)`.
    pub fn who(&self) -> String {
        match self {
            Actor::Owner => "the node owner (admin socket)".into(),
            Actor::User { name, role } => format!("dashboard user {name} ({role})"),
            Actor::Schedule { set_by } => format!("the schedule {set_by} set"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table of the issue, spelled out: each role and exactly the actions it may take.
    #[test]
    fn each_role_may_do_exactly_its_list() {
        use Action as A;
        let table: [(Role, &[Action]); 4] = [
            (Role::Operator, &[A::ViewOverview, A::ViewStatus, A::ViewExchanges, A::ViewStats]),
            (Role::Publisher, &[A::ViewOverview, A::ViewCatalog, A::Publish, A::Withdraw]),
            (
                Role::Approver,
                &[
                    A::ViewOverview,
                    A::ViewCatalog,
                    A::ViewRequests,
                    A::ViewGrants,
                    A::Approve,
                    A::Deny,
                    A::Grant,
                    A::Revoke,
                ],
            ),
            (
                Role::Auditor,
                &[
                    A::ViewOverview,
                    A::ViewStatus,
                    A::ViewCatalog,
                    A::ViewRequests,
                    A::ViewGrants,
                    A::ViewExchanges,
                    A::ViewStats,
                    A::ViewProvenance,
                    A::ViewApps,
                    A::ViewUsers,
                    A::VerifyProvenance,
                ],
            ),
        ];
        for (role, allowed) in table {
            for action in Action::ALL {
                assert_eq!(permits(role, action), allowed.contains(&action), "{role} {action:?}");
            }
        }
        assert!(Action::ALL.iter().all(|a| permits(Role::Admin, *a)));
    }

    #[test]
    fn nobody_but_an_admin_manages_users_apps_or_the_roster() {
        for role in Role::ALL.into_iter().filter(|r| *r != Role::Admin) {
            for a in [Action::ManageUsers, Action::ManageApps, Action::ManageRoster] {
                assert!(!permits(role, a), "{role} {a:?}");
            }
        }
    }

    #[test]
    fn roles_parse_and_print() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }
}
