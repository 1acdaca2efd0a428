//! The pages people open: each role's dashboard (charts from the reports' chart code as SVG, tables,
//! a period picker), the metric catalog, one metric's full answer with its CSV, and the administrator's
//! system page (no CRM data). Every number comes from a catalog metric run under the viewer's own
//! policy, through the answer cache; the pages only lay the answers out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use kartoteka_engine::audit::{Event, Outcome, action};
use kartoteka_engine::{QueryResult, QuerySession, Role};
use kartoteka_queries::{Metric, ParamType};
use kartoteka_reports::chart::currency_sign;
use kartoteka_reports::spec::{ChartKind, Format, Panel, PanelChoice};

use crate::app::App;
use crate::auth::{Ctx, forbidden, see_other, trouble};
use crate::html::{Lang, esc, page, query};

/// One panel of a dashboard: a metric, its title in both languages, fixed parameters, how it is drawn.
#[derive(Debug, Clone, Copy)]
pub struct PanelDef {
    /// Catalog metric.
    pub metric: &'static str,
    /// Title in Russian.
    pub ru: &'static str,
    /// Title in English.
    pub en: &'static str,
    /// Fixed parameters.
    pub params: &'static [(&'static str, &'static str)],
    /// Chart type (the metric's hint when `None`).
    pub chart: Option<&'static str>,
}

const fn panel(metric: &'static str, ru: &'static str, en: &'static str) -> PanelDef {
    PanelDef {
        metric,
        ru,
        en,
        params: &[],
        chart: None,
    }
}

/// A role's dashboard.
#[derive(Debug, Clone, Copy)]
pub struct Dashboard {
    /// Who it is for.
    pub role: Role,
    /// Title in Russian.
    pub ru: &'static str,
    /// Title in English.
    pub en: &'static str,
    /// Its path.
    pub path: &'static str,
    /// Panels in order.
    pub panels: &'static [PanelDef],
    /// Opens with the viewer's figures against their team's median
    /// ([`kartoteka_queries::benchmark`]).
    pub team_median: bool,
}

/// The owner's page.
pub const OWNER: Dashboard = Dashboard {
    role: Role::Owner,
    ru: "Компания",
    en: "Company",
    path: "/owner",
    team_median: false,
    panels: &[
        panel("revenue_by_month", "Выручка по месяцам", "Revenue by month"),
        panel("plan_vs_actual", "План и факт", "Plan vs actual"),
        panel(
            "forecast",
            "Прогноз по месяцу закрытия",
            "Forecast by closing month",
        ),
        PanelDef {
            chart: Some("table"),
            ..panel(
                "pipeline_by_stage",
                "Открытые сделки по этапам",
                "Open deals by stage",
            )
        },
        panel(
            "revenue_by_source",
            "Выручка и расходы по каналам",
            "Revenue and spend by source",
        ),
        PanelDef {
            chart: Some("table"),
            ..panel(
                "revenue_by_source",
                "CAC и ROI по каналам",
                "CAC and ROI by source",
            )
        },
        panel("manager_scorecard", "Менеджеры", "Managers"),
        panel(
            "cohort_retention",
            "Удержание по когортам",
            "Cohort retention",
        ),
    ],
};

/// A manager's page: their own rows only (the engine's policy keeps the rest out).
pub const MANAGER: Dashboard = Dashboard {
    role: Role::Manager,
    ru: "Мои продажи",
    en: "My sales",
    path: "/manager",
    team_median: true,
    panels: &[
        panel("funnel_conversion", "Моя воронка", "My funnel"),
        PanelDef {
            chart: Some("table"),
            ..panel("stalled_deals", "Зависшие сделки", "Stalled deals")
        },
        PanelDef {
            chart: Some("table"),
            ..panel("overdue_tasks", "Просроченные задачи", "Overdue tasks")
        },
        PanelDef {
            params: &[("grain", "week")],
            ..panel("activity_by_manager", "Моя активность", "My activity")
        },
        PanelDef {
            chart: Some("table"),
            ..panel("response_time", "Скорость ответа", "Response time")
        },
        // Their own rows: against the company's target their revenue would read as a shortfall.
        PanelDef {
            params: &[("level", "staff")],
            ..panel("plan_vs_actual", "Мой план", "My plan")
        },
    ],
};

/// A team lead's page: their team, manager by manager.
pub const TEAM_LEAD: Dashboard = Dashboard {
    role: Role::TeamLead,
    ru: "Моя группа",
    en: "My team",
    path: "/team",
    team_median: true,
    panels: &[
        panel(
            "revenue_by_manager",
            "Выручка по менеджерам",
            "Revenue by manager",
        ),
        panel("win_rate", "Доля выигранных", "Win rate"),
        PanelDef {
            params: &[("grain", "week")],
            ..panel("activity_by_manager", "Активность", "Activity")
        },
        PanelDef {
            params: &[("level", "staff")],
            ..panel("plan_vs_actual", "План группы", "Team plan")
        },
        panel(
            "manager_scorecard",
            "Карточки менеджеров",
            "Manager scorecards",
        ),
        PanelDef {
            chart: Some("table"),
            ..panel("stalled_deals", "Зависшие сделки", "Stalled deals")
        },
        PanelDef {
            chart: Some("table"),
            ..panel("overdue_tasks", "Просроченные задачи", "Overdue tasks")
        },
    ],
};

/// Every dashboard.
pub const DASHBOARDS: [Dashboard; 3] = [OWNER, MANAGER, TEAM_LEAD];

/// The period picker's fields (dates, inclusive of `from`, exclusive of `to`).
#[derive(Debug, Default, serde::Deserialize)]
pub struct Period {
    from: Option<String>,
    to: Option<String>,
}

impl Period {
    /// The period as metric parameters (for metrics that take `from` and `to`); bad dates are
    /// reported, not ignored.
    fn args(&self, metric: &Metric) -> Vec<(String, String)> {
        let mut pairs = self.pairs();
        pairs.retain(|(name, _)| metric.has_param(name));
        pairs
    }

