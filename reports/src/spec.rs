//! Report specs: TOML files in the home's `reports/` directory, one report each, validated when
//! loaded. A spec names its panels (a catalog metric, its parameters, a chart), a schedule in a time
//! zone, an audience (roles and/or users) and how it is delivered. Every error names the file and the
//! field; one bad file does not stop the others from loading.
//!
//! ```toml
//! id = "weekly-funnel"
//! title = "Моя воронка за неделю"
//! schedule = "0 8 * * MON"          # 5 fields, or 6 with seconds first
//! time_zone = "Europe/Moscow"       # default: the reporting zone
//! formats = ["svg", "png"]          # default: both
//!
//! [audience]
//! roles = ["manager"]               # rendered once per active user with the role
//! users = ["owner"]                 # and for these logins
//!
//! [[panels]]
//! metric = "funnel_conversion"
//! params = { from = "2025-01-01" }  # as `--param`; defaults fill the rest
//! chart = "funnel"                  # default: the metric's own chart hint
//! title = "Воронка"                 # default: the metric's title
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kartoteka_engine::Role;
use kartoteka_queries::{Catalog, Metric};
use serde::Deserialize;

use crate::schedule::Schedule;

/// Chart types a panel can be drawn as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChartKind {
    /// Values over time (x) as lines, one per series or y column.
    Line,
    /// One bar per x (grouped by y column when several).
    Bar,
    /// Bars per x stacked by series (or by y column).
    StackedBar,
    /// Stages (x, in result order) narrowing by their value.
    Funnel,
    /// Series (rows) × x (columns), coloured by the value: cohort retention.
    Heatmap,
    /// One number with its change against the previous period.
    Kpi,
    /// The result as a table.
    Table,
}

impl ChartKind {
    /// All kinds, by name.
    pub const ALL: [(&'static str, ChartKind); 7] = [
        ("line", ChartKind::Line),
        ("bar", ChartKind::Bar),
        ("stacked_bar", ChartKind::StackedBar),
        ("funnel", ChartKind::Funnel),
        ("heatmap", ChartKind::Heatmap),
        ("kpi", ChartKind::Kpi),
        ("table", ChartKind::Table),
    ];

    /// Parse a kind name.
    pub fn parse(s: &str) -> Option<ChartKind> {
        Self::ALL.iter().find(|(n, _)| *n == s).map(|(_, k)| *k)
    }

    /// The kind's name.
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, k)| *k == self)
            .map(|(n, _)| *n)
            .expect("every kind is named")
    }
}

/// Output formats of a rendered report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// One SVG per panel.
    Svg,
    /// One PNG per panel.
    Png,
}

impl Format {
    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Svg => "svg",
            Format::Png => "png",
        }
    }
}

/// Who receives a report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience {
    /// Every active user with one of these roles.
    pub roles: Vec<Role>,
    /// These logins.
    pub users: Vec<String>,
}

/// How a report is delivered besides the dashboard archive (which always keeps it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delivery {
    /// E-mail each recipient at the address on their user record.
    pub email: bool,
    /// POST a JSON summary of each rendered copy here.
    pub webhook: Option<String>,
}

/// One panel: a metric, its parameters, how it is drawn.
#[derive(Debug, Clone)]
pub struct Panel {
    /// Title over the chart.
    pub title: String,
    /// Catalog metric.
    pub metric: String,
    /// Parameters (`name`, text value) as on the command line.
    pub params: Vec<(String, String)>,
    /// Chart type.
    pub chart: ChartKind,
    /// Column on the x axis (category, time, stage; the label for a table/kpi).
    pub x: String,
    /// Value columns.
    pub y: Vec<String>,
    /// Column splitting the rows into series, if any.
    pub series: Option<String>,
    /// Unit of the first value column, from the catalog (RUB, deals, ratio, …).
    pub unit: String,
    /// Every result column's unit, from the catalog (for table cells).
    pub column_units: BTreeMap<String, String>,
    /// Draw its words (units, notes, captions) in English rather than Russian.
    pub english: bool,
}

