//! Parsing the catalog's `.sql` files.

use serde::Deserialize;

use crate::{Error, Result};

/// The catalog files, compiled into the binary so a metric cannot go missing at run time.
const FILES: &[(&str, &str)] = &[
    (
        "revenue_by_month.sql",
        include_str!("../catalog/revenue_by_month.sql"),
    ),
    (
        "funnel_conversion.sql",
        include_str!("../catalog/funnel_conversion.sql"),
    ),
    (
        "activity_by_manager.sql",
        include_str!("../catalog/activity_by_manager.sql"),
    ),
    (
        "cohort_retention.sql",
        include_str!("../catalog/cohort_retention.sql"),
    ),
    (
        "revenue_by_manager.sql",
        include_str!("../catalog/revenue_by_manager.sql"),
    ),
    ("win_rate.sql", include_str!("../catalog/win_rate.sql")),
    (
        "avg_deal_size.sql",
        include_str!("../catalog/avg_deal_size.sql"),
    ),
    (
        "sales_cycle.sql",
        include_str!("../catalog/sales_cycle.sql"),
    ),
    (
        "pipeline_by_stage.sql",
        include_str!("../catalog/pipeline_by_stage.sql"),
    ),
    (
        "plan_vs_actual.sql",
        include_str!("../catalog/plan_vs_actual.sql"),
    ),
    (
        "lost_reasons.sql",
        include_str!("../catalog/lost_reasons.sql"),
    ),
    (
        "stalled_deals.sql",
        include_str!("../catalog/stalled_deals.sql"),
    ),
    (
        "new_clients.sql",
        include_str!("../catalog/new_clients.sql"),
    ),
    (
        "client_base.sql",
        include_str!("../catalog/client_base.sql"),
    ),
    (
        "repeat_rate.sql",
        include_str!("../catalog/repeat_rate.sql"),
    ),
    (
        "overdue_tasks.sql",
        include_str!("../catalog/overdue_tasks.sql"),
    ),
    (
        "time_in_stage.sql",
        include_str!("../catalog/time_in_stage.sql"),
    ),
    ("churn.sql", include_str!("../catalog/churn.sql")),
    (
        "ltv_by_cohort.sql",
        include_str!("../catalog/ltv_by_cohort.sql"),
    ),
    ("rfm.sql", include_str!("../catalog/rfm.sql")),
    (
        "response_time.sql",
        include_str!("../catalog/response_time.sql"),
    ),
    (
        "first_contact_sla.sql",
        include_str!("../catalog/first_contact_sla.sql"),
    ),
    (
        "step_compliance.sql",
        include_str!("../catalog/step_compliance.sql"),
    ),
    (
        "handover_impact.sql",
        include_str!("../catalog/handover_impact.sql"),
    ),
    (
        "data_discipline.sql",
        include_str!("../catalog/data_discipline.sql"),
    ),
    (
        "revenue_by_source.sql",
        include_str!("../catalog/revenue_by_source.sql"),
    ),
    ("forecast.sql", include_str!("../catalog/forecast.sql")),
    (
        "manager_scorecard.sql",
        include_str!("../catalog/manager_scorecard.sql"),
    ),
    (
        "admin_actions.sql",
        include_str!("../catalog/admin_actions.sql"),
    ),
    (
        "after_hours.sql",
        include_str!("../catalog/after_hours.sql"),
    ),
    (
        "login_failures.sql",
        include_str!("../catalog/login_failures.sql"),
    ),
    (
        "exports_by_user.sql",
        include_str!("../catalog/exports_by_user.sql"),
    ),
];

/// A shared derivation several metrics use, defined once (`queries/views/*.sql`). Views take no
/// parameters: metrics filter their rows by period.
#[derive(Debug, Clone, Copy)]
pub struct View {
    /// Name metrics refer to.
    pub name: &'static str,
    /// The defining query (over canonical tables only).
    pub sql: &'static str,
}

/// The shared views.
pub const VIEWS: &[View] = &[
    View {
        name: "inbound_answers",
        sql: include_str!("../views/inbound_answers.sql"),
    },
    View {
        name: "step_checks",
        sql: include_str!("../views/step_checks.sql"),
    },
    View {
        name: "deal_reach",
        sql: include_str!("../views/deal_reach.sql"),
    },
];

/// Type of a metric parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamType {
    /// An instant: `2025-01-31`, `2025-01-31 12:00:00` (wall-clock time in the reporting zone), RFC 3339.
    Timestamp,
    /// A calendar date `YYYY-MM-DD`.
    Date,
    /// Text.
    Text,
    /// A whole number.
    Int,
}