    /// The fields given, as parameters.
    fn pairs(&self) -> Vec<(String, String)> {
        [("from", &self.from), ("to", &self.to)]
            .into_iter()
            .filter_map(|(name, value)| {
                let v = value.as_deref().map(str::trim).filter(|v| !v.is_empty())?;
                Some((name.to_string(), v.to_string()))
            })
            .collect()
    }
}

fn viewer_of(ctx: &Ctx) -> Option<crate::html::Viewer> {
    ctx.viewer()
}

fn login_of(ctx: &Ctx) -> &str {
    ctx.user.as_ref().map_or("", |u| u.login.as_str())
}

/// GET /: each role to its page.
pub async fn home(
    axum::Extension(ctx): axum::Extension<Ctx>,
    State(app): State<Arc<App>>,
) -> Response {
    let login = ctx
        .session
        .as_ref()
        .map(|(_, s)| s.login.clone())
        .unwrap_or_default();
    let role = match app.control.user(&login).await {
        Ok(Some(u)) => u.role,
        Ok(None) => return see_other("/login"),
        Err(e) => return trouble(ctx.lang, None, &e.to_string()),
    };
    see_other(match role {
        Role::Owner => OWNER.path,
        Role::Manager => MANAGER.path,
        Role::TeamLead => TEAM_LEAD.path,
        Role::Analyst => "/catalog",
        Role::Admin => "/admin",
    })
}

/// Audit a page view (who, what, over which snapshot).
fn audit_view(app: &App, ctx: &Ctx, path: &str, snapshot: Option<u64>) {
    let _ = app.audit(Event {
        actor: login_of(ctx).to_string(),
        action: action::WEB_VIEW.into(),
        target: path.into(),
        details: serde_json::json!({ "snapshot": snapshot, "ip": ctx.ip.to_string() }),
        outcome: Outcome::Ok,
    });
}

/// A role's dashboard page. Each panel (and the owner's tiles) is drawn once per snapshot, viewer's
/// scope, language and period, and kept: a query session is built only when something is not.
pub async fn dashboard(app: &App, ctx: &Ctx, board: &Dashboard, period: &Period) -> Response {
    let lang = ctx.lang;
    let viewer = viewer_of(ctx);
    let (snapshot, principal) = match app.viewer_now(login_of(ctx)).await {
        Ok(pair) => pair,
        Err(e) => return trouble(lang, viewer.as_ref(), &e.to_string()),
    };
    let data = match app.data_as_of(&snapshot).await {
        Ok(d) => d,
        Err(e) => return trouble(lang, viewer.as_ref(), &e.to_string()),
    };
    let scope = format!("{:?}", kartoteka_queries::Scope::of(&principal));
    let mut session: Option<QuerySession> = None;
    let mut body = String::new();
    body.push_str(&period_form(lang, board.path, period));
    let mut pieces: Vec<(String, Piece)> = Vec::new();
    if board.role == Role::Owner {
        pieces.push((format!("kpi|{scope}|{}", lang.code()), Piece::Kpis));
    }
    if board.team_median {
        pieces.push((
            format!("team|{scope}|{}|{period:?}", lang.code()),
            Piece::TeamMedian,
        ));
    }
    for def in board.panels {
        pieces.push((
            format!("panel|{scope}|{}|{def:?}|{period:?}", lang.code()),
            Piece::Panel(def),
        ));
    }
    let mut opened_panels = false;
    for (key, piece) in pieces {
        if !matches!(piece, Piece::Kpis) && !opened_panels {
            body.push_str("<div class=\"panels\">");
            opened_panels = true;
        }
        if let Some(html) = app.drawn(snapshot.id, &key) {
            body.push_str(&html);
            continue;
        }
        if session.is_none() {
            match app.session_for(&principal, &snapshot).await {
                Ok(s) => session = Some(s),
                Err(e) => return trouble(lang, viewer.as_ref(), &e.to_string()),
            }
        }
        let Some(session) = session.as_ref() else {
            continue;
        };
        let html = match piece {
            Piece::Panel(def) => panel_html(app, session, lang, def, period).await,
            Piece::TeamMedian => team_median_html(app, session, lang, period).await,
            Piece::Kpis => match owner_kpis(app, session, lang).await {
                Ok(html) => html,
                Err(e) => format!("<p class=\"error\">{}</p>", esc(&e)),
            },
        };
        // A failure is drawn again next time, not kept.
        if !html.contains("class=\"error\"") {
            app.keep_drawn(snapshot.id, key, Arc::from(html.as_str()));
        }
        body.push_str(&html);
    }
    if opened_panels {
        body.push_str("</div>");
    }
    audit_view(app, ctx, board.path, Some(data.snapshot));
    Html(page(
        lang,
        lang.pick(board.ru, board.en),
        board.path,
        viewer.as_ref(),
        Some(&data),
        &body,
    ))
    .into_response()
}

/// A piece of a dashboard, drawn and kept on its own.
enum Piece<'a> {
    /// The owner's KPI tiles.
    Kpis,
    /// The viewer's figures against their team's median.
    TeamMedian,
    /// A metric's panel.
    Panel(&'a PanelDef),
}