/// What a spec may choose for a panel; the metric's chart hint fills the rest.
#[derive(Debug, Clone, Default)]
pub struct PanelChoice {
    /// Title (default: the metric's).
    pub title: Option<String>,
    /// Chart type name.
    pub chart: Option<String>,
    /// x column.
    pub x: Option<String>,
    /// Value columns.
    pub y: Option<Vec<String>>,
    /// Series column.
    pub series: Option<String>,
}

impl Panel {
    /// This panel with the catalog's money unit replaced by `currency` (the snapshot's mapping's
    /// ISO 4217 code; without one, amounts stay bare numbers).
    pub fn with_currency(&self, currency: Option<&str>) -> Panel {
        let resolve = |u: &String| match (u.as_str(), currency) {
            (crate::chart::MONEY, Some(code)) => code.to_string(),
            _ => u.clone(),
        };
        Panel {
            unit: resolve(&self.unit),
            column_units: self
                .column_units
                .iter()
                .map(|(c, u)| (c.clone(), resolve(u)))
                .collect(),
            ..self.clone()
        }
    }

    /// The panel `choice` describes for `metric`, checked against the metric's columns; the error
    /// names the field at fault.
    pub fn build(
        metric: &Metric,
        choice: PanelChoice,
        params: Vec<(String, String)>,
    ) -> Result<Panel, (&'static str, String)> {
        let hint = metric.chart.as_ref();
        let chart_name = choice
            .chart
            .or_else(|| hint.map(|h| h.kind.clone()))
            .unwrap_or_else(|| "table".into());
        let chart = ChartKind::parse(&chart_name).ok_or_else(|| {
            (
                "chart",
                format!(
                    "{chart_name:?} is not a chart type ({})",
                    ChartKind::ALL.map(|(n, _)| n).join(", ")
                ),
            )
        })?;
        // The hint's series fits the hint's kind; another kind takes only what it is given.
        let same_kind = hint.is_some_and(|h| h.kind == chart_name);
        let x = choice
            .x
            .or_else(|| hint.map(|h| h.x.clone()))
            .unwrap_or_else(|| metric.columns[0].name.clone());
        let y = choice
            .y
            .or_else(|| hint.map(|h| h.y.clone()))
            .unwrap_or_default();
        let series = choice
            .series
            .or_else(|| hint.filter(|_| same_kind).and_then(|h| h.series.clone()));
        let unit = check_columns(metric, chart, &x, &y, series.as_deref())?;
        Ok(Panel {
            title: choice.title.unwrap_or_else(|| metric.title_ru.clone()),
            metric: metric.name.clone(),
            params,
            chart,
            x,
            y,
            series,
            unit,
            column_units: metric
                .columns
                .iter()
                .map(|c| (c.name.clone(), c.unit.clone()))
                .collect(),
            english: false,
        })
    }
}

/// A validated report spec.
#[derive(Debug, Clone)]
pub struct ReportSpec {
    /// Unique id (letters, digits, `-`, `_`).
    pub id: String,
    /// Title.
    pub title: String,
    /// The file it came from.
    pub file: PathBuf,
    /// When it runs (`kartoteka serve`).
    pub schedule: Schedule,
    /// Who receives it.
    pub audience: Audience,
    /// Besides the archive.
    pub delivery: Delivery,
    /// Output formats.
    pub formats: Vec<Format>,
    /// Panels in order.
    pub panels: Vec<Panel>,
}

/// A spec that did not load: the file and what is wrong with which field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// The file.
    pub file: PathBuf,
    /// The report id the file declares, when it can be read.
    pub id: Option<String>,
    /// The field (`panels[2].metric`), or empty for the file as a whole.
    pub field: String,
    /// What is wrong.
    pub detail: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.detail)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.field,
                self.detail
            )
        }
    }
}