/// One parameter of a metric.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    /// Name, used as `$name` in the SQL and `--param name=value` on the command line.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub ty: ParamType,
    /// Default: a literal, `now` (the snapshot's time), `month_start(to, -N)` or `month_start(now, -N)`.
    pub default: Option<String>,
    /// `month`: the value must be the first instant of a calendar month (in the reporting zone).
    #[serde(default)]
    pub align: Option<String>,
    /// The only values accepted, when the parameter is an enumeration.
    #[serde(default)]
    pub allowed: Vec<String>,
    /// Smallest value of a whole-number parameter.
    #[serde(default)]
    pub min: Option<i64>,
    /// Largest value of a whole-number parameter.
    #[serde(default)]
    pub max: Option<i64>,
    /// What it means.
    #[serde(default)]
    pub description: String,
    /// What it means, in Russian (required with `description`).
    #[serde(default)]
    pub description_ru: String,
}

impl ParamSpec {
    /// What it means in `lang` (`ru`, anything else English).
    pub fn description_in(&self, lang: &str) -> &str {
        if lang == "ru" {
            &self.description_ru
        } else {
            &self.description
        }
    }
}

/// One result column.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// Column name.
    pub name: String,
    /// Unit (RUB, deals, ratio, min, …).
    #[serde(default)]
    pub unit: String,
    /// What it means.
    #[serde(default)]
    pub description: String,
}

/// How the result is best drawn.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChartHint {
    /// bar, line, stacked_bar, funnel, heatmap, table, kpi.
    pub kind: String,
    /// Column on the x axis.
    pub x: String,
    /// Value columns.
    pub y: Vec<String>,
    /// Column splitting series, if any.
    pub series: Option<String>,
}

/// The families of the catalog: what a metric is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Revenue, deals, plan.
    Sales,
    /// Stages and conversion.
    Funnel,
    /// Who the clients are and where they come from.
    Audience,
    /// Who stays and pays again.
    Retention,
    /// How the staff work.
    Staff,
    /// Over the audit log (its "now" is the clock, not the snapshot).
    Security,
}

impl Family {
    /// Its name in the catalog headers and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Sales => "sales",
            Family::Funnel => "funnel",
            Family::Audience => "audience",
            Family::Retention => "retention",
            Family::Staff => "staff",
            Family::Security => "security",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A metric: header and SQL.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Unique name.
    pub name: String,
    /// Human title (English).
    pub title: String,
    /// The title in Russian.
    pub title_ru: String,
    /// What it is about.
    pub family: Family,
    /// Definition, as in metrics.md.
    pub description: String,
    /// The definition in Russian (for people; metrics.md and `description` are the specification).
    pub description_ru: String,
    /// Roles that may run it.
    pub roles: Vec<kartoteka_engine::Role>,
    /// Chart hint.
    pub chart: Option<ChartHint>,
    /// Parameters.
    #[serde(default)]
    pub params: Vec<ParamSpec>,
    /// Result columns, in order.
    pub columns: Vec<ColumnSpec>,
    /// The SQL text (after the header).
    #[serde(skip)]
    pub sql: String,
}

impl Metric {
    /// Its title in `lang` (`ru`, anything else English).
    pub fn title_in(&self, lang: &str) -> &str {
        if lang == "ru" {
            &self.title_ru
        } else {
            &self.title
        }
    }

    /// Its definition in `lang` (`ru`, anything else English).
    pub fn description_in(&self, lang: &str) -> &str {
        if lang == "ru" {
            &self.description_ru
        } else {
            &self.description
        }
    }

    /// May `role` run it?
    pub fn allows(&self, role: kartoteka_engine::Role) -> bool {
        self.roles.contains(&role)
    }

    /// Its roles, for people: `owner, manager, …`.
    pub fn roles_text(&self) -> String {
        self.roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Does the metric take a parameter of this name?
    pub fn has_param(&self, name: &str) -> bool {
        self.params.iter().any(|p| p.name == name)
    }

    /// Parse one catalog file.
    pub fn parse(file: &str, text: &str) -> Result<Metric> {
        let bad = |detail: String| Error::BadHeader {
            file: file.into(),
            detail,
        };
        let mut header = String::new();
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next_if(|l| l.starts_with("--")) {
            let body = line.trim_start_matches("--");
            header.push_str(body.strip_prefix(' ').unwrap_or(body));
            header.push('\n');
        }
        let sql: String = lines.collect::<Vec<_>>().join("\n");
        let mut metric: Metric = toml::from_str(&header).map_err(|e| bad(e.to_string()))?;
        metric.description = metric.description.trim().to_string();
        if sql.trim().is_empty() {
            return Err(bad("no SQL after the header".into()));
        }
        for p in &metric.params {
            if p.description.is_empty() || p.description_ru.is_empty() {
                return Err(bad(format!(
                    "parameter {} needs a description and a description_ru (the form shows them)",
                    p.name
                )));
            }
            if !sql.contains(&format!("${}", p.name)) {
                return Err(bad(format!(
                    "parameter {} is declared but not used as ${}",
                    p.name, p.name
                )));
            }
        }
        if format!("{}.sql", metric.name) != file {
            return Err(bad(format!(
                "the file of metric {} must be named {}.sql",
                metric.name, metric.name
            )));
        }
        metric.sql = sql;
        Ok(metric)
    }
}

/// All metrics.
#[derive(Debug, Clone)]
pub struct Catalog {
    metrics: Vec<Metric>,
}

impl Catalog {
    /// The built-in catalog.
    pub fn builtin() -> Result<Catalog> {
        let metrics = FILES
            .iter()
            .map(|(f, t)| Metric::parse(f, t))
            .collect::<Result<Vec<_>>>()?;
        Ok(Catalog { metrics })
    }