/// The viewer's activity and response time against their team's median: a manager's own row, a team
/// lead's row per manager, and the median (withheld when fewer than three managers make it).
async fn team_median_html(
    app: &App,
    session: &QuerySession,
    lang: Lang,
    period: &Period,
) -> String {
    use kartoteka_queries::benchmark::{Figures, MIN_MANAGERS, team_benchmark};
    let title = lang.pick("Я и моя группа", "Me and my team");
    let inner = async {
        let Some(bench) = team_benchmark(
            &app.engine,
            &app.catalog,
            Some(&app.cache),
            session,
            &period.pairs(),
        )
        .await
        .map_err(|e| e.to_string())?
        else {
            return Ok(String::new());
        };
        let names: BTreeMap<String, String> = if session.principal().role == Role::TeamLead {
            let staff = session
                .sql("SELECT CAST(staff_id AS VARCHAR) AS id, full_name FROM staff")
                .await
                .map_err(|e| e.to_string())?;
            staff
                .text_column("id")
                .into_iter()
                .zip(staff.text_column("full_name"))
                .filter_map(|(id, name)| Some((id?, name?)))
                .collect()
        } else {
            BTreeMap::new()
        };
        let minutes = |v: Option<f64>| v.map_or("—".into(), |v| lang.number(v, 1));
        let count = |v: Option<f64>| v.map_or("—".into(), |v| lang.number(v, 0));
        let mut out = format!(
            "<div class=\"table\"><table><thead><tr><th></th><th class=\"num\">{}</th>\
             <th class=\"num\">{}</th></tr></thead><tbody>",
            lang.pick("Исходящие активности", "Outbound activities"),
            lang.pick("Медиана времени ответа, мин", "Median response time, min"),
        );
        // Not employed in the period: no figures of their own, said so rather than left out.
        let nobody = [(session.principal().staff_id.unwrap_or_default(), Figures::default())];
        let members = if bench.members.is_empty() {
            &nobody[..]
        } else {
            &bench.members[..]
        };
        for (id, figures) in members {
            let who = match names.get(&id.to_string()) {
                _ if Some(*id) == session.principal().staff_id => lang.pick("Вы", "You").to_string(),
                Some(name) => name.clone(),
                None => id.to_string(),
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&who),
                count(figures.activities),
                minutes(figures.median_response_minutes)
            );
        }
        let m = &bench.median;
        let _ = write!(
            out,
            "<tr class=\"median\"><th scope=\"row\">{}</th><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td></tr></tbody></table></div>",
            esc(&match lang {
                Lang::Ru => format!("Медиана группы «{}»", bench.team),
                Lang::En => format!("Median of team “{}”", bench.team),
            }),
            count(m.activities),
            minutes(m.median_response_minutes),
        );
        let note = match lang {
            Lang::Ru => format!(
                "Медиана посчитана по менеджерам группы, работавшим в этом периоде: активность — по {}, \
                 время ответа — по {} (у кого были ответы). Медиану показываем, только если в ней не \
                 меньше {MIN_MANAGERS} человек: так по ней не узнать цифр отдельного коллеги.",
                m.activities_of, m.response_of
            ),
            Lang::En => format!(
                "The median is over the team's managers who worked in this period: activity over {}, \
                 response time over the {} who answered messages. It is shown only when drawn from at \
                 least {MIN_MANAGERS} people, so it never reveals one colleague's figure.",
                m.activities_of, m.response_of
            ),
        };
        let _ = write!(out, "<p class=\"muted\">{}</p>", esc(&note));
        Ok::<String, String>(out)
    }
    .await;
    let content = match inner {
        Ok(html) if html.is_empty() => return String::new(),
        Ok(html) => html,
        Err(e) => format!("<p class=\"error\">{}</p>", esc(&e)),
    };
    format!(
        "<section class=\"panel\" data-metric=\"team_median\"><h2>{}</h2>{content}</section>",
        esc(title)
    )
}

/// The period picker: a plain GET form.
fn period_form(lang: Lang, action: &str, period: &Period) -> String {
    format!(
        "<form method=\"get\" action=\"{action}\" class=\"period\">\
         <label>{from}<input type=\"date\" name=\"from\" value=\"{f}\"></label>\
         <label>{to}<input type=\"date\" name=\"to\" value=\"{t}\"></label>\
         <button type=\"submit\">{show}</button> <a href=\"{action}\">{reset}</a>\
         <span class=\"muted\">{hint}</span></form>",
        from = lang.pick("С", "From"),
        to = lang.pick("по", "To"),
        f = esc(period.from.as_deref().unwrap_or("")),
        t = esc(period.to.as_deref().unwrap_or("")),
        show = lang.pick("Показать", "Show"),
        reset = lang.pick("последние 12 месяцев", "last 12 months"),
        hint = lang.pick("(конец периода не включается)", "(the end is not included)"),
    )
}

/// The panel `def` for the period, drawn: a chart (SVG) or a table, and the link to the whole answer.
async fn panel_html(
    app: &App,
    session: &QuerySession,
    lang: Lang,
    def: &PanelDef,
    period: &Period,
) -> String {
    let title = lang.pick(def.ru, def.en);
    let inner = async {
        let metric = app.catalog.get(def.metric).map_err(|e| e.to_string())?;
        let mut args: Vec<(String, String)> = def
            .params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        args.extend(period.args(metric));
        let choice = PanelChoice {
            title: Some(title.to_string()),
            chart: def.chart.map(str::to_string),
            ..PanelChoice::default()
        };
        let mut panel = Panel::build(metric, choice, args.clone())
            .map_err(|(field, detail)| format!("{field}: {detail}"))?;
        panel.english = lang == Lang::En;
        // A table is laid out as HTML: no SVG of it is drawn.
        let formats: &[Format] = if panel.chart == ChartKind::Table {
            &[]
        } else {
            &[Format::Svg]
        };
        let rendered = kartoteka_reports::render::render_panels(
            session,
            &app.catalog,
            std::slice::from_ref(&panel),
            formats,
            Some(&app.cache),
        )
        .await
        .map_err(|e| e.to_string())?;
        let rendered = rendered
            .into_iter()
            .next()
            .ok_or_else(|| "no panel".to_string())?;
        let link = format!("/metric/{}?{}", metric.name, query(&args));
        let drawn = if panel.chart == ChartKind::Table {
            table_html(lang, metric, &rendered.result, session, 12)
        } else {
            let svg = rendered
                .files
                .iter()
                .find(|(f, _)| *f == Format::Svg)
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            chart_svg(&svg, title)
        };
        Ok::<(String, bool), String>((
            format!(
                "{drawn}<p class=\"more\"><a href=\"{}\">{}</a></p>",
                esc(&link),
                lang.pick("Все строки и выгрузка →", "All rows and download →")
            ),
            panel.chart != ChartKind::Table,
        ))
    }
    .await;
    let (content, charted) = match inner {
        Ok(pair) => pair,
        Err(e) => (format!("<p class=\"error\">{}</p>", esc(&e)), false),
    };
    // A chart carries its title in the drawing; the heading stays for screen readers.
    format!(
        "<section class=\"panel\" data-metric=\"{}\"><h2{}>{}</h2>{content}</section>",
        esc(def.metric),
        if charted { " class=\"sr-only\"" } else { "" },
        esc(title)
    )
}

