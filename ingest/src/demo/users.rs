//! The demo company's logins: `owner`, `admin`, `analyst`, and `manager-<staff id>` /
//! `lead-<staff id>` for every manager and team lead in the lake's staff table, each with a random
//! initial password returned once (to be shown to the person who runs the demo, never stored).

use arrow::array::{Array, AsArray};
use kartoteka_engine::control::{ControlPlane, NewUser};
use kartoteka_engine::{Engine, Principal, Role};

use crate::error::Result;

/// A login created for the demo, with its initial password (shown once).
#[derive(Debug, Clone)]
pub struct DemoLogin {
    /// Login.
    pub login: String,
    /// System role.
    pub role: Role,
    /// Initial password.
    pub password: String,
}

/// Is `login` one the demo creates (`owner`, `admin`, `analyst`, `manager-N`, `lead-N`)?
pub fn is_demo_login(login: &str) -> bool {
    matches!(login, "owner" | "admin" | "analyst")
        || ["manager-", "lead-"].iter().any(|p| {
            login
                .strip_prefix(p)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// Remove the demo's logins (when a real CRM replaces the demo), as `by`; returns them.
pub async fn remove_users(control: &ControlPlane, by: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for user in control.list_users().await? {
        if is_demo_login(&user.login) {
            control.remove_user(&user.login, by).await?;
            removed.push(user.login);
        }
    }
    Ok(removed)
}

/// Create the demo's logins that do not exist yet, as `by`.
pub async fn create_users(
    control: &ControlPlane,
    engine: &Engine,
    by: &str,
) -> Result<Vec<DemoLogin>> {
    let session = engine.session(&Principal::local_owner()).await?;
    let staff = session
        .sql(
            "SELECT staff_id, CAST(position AS VARCHAR), CAST(team AS VARCHAR) FROM staff \
             WHERE position IN ('manager', 'team_lead') ORDER BY staff_id",
        )
        .await?;
    let fixed = |login: &str, role| NewUser {
        login: login.into(),
        role,
        staff_id: None,
        team: None,
    };
    let mut wanted = vec![
        fixed("owner", Role::Owner),
        fixed("admin", Role::Admin),
        fixed("analyst", Role::Analyst),
    ];
    for b in &staff.batches {
        let text = |i: usize| arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8);
        let (position, team) = (text(1)?, text(2)?);
        let (position, team) = (position.as_string::<i32>(), team.as_string::<i32>());
        let ids = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Int64)?;
        let ids = ids.as_primitive::<arrow::datatypes::Int64Type>();
        for i in 0..b.num_rows() {
            let lead = position.value(i) == "team_lead";
            wanted.push(NewUser {
                login: format!("{}-{}", if lead { "lead" } else { "manager" }, ids.value(i)),
                role: if lead { Role::TeamLead } else { Role::Manager },
                staff_id: Some(ids.value(i)),
                team: (!team.is_null(i)).then(|| team.value(i).to_string()),
            });
        }
    }
    let existing = control.list_users().await?;
    let mut created = Vec::new();
    for u in wanted {
        if existing.iter().any(|e| e.login == u.login) {
            continue;
        }
        let role = u.role;
        let (user, password) = control.add_user(u, by).await?;
        created.push(DemoLogin {
            login: user.login,
            role,
            password: password.expose().to_string(),
        });
    }
    Ok(created)
}