    /// All metrics, in catalog order.
    pub fn metrics(&self) -> &[Metric] {
        &self.metrics
    }

    /// The catalog as a Markdown document, generated from the headers so it never drifts from the SQL
    /// (`kartoteka metric docs > docs/catalog.md`; a test checks the file is current).
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "# Metric catalog\n\n_Generated from the headers of `queries/catalog/*.sql` by \
             `kartoteka metric docs`; do not edit by hand._\n\n\
             Periods are half-open `[from, to)`; days, weeks and months are calendar ones in the \
             reporting time zone (`[query] time_zone`, default UTC), and a date parameter means its \
             midnight there; `now` is the snapshot's time (the audit log's clock for the security \
             family). Every metric runs under the caller's policy: a manager \
             gets the same SQL over their own rows.\n\n\
             Units: `money` is the currency the source's mapping declares (`[money] currency`, shown \
             as `revenue, USD` and with the sign on charts; bare numbers when it declares none). A \
             metric that reads a table or column the mapping does not provide is refused, naming \
             it (`needs \"interactions\", which the mapping does not provide`), instead of \
             answering zero over data that was never loaded.\n",
        );
        let mut families: Vec<Family> = Vec::new();
        for m in &self.metrics {
            if !families.contains(&m.family) {
                families.push(m.family);
            }
        }
        for family in families {
            out.push_str(&format!("\n## {family}\n"));
            for m in self.metrics.iter().filter(|m| m.family == family) {
                out.push_str(&format!(
                    "\n### `{}` — {} ({})\n\n{}\n\n",
                    m.name, m.title, m.title_ru, m.description
                ));
                if m.params.is_empty() {
                    out.push_str("Parameters: none.\n\n");
                } else {
                    out.push_str("| parameter | type | default | meaning |\n|---|---|---|---|\n");
                    for p in &m.params {
                        out.push_str(&format!(
                            "| `{}` | {:?}{} | {} | {} |\n",
                            p.name,
                            p.ty,
                            p.align
                                .as_deref()
                                .map_or(String::new(), |a| format!(", {a} start")),
                            p.default
                                .as_deref()
                                .map_or("required".to_string(), |d| format!("`{d}`")),
                            p.description
                        ));
                    }
                    out.push('\n');
                }
                out.push_str("| column | unit | meaning |\n|---|---|---|\n");
                for c in &m.columns {
                    out.push_str(&format!(
                        "| `{}` | {} | {} |\n",
                        c.name, c.unit, c.description
                    ));
                }
                let chart = m.chart.as_ref().map_or("none".to_string(), |c| {
                    format!("{} of {} by {}", c.kind, c.y.join(", "), c.x)
                });
                out.push_str(&format!("\nRoles: {}. Chart: {chart}.\n", m.roles_text()));
            }
        }
        out.push_str("\n## Shared views\n\n");
        for v in VIEWS {
            let doc: Vec<&str> = v
                .sql
                .lines()
                .take_while(|l| l.starts_with("--"))
                .map(|l| l.trim_start_matches("--").trim())
                .collect();
            out.push_str(&format!("- `{}`: {}\n", v.name, doc.join(" ")));
        }
        out
    }

    /// A metric by name, or an error listing the valid names.
    pub fn get(&self, name: &str) -> Result<&Metric> {
        self.metrics
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::UnknownMetric {
                name: name.into(),
                known: self
                    .metrics
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalog_parses_and_declares_what_it_uses() {
        let c = Catalog::builtin().expect("catalog parses");
        assert_eq!(c.metrics().len(), FILES.len());
        for m in c.metrics() {
            assert!(!m.columns.is_empty(), "{} has result columns", m.name);
            // every $placeholder in the SQL is a declared parameter
            for word in m
                .sql
                .split(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '$'))
            {
                if let Some(p) = word.strip_prefix('$') {
                    assert!(
                        m.params.iter().any(|d| d.name == p),
                        "{}: ${p} undeclared",
                        m.name
                    );
                }
            }
        }
    }

    #[test]
    fn the_catalog_document_is_current() {
        let doc = Catalog::builtin().expect("catalog").markdown();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/catalog.md");
        let file = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            file == doc,
            "docs/catalog.md is out of date: run `cargo run -- metric docs > docs/catalog.md`"
        );
    }

    #[test]
    fn unknown_metric_lists_the_valid_names() {
        let c = Catalog::builtin().expect("catalog parses");
        let msg = c.get("revenue").expect_err("unknown").to_string();
        assert!(
            msg.contains("revenue_by_month") && msg.contains("cohort_retention"),
            "{msg}"
        );
    }
}