/// A chart in the page itself: the SVG the reports' chart code draws (presentation attributes only,
/// no `style` and no script, so the CSP holds), labelled for screen readers.
fn chart_svg(svg: &[u8], title: &str) -> String {
    let text = String::from_utf8_lossy(svg);
    let start = text.find("<svg").unwrap_or(0);
    format!(
        "<figure class=\"chart\" role=\"img\" aria-label=\"{}\">{}</figure>",
        esc(title),
        &text[start..]
    )
}

/// A column made ready for reading cell by cell: numbers as `f64`, everything else as text.
enum Cells {
    Numbers(arrow::array::Float64Array),
    Text(arrow::array::StringArray, bool),
}

impl Cells {
    fn of(array: &ArrayRef) -> Cells {
        if array.data_type().is_numeric()
            && let Ok(f) = arrow::compute::cast(array, &DataType::Float64)
        {
            return Cells::Numbers(f.as_primitive::<Float64Type>().clone());
        }
        let dated = matches!(
            array.data_type(),
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64
        );
        let text = arrow::compute::cast(array, &DataType::Utf8)
            .map(|a| a.as_string::<i32>().clone())
            .unwrap_or_else(|_| arrow::array::StringArray::from(vec![None::<&str>; array.len()]));
        Cells::Text(text, dated)
    }

    /// Cell `i` as the reader's language writes it, for a column of `unit` (`money` is the
    /// snapshot's currency, `ratio` a share), and whether it is a number.
    fn text(&self, lang: Lang, i: usize, unit: &str, currency: Option<&str>) -> (String, bool) {
        match self {
            Cells::Numbers(a) if a.is_null(i) => ("—".into(), true),
            Cells::Numbers(a) => {
                let v = a.value(i);
                let text = match unit {
                    "ratio" => format!("{}\u{a0}%", lang.number(v * 100.0, 1)),
                    "money" => match currency.map(|c| currency_sign(c).unwrap_or(c)) {
                        Some(sign) => format!("{}\u{a0}{sign}", lang.number(v, 0)),
                        None => lang.number(v, 0),
                    },
                    _ if v.fract() == 0.0 => lang.number(v, 0),
                    _ => lang.number(v, 1),
                };
                (text, true)
            }
            Cells::Text(a, _) if a.is_null(i) => ("—".into(), false),
            Cells::Text(a, dated) => {
                let text = a.value(i);
                if !dated {
                    return (text.to_string(), false);
                }
                // A month's first instant reads as the month.
                let date = text.get(..10).unwrap_or(text);
                if date.ends_with("-01") && text.get(11..19).is_none_or(|t| t == "00:00:00") {
                    (date[..7].to_string(), false)
                } else {
                    (date.to_string(), false)
                }
            }
        }
    }
}

/// The answer as an HTML table (up to `limit` rows, saying how many there are), the month in
/// progress starred.
fn table_html(
    lang: Lang,
    metric: &Metric,
    result: &QueryResult,
    session: &QuerySession,
    limit: usize,
) -> String {
    let currency = session.snapshot().mapping.currency.as_deref();
    let this_month = session
        .snapshot()
        .committed_at
        .with_timezone(&session.time_zone())
        .format("%Y-%m")
        .to_string();
    let units: BTreeMap<&str, &str> = metric
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.unit.as_str()))
        .collect();
    let schema = &result.schema;
    let mut out = String::from("<div class=\"table\"><table><thead><tr>");
    for field in schema.fields() {
        let unit = units.get(field.name().as_str()).copied().unwrap_or("");
        let numeric = field.data_type().is_numeric();
        let _ = write!(
            out,
            "<th{}>{}</th>",
            if numeric { " class=\"num\"" } else { "" },
            esc(&caption(lang, field.name(), unit, currency))
        );
    }
    out.push_str("</tr></thead><tbody>");
    let total = result.rows();
    let mut shown = 0;
    let mut starred = false;
    'rows: for batch in &result.batches {
        let columns: Vec<Cells> = batch.columns().iter().map(Cells::of).collect();
        for r in 0..batch.num_rows() {
            if shown == limit {
                break 'rows;
            }
            out.push_str("<tr>");
            for (c, field) in schema.fields().iter().enumerate() {
                let unit = units.get(field.name().as_str()).copied().unwrap_or("");
                let (mut text, numeric) = columns[c].text(lang, r, unit, currency);
                if matches!(field.data_type(), DataType::Timestamp(..)) && text == this_month {
                    text.push('*');
                    starred = true;
                }
                let _ = write!(
                    out,
                    "<td{}>{}</td>",
                    if numeric { " class=\"num\"" } else { "" },
                    esc(&text)
                );
            }
            out.push_str("</tr>");
            shown += 1;
        }
    }
    out.push_str("</tbody></table></div>");
    if total == 0 {
        let _ = write!(
            out,
            "<p class=\"muted\">{}</p>",
            lang.pick("За этот период строк нет.", "No rows for this period.")
        );
    } else if shown < total {
        let _ = write!(
            out,
            "<p class=\"muted\">{}</p>",
            esc(&match lang {
                Lang::Ru => format!("Показано {shown} из {total} строк."),
                Lang::En => format!("{shown} of {total} rows shown."),
            })
        );
    }
    if starred {
        let _ = write!(
            out,
            "<p class=\"muted\">{}</p>",
            lang.pick(
                "* месяц ещё идёт: его цифры не окончательные.",
                "* the month is still in progress: its figures are not final."
            )
        );
    }
    out
}