impl std::error::Error for SpecError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    id: String,
    title: String,
    schedule: String,
    time_zone: Option<String>,
    formats: Option<Vec<String>>,
    #[serde(default)]
    audience: RawAudience,
    #[serde(default)]
    delivery: RawDelivery,
    #[serde(default)]
    panels: Vec<RawPanel>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudience {
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    #[serde(default)]
    email: bool,
    webhook: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPanel {
    metric: String,
    title: Option<String>,
    chart: Option<String>,
    x: Option<String>,
    y: Option<Vec<String>>,
    series: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, toml::Value>,
}

/// What validation needs to know about the world outside the file.
#[derive(Debug)]
pub struct Context<'a> {
    /// The metric catalog.
    pub catalog: &'a Catalog,
    /// Known logins and their roles (the control plane's users).
    pub users: &'a BTreeMap<String, Role>,
    /// The reporting time zone (default of `time_zone`).
    pub default_zone: &'a str,
}

impl ReportSpec {
    /// Parse and validate the spec text of `file`.
    pub fn parse(text: &str, file: &Path, cx: &Context<'_>) -> Result<ReportSpec, SpecError> {
        let declared_id = text
            .parse::<toml::Table>()
            .ok()
            .and_then(|t| t.get("id").and_then(|v| v.as_str()).map(str::to_string));
        let err = |field: &str, detail: String| SpecError {
            file: file.to_path_buf(),
            id: declared_id.clone(),
            field: field.to_string(),
            detail,
        };
        let raw: RawSpec = toml::from_str(text).map_err(|e| {
            // toml's message names the line and the unknown or missing field.
            err("", e.to_string().trim().replace('\n', " "))
        })?;
        if raw.id.is_empty()
            || !raw
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(
                "id",
                format!("{:?}: an id is letters, digits, - and _", raw.id),
            ));
        }
        let zone = raw.time_zone.as_deref().unwrap_or(cx.default_zone);
        let schedule = Schedule::parse(&raw.schedule, zone).map_err(|e| {
            let field = if e.contains("time zone") {
                "time_zone"
            } else {
                "schedule"
            };
            err(field, e)
        })?;

        let mut formats = Vec::new();
        for (i, f) in raw
            .formats
            .unwrap_or_else(|| vec!["svg".into(), "png".into()])
            .iter()
            .enumerate()
        {
            let format = match f.as_str() {
                "svg" => Format::Svg,
                "png" => Format::Png,
                other => {
                    return Err(err(
                        &format!("formats[{i}]"),
                        format!("{other:?}: the formats are svg and png"),
                    ));
                }
            };
            if !formats.contains(&format) {
                formats.push(format);
            }
        }
        if formats.is_empty() {
            return Err(err("formats", "name at least one of svg, png".into()));
        }

        let mut audience = Audience::default();
        for (i, r) in raw.audience.roles.iter().enumerate() {
            let role = Role::parse(r).ok_or_else(|| {
                err(
                    &format!("audience.roles[{i}]"),
                    format!("{r:?} is not a role (owner, manager, team_lead, analyst, admin)"),
                )
            })?;
            audience.roles.push(role);
        }
        for (i, u) in raw.audience.users.iter().enumerate() {
            if !cx.users.contains_key(u) {
                return Err(err(
                    &format!("audience.users[{i}]"),
                    format!("no user {u:?} (`kartoteka users list` shows them)"),
                ));
            }
            audience.users.push(u.clone());
        }
        if audience.roles.is_empty() && audience.users.is_empty() {
            return Err(err(
                "audience",
                "nobody receives this report; name roles and/or users".into(),
            ));
        }
        // Every role that can receive the report must be allowed every panel's metric.
        let mut receiving: Vec<Role> = audience.roles.clone();
        receiving.extend(
            audience
                .users
                .iter()
                .filter_map(|u| cx.users.get(u).copied()),
        );

        if let Some(url) = &raw.delivery.webhook
            && !crate::http::is_webhook_url(url)
        {
            return Err(err(
                "delivery.webhook",
                format!("{url:?}: a webhook is an http:// or https:// address"),
            ));
        }

        if raw.panels.is_empty() {
            return Err(err(
                "panels",
                "a report needs at least one [[panels]]".into(),
            ));
        }
        let mut panels = Vec::new();
        for (i, p) in raw.panels.into_iter().enumerate() {
            let at = |field: &str| format!("panels[{i}].{field}");
            let metric = cx
                .catalog
                .get(&p.metric)
                .map_err(|e| err(&at("metric"), e.to_string()))?;
            for role in &receiving {
                if !metric.allows(*role) {
                    return Err(err(
                        &at("metric"),
                        format!(
                            "{} is not available to role {} in the audience (it is for: {})",
                            metric.name,
                            role.as_str(),
                            metric.roles_text()
                        ),
                    ));
                }
            }
            let mut params = Vec::new();
            for (k, v) in p.params {
                let text = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Integer(n) => n.to_string(),
                    toml::Value::Datetime(d) => d.to_string(),
                    other => {
                        return Err(err(
                            &at(&format!("params.{k}")),
                            format!("{other} must be a string, a number or a date"),
                        ));
                    }
                };
                params.push((k, text));
            }
            // Bind once now: unknown parameters and values that do not parse fail at load time.
            kartoteka_queries::bind(metric, &params, chrono::Utc::now(), schedule.zone())
                .map_err(|e| err(&at("params"), e.to_string()))?;
            let panel = Panel::build(
                metric,
                PanelChoice {
                    title: p.title,
                    chart: p.chart,
                    x: p.x,
                    y: p.y,
                    series: p.series,
                },
                params,
            )
            .map_err(|(field, detail)| err(&at(field), detail))?;
            panels.push(panel);
        }
        Ok(ReportSpec {
            id: raw.id,
            title: raw.title,
            file: file.to_path_buf(),
            schedule,
            audience,
            delivery: Delivery {
                email: raw.delivery.email,
                webhook: raw.delivery.webhook,
            },
            formats,
            panels,
        })
    }
}

