//! The team benchmark: a manager's activity and response time against the median of their team — the
//! one figure on a manager's page that draws on rows their own policy hides.
//!
//! How it keeps to the policy's intent (security.md, "an output counts as an aggregate only when it
//! covers at least k"):
//! - the figures are the catalog's own `manager_scorecard` (one definition: outbound activities and the
//!   exact median response time per manager), computed over the principal's snapshot and period in a
//!   session under the **analyst's** policy — all rows, no personal data decrypted, no name read;
//! - what leaves this module is the principal's own figures (a team lead's: their team's, which their
//!   policy shows anyway) and, per figure, the median over the team's managers — only when at least
//!   [`MIN_MANAGERS`] managers contribute to it, so a median is never one or two colleagues' figure in
//!   disguise;
//! - the wide session's statements are audited with the principal as actor and
//!   `as: team-benchmark` ([`BENCHMARK_LOGIN`]).
//!
//! The principal's own figures come from the same wide computation as the median, so both sides of
//! the comparison are counted the same way (a reply to a colleague's client counts for the one who
//! answered, as in `response_time` over all rows).

use std::collections::{BTreeSet, HashMap};

use datafusion::common::ScalarValue;
use kartoteka_engine::{Engine, Principal, QueryResult, QuerySession, Role};

use crate::{AnswerCache, Catalog, Result};

/// The fewest managers a team median is drawn from.
pub const MIN_MANAGERS: usize = 3;

/// The login the wide session's statements are recorded under (`as` in the audit log).
pub const BENCHMARK_LOGIN: &str = "team-benchmark";

/// The scorecard metric whose figures are compared.
const SCORECARD: &str = "manager_scorecard";

/// One manager's figures for the period.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Outbound activities (calls, e-mails, messages, meetings) in the period.
    pub activities: Option<f64>,
    /// Exact median minutes to answer an inbound message (none answered: `None`).
    pub median_response_minutes: Option<f64>,
}

/// A team's median of each figure, with how many managers it is drawn from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TeamMedian {
    /// Median of the managers' activities; `None` when fewer than [`MIN_MANAGERS`] contribute.
    pub activities: Option<f64>,
    /// Managers counted in the activities median.
    pub activities_of: usize,
    /// Median of the managers' median response times; `None` when fewer than [`MIN_MANAGERS`] answered.
    pub median_response_minutes: Option<f64>,
    /// Managers counted in the response median.
    pub response_of: usize,
}

/// The principal's figures against their team's median.
#[derive(Debug, Clone, PartialEq)]
pub struct TeamBenchmark {
    /// The team (the `team` of the principal's staff record).
    pub team: String,
    /// The principal's own staff ids with their figures (a manager: one; a team lead: the team),
    /// in staff id order; a manager not employed in the period has no row.
    pub members: Vec<(i64, Figures)>,
    /// The team's median.
    pub median: TeamMedian,
}