/// A column's caption: its name in the reader's language when known, with its unit.
fn caption(lang: Lang, column: &str, unit: &str, currency: Option<&str>) -> String {
    let name = column_name(lang, column);
    match unit {
        "money" => match currency {
            Some(c) => format!("{name}, {}", currency_sign(c).unwrap_or(c)),
            None => name,
        },
        "ratio" => format!("{name}, %"),
        _ => name,
    }
}

/// A result column's name in the reader's language (Russian: the catalog's names as the charts
/// write them; English: the name with spaces).
fn column_name(lang: Lang, column: &str) -> String {
    match lang {
        Lang::Ru => kartoteka_reports::chart::column_ru(column),
        Lang::En => column.replace('_', " "),
    }
}

/// The owner's three numbers for this month: revenue (against the plan and against the same month
/// a year ago) and the forecast — read from the same answers the charts below draw.
async fn owner_kpis(app: &App, session: &QuerySession, lang: Lang) -> Result<String, String> {
    let zone = session.time_zone();
    let now = session.snapshot().committed_at.with_timezone(&zone);
    let this_month = now.format("%Y-%m").to_string();
    let year = chrono::Datelike::year(&now);
    let month0 = chrono::Datelike::month0(&now);
    let last_year = format!("{:04}-{:02}", year - 1, month0 + 1);
    let run = async |name: &str| {
        let metric = app.catalog.get(name).map_err(|e| e.to_string())?;
        app.cache
            .run_metric(session, metric, &[])
            .await
            .map_err(|e| e.to_string())
    };
    let revenue = run("revenue_by_month").await?;
    let plan = run("plan_vs_actual").await?;
    let forecast = run("forecast").await?;
    let month_value = |r: &QueryResult, value: &str, month: &str, filter: Option<(&str, &str)>| {
        let months = r.text_column("month");
        let values = r.f64_column(value);
        let keep = filter.map(|(c, v)| {
            r.text_column(c)
                .into_iter()
                .map(|t| t.as_deref() == Some(v))
                .collect::<Vec<_>>()
        });
        months
            .iter()
            .zip(values)
            .enumerate()
            .find(|(i, (m, _))| {
                m.as_deref().is_some_and(|m| m.starts_with(month))
                    && keep
                        .as_ref()
                        .is_none_or(|k| k.get(*i).copied().unwrap_or(false))
            })
            .and_then(|(_, (_, v))| v)
    };
    let now_revenue = month_value(&revenue, "revenue", &this_month, None);
    let year_ago = month_value(&revenue, "revenue", &last_year, None);
    let target = month_value(&plan, "target", &this_month, Some(("scope", "company")));
    let expected = month_value(&forecast, "weighted_amount", &this_month, None);
    let currency = session.snapshot().mapping.currency.as_deref();
    let money = |v: Option<f64>| match v {
        Some(v) => match currency {
            Some(c) => format!(
                "{}\u{a0}{}",
                lang.number(v, 0),
                currency_sign(c).unwrap_or(c)
            ),
            None => lang.number(v, 0),
        },
        None => "—".into(),
    };
    let share = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b != 0.0 => format!("{}\u{a0}%", lang.number(a / b * 100.0, 0)),
        _ => "—".into(),
    };
    let month_name = month_label(lang, year, month0);
    let tiles = [
        (
            format!(
                "{} {} ({})",
                lang.pick("Выручка,", "Revenue,"),
                month_name,
                lang.pick("месяц идёт", "in progress")
            ),
            money(now_revenue),
            String::new(),
        ),
        (
            lang.pick("План месяца", "This month's target").to_string(),
            money(target),
            format!(
                "{} {}",
                lang.pick("выполнено", "reached"),
                share(now_revenue, target)
            ),
        ),
        (
            format!(
                "{} {}",
                lang.pick("Год назад,", "A year ago,"),
                month_label(lang, year - 1, month0)
            ),
            money(year_ago),
            format!(
                "{} {}",
                lang.pick("сейчас", "now"),
                share(now_revenue, year_ago)
            ),
        ),
        (
            lang.pick(
                "Прогноз закрытия в этом месяце",
                "Forecast to close this month",
            )
            .to_string(),
            money(expected),
            lang.pick("взвешено по вероятности этапов", "weighted by stage odds")
                .to_string(),
        ),
    ];
    // Each tile opens the metric it was read from.
    let links = [
        "/metric/revenue_by_month",
        "/metric/plan_vs_actual?level=company",
        "/metric/revenue_by_month",
        "/metric/forecast",
    ];
    let mut out = String::from("<div class=\"kpis\">");
    for ((label, value, note), link) in tiles.into_iter().zip(links) {
        let _ = write!(
            out,
            "<a class=\"kpi\" href=\"{link}\"><div class=\"label\">{}</div><div class=\"value\">{}</div>\
             <div class=\"note muted\">{}</div></a>",
            esc(&label),
            esc(&value),
            esc(&note)
        );
    }
    out.push_str("</div>");
    Ok(out)
}

/// `декабрь 2026` / `December 2026`.
fn month_label(lang: Lang, year: i32, month0: u32) -> String {
    const RU: [&str; 12] = [
        "январь",
        "февраль",
        "март",
        "апрель",
        "май",
        "июнь",
        "июль",
        "август",
        "сентябрь",
        "октябрь",
        "ноябрь",
        "декабрь",
    ];
    const EN: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let names = match lang {
        Lang::Ru => RU,
        Lang::En => EN,
    };
    format!("{} {year}", names[month0 as usize % 12])
}

/// GET /owner, /manager, /team: the dashboard declared for the path.
pub async fn board(
    State(app): State<Arc<App>>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    path: axum::extract::MatchedPath,
    Query(period): Query<Period>,
) -> Response {
    match DASHBOARDS.iter().find(|b| b.path == path.as_str()) {
        Some(board) => dashboard(&app, &ctx, board, &period).await,
        None => trouble(
            ctx.lang,
            viewer_of(&ctx).as_ref(),
            "no dashboard for this path",
        ),
    }
}

