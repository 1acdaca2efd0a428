//! Who is asking: roles, principals, and the one place a login becomes a principal.
//!
//! Every front end — the CLI's `--as`, report rendering, the scheduler, and later the web app and the
//! PostgreSQL endpoint — resolves a login through [`resolve`], so a user is the same principal
//! everywhere: role and staff record from the control plane, and a team lead's team from the lake's
//! staff table *at the snapshot the session will read* (a team that changed since is not mixed in).

use serde::{Deserialize, Serialize};

use crate::control::ControlPlane;
use crate::error::{Error, Result};
use crate::lake::Snapshot;
use crate::session::Engine;

/// System roles (not job titles): see shared/design/security.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Sees everything, including personal data.
    Owner,
    /// Sees their own clients' rows.
    Manager,
    /// Sees their team's rows.
    TeamLead,
    /// Sees all rows, never personal data.
    Analyst,
    /// Runs the system; reads no CRM data.
    Admin,
}

impl Role {
    /// Parse a role name.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "manager" => Some(Role::Manager),
            "team_lead" => Some(Role::TeamLead),
            "analyst" => Some(Role::Analyst),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Manager => "manager",
            Role::TeamLead => "team_lead",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }
}

/// Who is asking: the subject of every policy decision and audit entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Login name.
    pub user: String,
    /// System role.
    pub role: Role,
    /// The CRM staff record this user is, if any.
    pub staff_id: Option<i64>,
    /// Staff ids of the team (team leads; includes the lead).
    pub team: Vec<i64>,
    /// The owner previewing this user's view (`--as`), who is the actor in the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_by: Option<String>,
}

impl Principal {
    /// The local owner: whoever holds the lake's passphrase and runs the CLI.
    pub fn local_owner() -> Principal {
        Principal {
            user: "owner".into(),
            role: Role::Owner,
            staff_id: None,
            team: Vec::new(),
            preview_by: None,
        }
    }

    /// Who acts: the previewing owner, or the user.
    pub fn actor(&self) -> &str {
        self.preview_by.as_deref().unwrap_or(&self.user)
    }

    /// Staff ids whose rows a manager or team lead owns.
    pub fn staff_scope(&self) -> Vec<i64> {
        let mut staff = match self.role {
            Role::TeamLead if !self.team.is_empty() => self.team.clone(),
            _ => self.staff_id.into_iter().collect(),
        };
        if let Some(me) = self.staff_id {
            staff.push(me);
        }
        staff.sort_unstable();
        staff.dedup();
        staff
    }
}

/// Resolve `login` to the principal a session over `snapshot` serves: the control plane's role, staff
/// record and status (a disabled user is refused), and for a team lead the staff ids of their team in
/// `snapshot`. `preview_by` names who acts for them (the owner's `--as`, the scheduler): that one is
/// the actor in the audit log, the login the subject of the policy.
pub async fn resolve(
    engine: &Engine,
    control: &ControlPlane,
    login: &str,
    preview_by: Option<&str>,
    snapshot: &Snapshot,
) -> Result<Principal> {
    let user = control.require(login).await?;
    if user.status != crate::control::UserStatus::Active {
        return Err(Error::Denied(format!("user {login} is {}", user.status)));
    }
    let team = match (&user.team, user.role) {
        (Some(team), Role::TeamLead) => engine.team_members(snapshot, team).await?,
        _ => Vec::new(),
    };
    Ok(Principal {
        user: user.login,
        role: user.role,
        staff_id: user.staff_id,
        team,
        preview_by: preview_by.map(str::to_string),
    })
}