/// Do the columns exist and suit the chart? Returns the first value column's unit, or the field at
/// fault and why.
fn check_columns(
    metric: &Metric,
    chart: ChartKind,
    x: &str,
    y: &[String],
    series: Option<&str>,
) -> Result<String, (&'static str, String)> {
    let names: Vec<&str> = metric.columns.iter().map(|c| c.name.as_str()).collect();
    let missing = |field: &'static str, c: &str| {
        (
            field,
            format!(
                "{} has no column {c:?}; its columns: {}",
                metric.name,
                names.join(", ")
            ),
        )
    };
    if !names.contains(&x) {
        return Err(missing("x", x));
    }
    for c in y {
        if !names.contains(&c.as_str()) {
            return Err(missing("y", c));
        }
    }
    if let Some(s) = series
        && !names.contains(&s)
    {
        return Err(missing("series", s));
    }
    let incompatible = |field: &'static str, why: &str| {
        (
            field,
            format!("a {} chart {why}", chart.as_str().replace('_', " ")),
        )
    };
    match chart {
        ChartKind::Table => {}
        ChartKind::Kpi if y.len() != 1 => {
            return Err(incompatible("y", "shows exactly one value column"));
        }
        ChartKind::Funnel if y.len() != 1 || series.is_some() => {
            return Err(incompatible(
                "y",
                "draws one value column per stage, without series",
            ));
        }
        ChartKind::Heatmap if y.len() != 1 || series.is_none() => {
            return Err(incompatible(
                "series",
                "needs one value column and a series column (rows of the map)",
            ));
        }
        ChartKind::StackedBar if series.is_none() && y.len() < 2 => {
            return Err(incompatible(
                "series",
                "stacks a series column or several value columns",
            ));
        }
        _ if y.is_empty() => return Err(incompatible("y", "needs a value column")),
        _ => {}
    }
    Ok(y.first()
        .and_then(|c| metric.columns.iter().find(|m| &m.name == c))
        .map(|c| c.unit.clone())
        .unwrap_or_default())
}