/// GET /catalog: every metric the viewer's role may run, with its definition.
pub async fn catalog(
    State(app): State<Arc<App>>,
    axum::Extension(ctx): axum::Extension<Ctx>,
) -> Response {
    let lang = ctx.lang;
    let viewer = viewer_of(&ctx);
    let Some(role) = ctx.user.as_ref().map(|u| u.role) else {
        return see_other("/login");
    };
    let mut body = format!(
        "<p>{}</p><table class=\"catalog\"><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        lang.pick(
            "Каждая метрика считается по вашим правам доступа: вы видите только разрешённые вам строки.",
            "Every metric runs under your own access rules: you see only the rows you may see."
        ),
        lang.pick("Метрика", "Metric"),
        lang.pick("Раздел", "Family"),
        lang.pick("Что считает", "What it measures"),
    );
    for m in app.catalog.metrics().iter().filter(|m| m.allows(role)) {
        let _ = write!(
            body,
            "<tr><td><a href=\"/metric/{}\">{}</a><br><code class=\"muted\">{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(&m.name),
            esc(m.title_in(lang.code())),
            esc(&m.name),
            esc(m.family.as_str()),
            esc(m.description_in(lang.code()))
        );
    }
    body.push_str("</tbody></table>");
    audit_view(&app, &ctx, "/catalog", None);
    Html(page(
        lang,
        lang.pick("Каталог метрик", "Metric catalog"),
        "/catalog",
        viewer.as_ref(),
        None,
        &body,
    ))
    .into_response()
}

/// The metric `name` for the viewer, or the page refusing it.
fn allowed_metric<'a>(app: &'a App, ctx: &Ctx, name: &str) -> Result<&'a Metric, Box<Response>> {
    let lang = ctx.lang;
    let viewer = viewer_of(ctx);
    let Ok(metric) = app.catalog.get(name) else {
        return Err(Box::new(
            (
                axum::http::StatusCode::NOT_FOUND,
                Html(page(
                    lang,
                    lang.pick("Нет такой метрики", "No such metric"),
                    "/catalog",
                    viewer.as_ref(),
                    None,
                    &format!(
                        "<p><a href=\"/catalog\">{}</a></p>",
                        lang.pick("Каталог", "Catalog")
                    ),
                )),
            )
                .into_response(),
        ));
    };
    let role = ctx.user.as_ref().map(|u| u.role);
    if !role.is_some_and(|r| metric.allows(r)) {
        return Err(Box::new(forbidden(
            lang,
            viewer.as_ref(),
            lang.pick(
                "Эта метрика вашей роли недоступна.",
                "This metric is not available to your role.",
            ),
        )));
    }
    Ok(metric)
}

/// The query string's parameters that the metric takes (others are ignored).
fn metric_args(metric: &Metric, q: &BTreeMap<String, String>) -> Vec<(String, String)> {
    metric
        .params
        .iter()
        .filter_map(|p| {
            q.get(&p.name)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .map(|v| (p.name.clone(), v.to_string()))
        })
        .collect()
}

/// GET /metric/{name}: its definition, a parameter form, its chart and its whole answer.
pub async fn metric(
    State(app): State<Arc<App>>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let lang = ctx.lang;
    let viewer = viewer_of(&ctx);
    let metric = match allowed_metric(&app, &ctx, &name) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let args = metric_args(metric, &q);
    let session = match app.query_session(login_of(&ctx)).await {
        Ok(s) => s,
        Err(e) => return trouble(lang, viewer.as_ref(), &e.to_string()),
    };
    let data = match app.data_as_of(session.snapshot()).await {
        Ok(d) => d,
        Err(e) => return trouble(lang, viewer.as_ref(), &e.to_string()),
    };
    let here = format!("/metric/{}", metric.name);
    let mut body = format!(
        "<p>{}</p>{}",
        esc(metric.description_in(lang.code())),
        param_form(lang, metric, &here, &q)
    );
    match app.cache.run_metric(&session, metric, &args).await {
        Ok(result) => {
            if let Some(hint) = &metric.chart
                && hint.kind != "table"
            {
                let choice = PanelChoice {
                    title: Some(metric.title_in(lang.code()).to_string()),
                    ..PanelChoice::default()
                };
                let panel = Panel::build(metric, choice, args.clone());
                if let Ok(mut panel) = panel {
                    panel.english = lang == Lang::En;
                    let drawn = kartoteka_reports::render::render_panels(
                        &session,
                        &app.catalog,
                        std::slice::from_ref(&panel),
                        &[Format::Svg],
                        Some(&app.cache),
                    )
                    .await;
                    if let Ok(Some(svg)) = drawn.map(|p| {
                        p.into_iter()
                            .next()
                            .and_then(|p| p.files.into_iter().next().map(|(_, b)| b))
                    }) {
                        body.push_str(&chart_svg(&svg, metric.title_in(lang.code())));
                    }
                }
            }
            if let Ok(Some((period, _))) = kartoteka_queries::period_of(&session, metric, &args) {
                let _ = write!(body, "<p class=\"muted\">{}</p>", esc(&period));
            }
            let _ = write!(
                body,
                "<p><a class=\"button\" href=\"{}/csv?{}\">{}</a></p>",
                esc(&here),
                esc(&query(&args)),
                lang.pick("Скачать CSV", "Download CSV")
            );
            body.push_str(&table_html(lang, metric, &result, &session, 500));
        }
        Err(e) => {
            let _ = write!(
                body,
                "<p class=\"error\" role=\"alert\">{}</p>",
                esc(&e.to_string())
            );
        }
    }
    audit_view(&app, &ctx, &here, Some(data.snapshot));
    Html(page(
        lang,
        metric.title_in(lang.code()),
        &here,
        viewer.as_ref(),
        Some(&data),
        &body,
    ))
    .into_response()
}