/// The team benchmark for `session`'s principal over `args`' period (`from`, `to`, `as_of`, as for
/// `manager_scorecard`; others are ignored). `None` for a principal who is not a manager or team lead
/// with a staff record in a team.
pub async fn team_benchmark(
    engine: &Engine,
    catalog: &Catalog,
    cache: Option<&AnswerCache>,
    session: &QuerySession,
    args: &[(String, String)],
) -> Result<Option<TeamBenchmark>> {
    let principal = session.principal();
    let Some(me) = principal.staff_id else {
        return Ok(None);
    };
    if !matches!(principal.role, Role::Manager | Role::TeamLead) {
        return Ok(None);
    }
    let wide_principal = Principal {
        user: BENCHMARK_LOGIN.into(),
        role: Role::Analyst,
        staff_id: None,
        team: Vec::new(),
        preview_by: Some(principal.actor().to_string()),
    };
    let wide = engine
        .session_at(&wide_principal, session.snapshot().clone())
        .await?;
    // The viewer's team and its members, in one statement.
    let team = wide
        .sql_with_params(
            "SELECT CAST(staff_id AS VARCHAR) AS staff_id, team FROM staff \
             WHERE team = (SELECT team FROM staff WHERE staff_id = $me)",
            HashMap::from([("me".to_string(), ScalarValue::Int64(Some(me)))]),
        )
        .await?;
    let Some(name) = team.text_column("team").into_iter().flatten().next() else {
        return Ok(None);
    };
    let in_team: BTreeSet<i64> = team
        .text_column("staff_id")
        .into_iter()
        .flatten()
        .filter_map(|id| id.parse().ok())
        .collect();
    let metric = catalog.get(SCORECARD)?;
    let args: Vec<(String, String)> = args
        .iter()
        .filter(|(name, _)| metric.has_param(name))
        .cloned()
        .collect();
    let scorecard = match cache {
        Some(cache) => cache.run_metric(&wide, metric, &args).await?,
        None => std::sync::Arc::new(crate::run_metric(&wide, metric, &args).await?),
    };
    let team_rows: Vec<(i64, Figures)> = figures(&scorecard)
        .into_iter()
        .filter(|(id, _)| in_team.contains(id))
        .collect();
    let mine = principal.staff_scope();
    Ok(Some(TeamBenchmark {
        team: name,
        members: team_rows
            .iter()
            .filter(|(id, _)| mine.binary_search(id).is_ok())
            .copied()
            .collect(),
        median: team_median(team_rows.iter().map(|(_, f)| *f)),
    }))
}

/// Each scorecard row's staff id and figures.
fn figures(scorecard: &QueryResult) -> Vec<(i64, Figures)> {
    let ids = scorecard.text_column("manager");
    let activities = scorecard.f64_column("activities");
    let response = scorecard.f64_column("median_response_minutes");
    let mut out: Vec<(i64, Figures)> = ids
        .into_iter()
        .zip(activities.into_iter().zip(response))
        .filter_map(|(id, (activities, median_response_minutes))| {
            Some((
                id?.parse().ok()?,
                Figures {
                    activities,
                    median_response_minutes,
                },
            ))
        })
        .collect();
    out.sort_by_key(|(id, _)| *id);
    out
}

/// The median of each figure over `team`, withheld below [`MIN_MANAGERS`] contributors.
pub fn team_median(team: impl IntoIterator<Item = Figures>) -> TeamMedian {
    let (mut activities, mut response) = (Vec::new(), Vec::new());
    for f in team {
        activities.extend(f.activities);
        response.extend(f.median_response_minutes);
    }
    // The exact median: the catalog's percentile at 0.5 (the mean of the middle two for an even count).
    let withheld = |values: &mut Vec<f64>| {
        if values.len() < MIN_MANAGERS {
            None
        } else {
            kartoteka_engine::percentile::percentile(values, 0.5)
        }
    };
    TeamMedian {
        activities_of: activities.len(),
        response_of: response.len(),
        activities: withheld(&mut activities),
        median_response_minutes: withheld(&mut response),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(activities: Option<f64>, response: Option<f64>) -> Figures {
        Figures {
            activities,
            median_response_minutes: response,
        }
    }

    #[test]
    fn medians_interpolate_and_are_withheld_below_three() {
        let m = team_median([
            f(Some(10.0), Some(5.0)),
            f(Some(40.0), None),
            f(Some(20.0), Some(7.0)),
            f(Some(30.0), Some(9.0)),
        ]);
        assert_eq!(m.activities, Some(25.0));
        assert_eq!(m.activities_of, 4);
        assert_eq!(m.median_response_minutes, Some(7.0));
        assert_eq!(m.response_of, 3);
        // Two who answered: their median would be their mean, i.e. each other's figure given one's own.
        let m = team_median([
            f(Some(1.0), Some(5.0)),
            f(Some(2.0), None),
            f(Some(3.0), Some(6.0)),
        ]);
        assert_eq!(m.activities, Some(2.0));
        assert_eq!(m.median_response_minutes, None);
        assert_eq!(m.response_of, 2);
        assert_eq!(team_median([]).activities, None);
    }
}