/// Load every `*.toml` in `dir` (sorted by name): the valid specs, and an error for each file that is
/// not. Two files with one id: the second is an error.
pub fn load_dir(dir: &Path, cx: &Context<'_>) -> (Vec<ReportSpec>, Vec<SpecError>) {
    let mut specs: Vec<ReportSpec> = Vec::new();
    let mut errors = Vec::new();
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            errors.push(SpecError {
                file: dir.to_path_buf(),
                id: None,
                field: String::new(),
                detail: format!("cannot read the reports directory: {e}"),
            });
            Vec::new()
        }
    };
    files.sort();
    for file in files {
        let loaded = std::fs::read_to_string(&file)
            .map_err(|e| SpecError {
                file: file.clone(),
                id: None,
                field: String::new(),
                detail: format!("cannot read: {e}"),
            })
            .and_then(|text| ReportSpec::parse(&text, &file, cx));
        match loaded {
            Ok(spec) => match specs.iter().find(|s| s.id == spec.id) {
                Some(first) => errors.push(SpecError {
                    file: file.clone(),
                    id: Some(spec.id.clone()),
                    field: "id".into(),
                    detail: format!(
                        "{:?} is already the id of {}",
                        spec.id,
                        first.file.display()
                    ),
                }),
                None => specs.push(spec),
            },
            Err(e) => errors.push(e),
        }
    }
    (specs, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = "weekly"
title = "Неделя"
schedule = "0 8 * * MON"
time_zone = "Europe/Moscow"
[audience]
roles = ["manager"]
users = ["boss"]
[[panels]]
metric = "funnel_conversion"
[[panels]]
metric = "revenue_by_month"
chart = "line"
params = { from = "2025-01-01", to = "2025-07-01" }
[[panels]]
metric = "avg_deal_size"
"#;

    fn check(text: &str) -> Result<ReportSpec, SpecError> {
        let catalog = Catalog::builtin().expect("catalog");
        let users = BTreeMap::from([
            ("boss".to_string(), Role::Owner),
            ("ann".to_string(), Role::Manager),
            ("sys".to_string(), Role::Admin),
        ]);
        let cx = Context {
            catalog: &catalog,
            users: &users,
            default_zone: "UTC",
        };
        ReportSpec::parse(text, Path::new("reports/weekly.toml"), &cx)
    }

    fn field_error(text: &str) -> (String, String) {
        let e = check(text).expect_err("invalid");
        assert_eq!(e.file, Path::new("reports/weekly.toml"));
        let shown = e.to_string();
        assert!(shown.starts_with("reports/weekly.toml: "), "{shown}");
        (e.field, e.detail)
    }

    #[test]
    fn a_good_spec_loads_with_the_metrics_chart_hints() {
        let s = check(GOOD).expect("valid");
        assert_eq!(s.id, "weekly");
        assert_eq!(s.formats, vec![Format::Svg, Format::Png]);
        assert_eq!(s.audience.roles, vec![Role::Manager]);
        let kinds: Vec<ChartKind> = s.panels.iter().map(|p| p.chart).collect();
        assert_eq!(
            kinds,
            vec![ChartKind::Funnel, ChartKind::Line, ChartKind::Kpi]
        );
        // The catalog's unit for amounts; the snapshot's currency replaces it at render time.
        assert_eq!(s.panels[1].unit, "money");
        let dollars = s.panels[1].with_currency(Some("USD"));
        assert_eq!(dollars.unit, "USD");
        assert!(dollars.column_units.values().any(|u| u == "USD"));
        assert!(!dollars.column_units.values().any(|u| u == "money"));
        assert_eq!(s.panels[1].with_currency(None).unit, "money");
        assert_eq!(s.panels[1].params.len(), 2);
        assert_eq!(s.schedule.zone(), chrono_tz::Europe::Moscow);
    }

    #[test]
    fn bad_specs_name_the_field() {
        let (f, d) = field_error(&GOOD.replace("funnel_conversion", "funnel_conversation"));
        assert_eq!(f, "panels[0].metric");
        assert!(d.contains("funnel_conversation"), "{d}");

        let (f, d) = field_error(&GOOD.replace("0 8 * * MON", "0 8 * * MONDAY"));
        assert_eq!(f, "schedule");
        assert!(d.contains("MONDAY"), "{d}");

        let (f, d) = field_error(&GOOD.replace("Europe/Moscow", "Europe/Mordor"));
        assert_eq!(f, "time_zone");
        assert!(d.contains("Mordor"), "{d}");

        let (f, d) = field_error(&GOOD.replace("users = [\"boss\"]", "users = [\"bosss\"]"));
        assert_eq!(f, "audience.users[0]");
        assert!(d.contains("bosss"), "{d}");

        let (f, d) = field_error(&GOOD.replace("chart = \"line\"", "chart = \"heatmap\""));
        assert_eq!(f, "panels[1].series");
        assert!(d.contains("heatmap") && d.contains("series"), "{d}");

        let (f, d) = field_error(&GOOD.replace(
            "chart = \"line\"",
            "chart = \"kpi\"\ny = [\"revenue\", \"month\"]",
        ));
        assert_eq!(f, "panels[1].y");
        assert!(d.contains("exactly one"), "{d}");

        let (f, d) =
            field_error(&GOOD.replace("chart = \"line\"", "chart = \"line\"\nx = \"manager\""));
        assert_eq!(f, "panels[1].x");
        assert!(d.contains("no column \"manager\""), "{d}");

        let (f, d) = field_error(&GOOD.replace("chart = \"line\"", "chart = \"pie\""));
        assert_eq!(f, "panels[1].chart");
        assert!(d.contains("pie") && d.contains("stacked_bar"), "{d}");

        let (f, d) = field_error(&GOOD.replace("from = \"2025-01-01\"", "since = \"2025-01-01\""));
        assert_eq!(f, "panels[1].params");
        assert!(d.contains("since"), "{d}");

        let (f, d) = field_error(&GOOD.replace("from = \"2025-01-01\"", "from = \"yesterday\""));
        assert_eq!(f, "panels[1].params");
        assert!(d.contains("yesterday"), "{d}");

        // An admin may not receive a sales report: the audience's roles must be allowed every metric.
        let (f, d) = field_error(&GOOD.replace("users = [\"boss\"]", "users = [\"sys\"]"));
        assert_eq!(f, "panels[0].metric");
        assert!(d.contains("admin"), "{d}");

        let (f, d) = field_error(&GOOD.replace("roles = [\"manager\"]", "roles = [\"boss\"]"));
        assert_eq!(f, "audience.roles[0]");
        assert!(d.contains("not a role"), "{d}");

        let (f, d) = field_error(&GOOD.replace("id = \"weekly\"", "id = \"weekly report\""));
        assert_eq!(f, "id");
        assert!(d.contains("letters"), "{d}");

        // Unknown keys and TOML errors name the line.
        let (f, d) = field_error(
            &GOOD.replace("title = \"Неделя\"", "title = \"Неделя\"\ncolour = \"red\""),
        );
        assert_eq!(f, "");
        assert!(d.contains("colour") && d.contains("line"), "{d}");
    }

    #[test]
    fn one_bad_file_does_not_stop_the_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("a-good.toml"), GOOD).expect("write");
        std::fs::write(
            dir.path().join("b-bad.toml"),
            GOOD.replace("id = \"weekly\"", "id = \"other\"")
                .replace("0 8 * * MON", "61 8 * * *"),
        )
        .expect("write");
        std::fs::write(dir.path().join("c-twin.toml"), GOOD).expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a spec").expect("write");
        let catalog = Catalog::builtin().expect("catalog");
        let users = BTreeMap::from([("boss".to_string(), Role::Owner)]);
        let cx = Context {
            catalog: &catalog,
            users: &users,
            default_zone: "UTC",
        };
        let (specs, errors) = load_dir(dir.path(), &cx);
        assert_eq!(
            specs.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["weekly"]
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].file.ends_with("b-bad.toml") && errors[0].field == "schedule");
        assert!(errors[1].file.ends_with("c-twin.toml") && errors[1].field == "id");
        assert!(errors[1].detail.contains("a-good.toml"));
    }
}