/// The parameter form of `metric`, filled with `q`.
fn param_form(lang: Lang, metric: &Metric, action: &str, q: &BTreeMap<String, String>) -> String {
    if metric.params.is_empty() {
        return String::new();
    }
    let mut out = format!(
        "<form method=\"get\" action=\"{}\" class=\"period\">",
        esc(action)
    );
    for p in &metric.params {
        let value = q.get(&p.name).map(String::as_str).unwrap_or("");
        let input = if !p.allowed.is_empty() {
            let mut s = format!(
                "<select name=\"{}\"><option value=\"\"></option>",
                esc(&p.name)
            );
            for a in &p.allowed {
                let _ = write!(
                    s,
                    "<option{}>{}</option>",
                    if a == value { " selected" } else { "" },
                    esc(a)
                );
            }
            s.push_str("</select>");
            s
        } else {
            let ty = match p.ty {
                ParamType::Int => "number",
                ParamType::Timestamp | ParamType::Date => "date",
                _ => "text",
            };
            format!(
                "<input type=\"{ty}\" name=\"{}\" value=\"{}\" placeholder=\"{}\">",
                esc(&p.name),
                esc(value),
                esc(p.default.as_deref().unwrap_or(""))
            )
        };
        let label = match (lang, p.name.as_str()) {
            (Lang::Ru, "from") => "с",
            (Lang::Ru, "to") => "по",
            (Lang::Ru, "as_of") => "на момент",
            (Lang::Ru, "days") => "дней",
            (Lang::Ru, "months") => "месяцев",
            (Lang::Ru, "grain") => "шаг",
            (Lang::Ru, "pipeline") => "воронка",
            (Lang::Ru, "level") => "строки",
            (_, name) => name,
        };
        let _ = write!(
            out,
            "<label title=\"{}\">{}{input}</label>",
            esc(p.description_in(lang.code())),
            esc(label)
        );
    }
    let _ = write!(
        out,
        "<button type=\"submit\">{}</button></form>",
        lang.pick("Посчитать", "Run")
    );
    out
}

/// GET /metric/{name}/csv: the answer the page shows, as CSV; audited as an export.
pub async fn metric_csv(
    State(app): State<Arc<App>>,
    axum::Extension(ctx): axum::Extension<Ctx>,
    Path(name): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let lang = ctx.lang;
    let viewer = viewer_of(&ctx);
    let metric = match allowed_metric(&app, &ctx, &name) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let args = metric_args(metric, &q);
    let session = match app.query_session(login_of(&ctx)).await {
        Ok(s) => s,
        Err(e) => return trouble(lang, viewer.as_ref(), &e.to_string()),
    };
    let result = match app.cache.run_metric(&session, metric, &args).await {
        Ok(r) => r,
        Err(e) => return trouble(lang, viewer.as_ref(), &e.to_string()),
    };
    let mut bytes = Vec::new();
    {
        let mut writer = arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut bytes);
        // No rows still has a header line.
        let empty = arrow::array::RecordBatch::new_empty(result.schema.clone());
        let batches = if result.batches.is_empty() {
            std::slice::from_ref(&empty)
        } else {
            result.batches.as_slice()
        };
        for batch in batches {
            if let Err(e) = writer.write(batch) {
                return trouble(lang, viewer.as_ref(), &e.to_string());
            }
        }
    }
    let outcome = app.audit(Event {
        actor: login_of(&ctx).to_string(),
        action: action::WEB_EXPORT.into(),
        target: metric.name.clone(),
        details: serde_json::json!({
            "params": args.iter().cloned().collect::<BTreeMap<_, _>>(),
            "rows": result.rows(),
            "bytes": bytes.len(),
            "snapshot": result.snapshot_id,
            "ip": ctx.ip.to_string(),
        }),
        outcome: Outcome::Ok,
    });
    // An export that cannot be recorded is not made.
    if let Err(e) = outcome {
        return trouble(lang, viewer.as_ref(), &e.to_string());
    }
    let file = format!(
        "attachment; filename=\"{}-snapshot-{}.csv\"",
        metric.name, result.snapshot_id
    );
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_str(&file).unwrap_or(HeaderValue::from_static("attachment")),
            ),
        ],
        bytes,
    )
        .into_response()
}

/// GET /admin: the system's state — sources and their last runs, schedules, users, the audit log's
/// integrity — and no CRM data at all.
pub async fn admin(
    State(app): State<Arc<App>>,
    axum::Extension(ctx): axum::Extension<Ctx>,
) -> Response {
    let lang = ctx.lang;
    let viewer = viewer_of(&ctx);
    let runs = match app.control.ingest_runs(200).await {
        Ok(r) => r,
        Err(e) => return trouble(lang, viewer.as_ref(), &e.to_string()),
    };
    let users = match app.control.list_users().await {
        Ok(u) => u,
        Err(e) => return trouble(lang, viewer.as_ref(), &e.to_string()),
    };
    let stale = app
        .stale_sources(chrono::Utc::now())
        .await
        .unwrap_or_default();
    let zone = app.engine.config().time_zone;
    let mut body = String::new();
    let _ = write!(
        body,
        "<h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        lang.pick("Источники", "Sources"),
        lang.pick("Источник", "Source"),
        lang.pick("Расписание", "Schedule"),
        lang.pick("Последняя загрузка", "Last run"),
        lang.pick("Итог", "Outcome"),
        lang.pick("Снимок", "Snapshot"),
    );
    let mut names: Vec<String> = app.sources.iter().map(|s| s.name.clone()).collect();
    for r in &runs {
        if !names.contains(&r.source) {
            names.push(r.source.clone());
        }
    }
    for name in &names {
        let schedule = app
            .sources
            .iter()
            .find(|s| &s.name == name)
            .and_then(|s| s.schedule.as_ref())
            .map_or_else(
                || lang.pick("вручную", "by hand").to_string(),
                ToString::to_string,
            );
        let last = runs.iter().find(|r| &r.source == name);
        let when = last
            .and_then(|r| r.ended_at.as_deref().or(Some(r.started_at.as_str())))
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map_or("—".into(), |t| {
                lang.time(t.with_timezone(&chrono::Utc), zone)
            });
        let outcome = last.map_or("—", |r| {
            use kartoteka_engine::control::RunOutcome as O;
            match (lang, r.outcome) {
                (Lang::Ru, O::Running) => "идёт",
                (Lang::Ru, O::Ok) => "успешно",
                (Lang::Ru, O::Failed) => "ошибка",
                (Lang::Ru, O::Mismatch) => "не сошлось с источником",
                (Lang::Ru, O::Interrupted) => "прервана",
                (Lang::En, O::Running) => "running",
                (Lang::En, O::Ok) => "ok",
                (Lang::En, O::Failed) => "failed",
                (Lang::En, O::Mismatch) => "mismatch with the source",
                (Lang::En, O::Interrupted) => "interrupted",
            }
        });
        let is_stale = stale.iter().any(|(s, _)| s == name);
        let _ = write!(
            body,
            "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td><td>{}</td></tr>",
            if is_stale { " class=\"stale\"" } else { "" },
            esc(name),
            esc(&schedule),
            esc(&when),
            esc(outcome),
            if is_stale {
                lang.pick(" · устарел", " · stale")
            } else {
                ""
            },
            last.and_then(|r| r.snapshot_id)
                .map_or("—".into(), |s| s.to_string()),
        );
    }
    body.push_str("</tbody></table>");
    if !app.jobs.is_empty() {
        let _ = write!(
            body,
            "<h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
            lang.pick("Задания по расписанию", "Scheduled jobs"),
            lang.pick("Задание", "Job"),
            lang.pick("Расписание", "Schedule"),
            lang.pick("Следующий запуск", "Next run"),
            lang.pick("Последний запуск", "Last run"),
        );
        let now = chrono::Utc::now();
        for (job, schedule) in &app.jobs {
            let next = schedule
                .next_after(now)
                .map_or("—".into(), |t| lang.time(t, zone));
            let last = match app.control.job_slot(job).await {
                Ok(Some(slot)) => {
                    use kartoteka_engine::control::SlotOutcome as S;
                    let outcome = match (lang, slot.outcome) {
                        (Lang::Ru, S::Armed) => "ещё не запускалось",
                        (Lang::Ru, S::Ok) => "успешно",
                        (Lang::Ru, S::Failed) => "ошибка",
                        (Lang::Ru, S::Skipped) => "пропущено: шёл прежний",
                        (Lang::En, S::Armed) => "not run yet",
                        (Lang::En, S::Ok) => "ok",
                        (Lang::En, S::Failed) => "failed",
                        (Lang::En, S::Skipped) => "skipped: the previous one was running",
                    };
                    format!("{} · {outcome}", lang.time(slot.slot, zone))
                }
                Ok(None) => "—".into(),
                Err(e) => e.to_string(),
            };
            let _ = write!(
                body,
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(job),
                esc(&schedule.to_string()),
                esc(&next),
                esc(&last)
            );
        }
        body.push_str("</tbody></table>");
    }
    let _ = write!(
        body,
        "<h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        lang.pick("Пользователи", "Users"),
        lang.pick("Логин", "Login"),
        lang.pick("Роль", "Role"),
        lang.pick("Статус", "Status"),
        lang.pick("Второй фактор", "Second factor"),
        lang.pick(
            "Пароль выдан, ещё не сменён",
            "Issued password not yet changed"
        ),
        lang.pick("Изменён", "Changed"),
    );
    for u in &users {
        let second = match app.control.last_totp_step(&u.login).await {
            Ok(Some(_)) => lang.pick("подключён", "set up"),
            Ok(None) => lang.pick("нет", "no"),
            Err(_) => "?",
        };
        let changed = chrono::DateTime::parse_from_rfc3339(&u.changed_at).map_or_else(
            |_| u.changed_at.clone(),
            |t| lang.time(t.with_timezone(&chrono::Utc), zone),
        );
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{second}</td><td>{}</td><td>{}</td></tr>",
            esc(&u.login),
            lang.role(u.role),
            match (lang, u.status) {
                (Lang::Ru, kartoteka_engine::control::UserStatus::Active) => "активен",
                (Lang::Ru, _) => "отключён",
                (Lang::En, kartoteka_engine::control::UserStatus::Active) => "active",
                (Lang::En, _) => "disabled",
            },
            if u.must_change_password {
                lang.pick("да", "yes")
            } else {
                lang.pick("нет", "no")
            },
            esc(&format!("{changed} ({})", u.changed_by)),
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(body, "<h2>{}</h2>", lang.pick("Журнал аудита", "Audit log"));
    match app.engine.audit() {
        Some(log) => {
            let report = kartoteka_engine::audit::verify(
                &log.log_path(),
                &[log.checkpoint_path()],
                &log.public_key(),
            );
            let text = match report {
                Ok(r) if r.ok() => match lang {
                    Lang::Ru => format!(
                        "Цепочка цела: записей — {}, подписанных контрольных точек — {}.",
                        r.entries, r.checkpoints
                    ),
                    Lang::En => format!(
                        "The chain is intact: {} entries, {} signed checkpoints.",
                        r.entries, r.checkpoints
                    ),
                },
                Ok(r) => format!(
                    "{} {}",
                    lang.pick("ЦЕПОЧКА НАРУШЕНА:", "THE CHAIN IS BROKEN:"),
                    r.broken.unwrap_or_default()
                ),
                Err(e) => e.to_string(),
            };
            let _ = write!(body, "<p>{}</p>", esc(&text));
        }
        None => {
            let _ = write!(
                body,
                "<p>{}</p>",
                lang.pick("Журнал не ведётся.", "No audit log.")
            );
        }
    }
    audit_view(&app, &ctx, "/admin", None);
    Html(page(
        lang,
        lang.pick("Система", "System"),
        "/admin",
        viewer.as_ref(),
        None,
        &body,
    ))
    .into_response()
}
