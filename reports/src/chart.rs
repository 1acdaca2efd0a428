//! Charts drawn with plotters, as SVG or PNG, from a panel's query result: line, bar, stacked bar,
//! funnel, cohort heatmap, KPI tile (with the change against the previous period) and table. The
//! bundled DejaVu Sans (with Cyrillic) is drawn through `ab_glyph`, so no system font library is
//! needed. Values are written with thousands separators and their unit (₽, %, …); time buckets are
//! shown as dates (months as `2025-03`); a result without rows says so instead of drawing empty axes.

use std::sync::Once;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::spec::{ChartKind, Panel};
use crate::{Error, Result};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "kartoteka-sans";

/// Size of a chart panel, pixels.
pub const SIZE: (u32, u32) = (960, 540);
/// Size of a KPI tile, pixels.
pub const KPI_SIZE: (u32, u32) = (480, 270);

/// Okabe–Ito: distinguishable with the common colour-vision deficiencies.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xB2),
    RGBColor(0xE6, 0x9F, 0x00),
    RGBColor(0x00, 0x9E, 0x73),
    RGBColor(0xCC, 0x79, 0xA7),
    RGBColor(0x56, 0xB4, 0xE9),
    RGBColor(0xD5, 0x5E, 0x00),
    RGBColor(0xF0, 0xE4, 0x42),
    RGBColor(0x00, 0x00, 0x00),
];
const GREEN: RGBColor = RGBColor(0x00, 0x8A, 0x3E);
const RED: RGBColor = RGBColor(0xC0, 0x1B, 0x1B);
const GREY: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// Width of the plotting area of a chart panel, pixels (the panel less the value axis and margins).
const PLOT_WIDTH: f64 = (SIZE.0 - 100 - 32) as f64;

/// `s`, cut to `max` characters with an ellipsis.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() > max.max(2) {
        format!("{}…", s.chars().take(max.max(2) - 1).collect::<String>())
    } else {
        s.to_string()
    }
}

/// The catalog's unit of amounts: replaced by the currency the snapshot's mapping declares
/// ([`crate::spec::Panel::with_currency`]); left as it is, amounts are bare numbers.
pub const MONEY: &str = "money";

/// How a currency is written after an amount, when `unit` is one (an ISO 4217 code: three capital
/// letters): its sign where it has a common one, else the code.
pub fn currency_sign(unit: &str) -> Option<&str> {
    if !(unit.len() == 3 && unit.bytes().all(|b| b.is_ascii_uppercase())) {
        return None;
    }
    Some(match unit {
        "RUB" => "₽",
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "CNY" | "JPY" => "¥",
        "KZT" => "₸",
        "UAH" => "₴",
        "INR" => "₹",
        "TRY" => "₺",
        other => other,
    })
}

/// Units shown with each value rather than in a column's caption: currencies and shares.
fn per_value(unit: &str) -> bool {
    unit == "ratio" || unit == MONEY || currency_sign(unit).is_some()
}

/// A short form for labels on bars: `10.0 млн ₽`, `830 тыс ₽`, `45.2 %`.
pub fn compact_value(v: f64, unit: &str) -> String {
    compact_value_in(v, unit, false)
}

/// [`compact_value`], in English when `english` (`10.0 M $`).
pub fn compact_value_in(v: f64, unit: &str, english: bool) -> String {
    let suffix = match currency_sign(unit) {
        Some(sign) => format!("\u{A0}{sign}"),
        None if matches!(unit, "ratio" | "" | MONEY) => String::new(),
        None => return format_value_in(v, unit, english),
    };
    if unit == "ratio" {
        return format_value_in(v, unit, english);
    }
    let (billion, million, thousand) = if english {
        ("\u{A0}bn", "\u{A0}M", "\u{A0}k")
    } else {
        ("\u{A0}млрд", "\u{A0}млн", "\u{A0}тыс")
    };
    let (n, scale) = match v.abs() {
        a if a >= 1e9 => (v / 1e9, billion),
        a if a >= 1e6 => (v / 1e6, million),
        a if a >= 1e4 => (v / 1e3, thousand),
        _ => return format_value_in(v, unit, english),
    };
    let digits = if n.abs() >= 100.0 { 0 } else { 1 };
    format!("{n:.digits$}{scale}{suffix}")
}

/// Series beyond this many are folded into «прочие» (others), so the legend stays readable.
const MAX_SERIES: usize = 8;
/// Rows a table panel shows; the rest are counted under it.
const MAX_TABLE_ROWS: usize = 20;
/// Columns a table panel shows.
const MAX_TABLE_COLUMNS: usize = 8;

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled font is a valid TrueType font"));
    });
}

/// Group digits by thousands with a narrow no-break space: 1234567.4 → "1 234 567".
pub fn thousands(v: f64) -> String {
    let neg = v < 0.0 && v.round() != 0.0;
    let digits = (v.abs().round() as u128).to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202F}');
        }
        out.push(ch);
    }
    if neg { format!("-{out}") } else { out }
}

/// The catalog's count units as a Russian reader writes them beside a number (abbreviated: a number
/// in front would otherwise need the noun declined).
pub fn unit_label(unit: &str) -> &str {
    match unit {
        "deals" => "сд.",
        "clients" => "клиент.",
        "days" => "дн.",
        "h" => "ч",
        "min" => "мин",
        "tasks" => "задач",
        "messages" => "сообщ.",
        "interactions" => "контакт.",
        "payments" => "плат.",
        "changes" => "изм.",
        "actions" => "действ.",
        "attempts" => "попыт.",
        "entries" => "запис.",
        "exports" => "выгр.",
        "rows" => "строк",
        other => other,
    }
}

/// A value as a person reads it, with its unit: `1 500 000 ₽`, `42.5 %`, `12.34`, `154 сд.`.
pub fn format_value(v: f64, unit: &str) -> String {
    format_value_in(v, unit, false)
}

/// [`format_value`], with the unit in English when `english` (`154 deals`).
pub fn format_value_in(v: f64, unit: &str, english: bool) -> String {
    let unit = if english { unit } else { unit_label(unit) };
    match unit {
        "ratio" => format!("{:.1}\u{A0}%", v * 100.0),
        MONEY => thousands(v),
        _ if currency_sign(unit).is_some() => {
            format!(
                "{}\u{A0}{}",
                thousands(v),
                currency_sign(unit).unwrap_or(unit)
            )
        }
        _ if v.fract() == 0.0 || v.abs() >= 100.0 => {
            let n = thousands(v);
            if unit.is_empty() {
                n
            } else {
                format!("{n}\u{A0}{unit}")
            }
        }
        _ => {
            let n = format!("{v:.2}");
            if unit.is_empty() {
                n
            } else {
                format!("{n}\u{A0}{unit}")
            }
        }
    }
}

/// Russian names of the catalog's result columns.
const COLUMNS_RU: &[(&str, &str)] = &[
    ("month", "месяц"),
    ("revenue", "выручка"),
    ("won_deals", "выиграно сделок"),
    ("scope", "кто"),
    ("target", "план"),
    ("attainment", "выполнение"),
    ("pipeline", "воронка"),
    ("position", "№"),
    ("stage", "этап"),
    ("deals", "сделок"),
    ("amount", "сумма"),
    ("source", "канал"),
    ("new_clients", "новых клиентов"),
    ("spend", "расходы"),
    ("cac", "CAC"),
    ("roi", "ROI"),
    ("manager", "менеджер"),
    ("name", "имя"),
    ("win_rate", "доля выигранных"),
    ("activities", "активностей"),
    ("median_response_minutes", "медиана ответа, мин"),
    ("step_compliance", "соблюдение шагов"),
    ("cohort", "когорта"),
    ("month_offset", "месяцев спустя"),
    ("cohort_size", "размер когорты"),
    ("active_clients", "активных клиентов"),
    ("retention", "удержание"),
    ("weighted_amount", "взвешенная сумма"),
    ("unforecast_deals", "сделок без вероятности"),
    ("unforecast_amount", "сумма без вероятности"),
    ("reached", "дошло"),
    ("conversion", "конверсия"),
    ("owner", "ответственный"),
    ("stalled_deals", "зависших сделок"),
    ("staff", "сотрудник"),
    ("overdue_now", "просрочено сейчас"),
    ("due_in_period", "со сроком в периоде"),
    ("on_time", "в срок"),
    ("on_time_rate", "доля в срок"),
    ("answered", "отвечено"),
    ("median_minutes", "медиана, мин"),
    ("p90_minutes", "90-й перцентиль, мин"),
    ("unanswered", "без ответа"),
    ("period", "период"),
    ("calls", "звонки"),
    ("emails", "письма"),
    ("messages", "сообщения"),
    ("meetings", "встречи"),
    ("staff_id", "id сотрудника"),
    ("won", "выиграно"),
    ("lost", "проиграно"),
    ("closed", "закрыто"),
];

/// A result column's name in Russian (the name with spaces when the catalog's column is not known).
pub fn column_ru(column: &str) -> String {
    COLUMNS_RU
        .iter()
        .find(|(k, _)| *k == column)
        .map_or_else(|| column.replace('_', " "), |(_, v)| (*v).to_string())
}

/// An axis caption: the column, with its unit in a reader's terms (Russian).
#[cfg(test)]
fn axis_caption(column: &str, unit: &str) -> String {
    axis_caption_in(column, unit, false)
}

/// [`axis_caption`], in English when `english` (the column's name with spaces).
fn axis_caption_in(column: &str, unit: &str, english: bool) -> String {
    let column = if english {
        column.replace('_', " ")
    } else {
        column_ru(column)
    };
    let unit = match unit {
        "" | MONEY => return column,
        "ratio" => "%",
        other if english => currency_sign(other).unwrap_or(other),
        other => currency_sign(other).unwrap_or(unit_label(other)),
    };
    format!("{column}, {unit}")
}

/// One series of values over the x categories.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// One value per x category; `None` where the result has none.
    pub values: Vec<Option<f64>>,
}

/// What a chart draws, taken out of the query result.
#[derive(Debug, Clone, PartialEq)]
pub enum ChartData {
    /// Line, bar, stacked bar and funnel: categories along x, one or more series.
    Categories {
        /// Category labels in result order.
        x: Vec<String>,
        /// Series.
        series: Vec<Series>,
    },
    /// Heatmap: `rows` (series values) × `x`, a value per cell.
    Grid {
        /// Column labels.
        x: Vec<String>,
        /// Row labels.
        rows: Vec<String>,
        /// `cells[row][column]`.
        cells: Vec<Vec<Option<f64>>>,
        /// Cells `(row, column)` of a period still in progress (outlined, their value starred).
        in_progress: Vec<(usize, usize)>,
    },
    /// KPI tile: the value now and in the previous period.
    Kpi {
        /// The value.
        value: Option<f64>,
        /// The same metric over the previous period, when there is one.
        previous: Option<f64>,
    },
    /// Table: header and rows as text.
    Table {
        /// Column names.
        columns: Vec<String>,
        /// Rows shown.
        rows: Vec<Vec<String>>,
        /// Rows in the result (more than shown when cut).
        total_rows: usize,
    },
}

/// A chart ready to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Chart type.
    pub kind: ChartKind,
    /// Title.
    pub title: String,
    /// Caption of the x axis.
    pub x_caption: String,
    /// Caption of the value axis.
    pub y_caption: String,
    /// Unit of the values.
    pub unit: String,
    /// The data.
    pub data: ChartData,
    /// Its words (units, notes, captions) in English rather than Russian.
    pub english: bool,
}

/// Text of cell `i` of `array`: times as dates (months as `YYYY-MM`), everything else as Arrow shows it.
fn cell_text(array: &ArrayRef, i: usize, fmt: &ArrayFormatter<'_>) -> String {
    if array.is_null(i) {
        return "—".into();
    }
    let micros = match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, _) => Some(
            array
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(i),
        ),
        _ => None,
    };
    let text = fmt.value(i).to_string();
    let local = match (micros, array.data_type()) {
        // A zoned timestamp's text is its wall-clock time in that zone; take the text's date part.
        (Some(_), DataType::Timestamp(_, Some(_))) => text.get(..19).map(str::to_string),
        (Some(us), _) => chrono::DateTime::from_timestamp_micros(us)
            .map(|t| t.naive_utc().format("%Y-%m-%dT%H:%M:%S").to_string()),
        _ => None,
    };
    let date_like = local.unwrap_or(text);
    short_label(&date_like)
}

/// What is appended to the label of a period still in progress (short: axis labels are cut to fit),
/// explained under the axis by [`IN_PROGRESS_NOTE`]: its bar or point is not a collapse, the period
/// has not ended.
pub const IN_PROGRESS: &str = "*";
/// The axis caption's explanation of [`IN_PROGRESS`].
pub const IN_PROGRESS_NOTE: &str = "* период ещё идёт";
/// [`IN_PROGRESS_NOTE`] in English.
pub const IN_PROGRESS_NOTE_EN: &str = "* period still in progress";

impl Chart {
    fn in_progress_note(&self) -> &'static str {
        if self.english {
            IN_PROGRESS_NOTE_EN
        } else {
            IN_PROGRESS_NOTE
        }
    }

    /// Mark the x category of the period holding `today` (the reporting zone's date of the data) as
    /// still in progress: on a monthly axis (`YYYY-MM` labels) this month; on a daily or weekly axis
    /// (`YYYY-MM-DD`, a week when the labels are 7 days apart) the day or the week holding `today`.
    pub fn mark_in_progress(&mut self, today: chrono::NaiveDate) {
        // A cohort grid: row = the cohort's month, column = months after it; the cell whose month is
        // this month is still going on.
        if let ChartData::Grid {
            x,
            rows,
            in_progress,
            ..
        } = &mut self.data
        {
            let current =
                chrono::Datelike::year(&today) * 12 + chrono::Datelike::month0(&today) as i32;
            for (r, row) in rows.iter().enumerate() {
                let Ok(start) = chrono::NaiveDate::parse_from_str(&format!("{row}-01"), "%Y-%m-%d")
                else {
                    continue;
                };
                for (c, offset) in x.iter().enumerate() {
                    if let Ok(k) = offset.parse::<i32>()
                        && chrono::Datelike::year(&start) * 12
                            + chrono::Datelike::month0(&start) as i32
                            + k
                            == current
                    {
                        in_progress.push((r, c));
                    }
                }
            }
            if !in_progress.is_empty() {
                self.x_caption = format!("{} · {}", self.x_caption, self.in_progress_note());
            }
            return;
        }
        let ChartData::Categories { x, .. } = &mut self.data else {
            return;
        };
        let before = x.clone();
        let month = |l: &str| chrono::NaiveDate::parse_from_str(&format!("{l}-01"), "%Y-%m-%d");
        let day = |l: &str| chrono::NaiveDate::parse_from_str(l, "%Y-%m-%d");
        if !x.is_empty() && x.iter().all(|l| l.len() == 7 && month(l).is_ok()) {
            let current = today.format("%Y-%m").to_string();
            for l in x.iter_mut().filter(|l| **l == current) {
                l.push_str(IN_PROGRESS);
            }
        } else {
            let days: Option<Vec<chrono::NaiveDate>> = x.iter().map(|l| day(l).ok()).collect();
            if let Some(days) = days.filter(|d| !d.is_empty()) {
                let weekly =
                    days.len() > 1 && days.windows(2).all(|w| (w[1] - w[0]).num_days() % 7 == 0);
                let span = if weekly { 7 } else { 1 };
                for (l, d) in x.iter_mut().zip(&days) {
                    if *d <= today && (today - *d).num_days() < span {
                        l.push_str(IN_PROGRESS);
                    }
                }
            }
        }
        if *x != before {
            self.x_caption = format!("{} · {}", self.x_caption, self.in_progress_note());
        }
    }
}

/// Time buckets as people say them: a month start is the month, midnight is the day.
fn short_label(label: &str) -> String {
    let b = label.as_bytes();
    let is_date =
        b.len() >= 10 && b[4] == b'-' && b[7] == b'-' && b[..4].iter().all(u8::is_ascii_digit);
    if !is_date {
        return label.to_string();
    }
    let time = label.get(11..19).unwrap_or("00:00:00");
    match (time, &label[8..10]) {
        ("00:00:00", "01") => label[..7].to_string(),
        ("00:00:00", _) => label[..10].to_string(),
        _ => format!("{} {}", &label[..10], &label[11..16]),
    }
}

struct Columns<'a> {
    batches: &'a [RecordBatch],
    metric: &'a str,
}

impl Columns<'_> {
    fn shape(&self, detail: String) -> Error {
        Error::Shape {
            metric: self.metric.into(),
            detail,
        }
    }

    fn column(&self, b: &RecordBatch, name: &str) -> Result<ArrayRef> {
        b.column_by_name(name)
            .cloned()
            .ok_or_else(|| self.shape(format!("the result has no column {name}")))
    }

    fn texts(&self, name: &str) -> Result<Vec<String>> {
        let opts = FormatOptions::default();
        let mut out = Vec::new();
        for b in self.batches {
            let col = self.column(b, name)?;
            let fmt = ArrayFormatter::try_new(col.as_ref(), &opts)
                .map_err(|e| Error::Draw(e.to_string()))?;
            out.extend((0..b.num_rows()).map(|i| cell_text(&col, i, &fmt)));
        }
        Ok(out)
    }

    fn numbers(&self, name: &str) -> Result<Vec<Option<f64>>> {
        let mut out = Vec::new();
        for b in self.batches {
            let col = arrow::compute::cast(&self.column(b, name)?, &DataType::Float64)
                .map_err(|e| self.shape(format!("column {name} is not numeric: {e}")))?;
            let col = col.as_primitive::<arrow::datatypes::Float64Type>();
            out.extend((0..col.len()).map(|i| (!col.is_null(i)).then(|| col.value(i))));
        }
        Ok(out)
    }
}

/// Distinct values in order of first appearance, and each input's index among them.
fn distinct(values: &[String]) -> (Vec<String>, Vec<usize>) {
    let mut order: Vec<String> = Vec::new();
    let mut index = std::collections::HashMap::new();
    let ids = values
        .iter()
        .map(|v| {
            *index.entry(v.clone()).or_insert_with(|| {
                order.push(v.clone());
                order.len() - 1
            })
        })
        .collect();
    (order, ids)
}

impl Chart {
    /// Take what `panel` draws out of its result (`previous`: the result over the previous period,
    /// for a KPI tile).
    pub fn from_result(
        panel: &Panel,
        batches: &[RecordBatch],
        previous: Option<&[RecordBatch]>,
    ) -> Result<Chart> {
        let cols = Columns {
            batches,
            metric: &panel.metric,
        };
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let y0 = panel.y.first().cloned().unwrap_or_default();
        let data = match panel.chart {
            ChartKind::Table => {
                let schema = batches.first().map(|b| b.schema());
                let columns: Vec<String> = schema
                    .map(|s| {
                        s.fields()
                            .iter()
                            .take(MAX_TABLE_COLUMNS)
                            .map(|f| f.name().clone())
                            .collect()
                    })
                    .unwrap_or_default();
                // Numbers with a unit in the catalog as people read them (identifiers have none and
                // stay as they are); everything else as text.
                let numeric = |c: &str| {
                    panel.column_units.get(c).is_some_and(|u| !u.is_empty())
                        && batches.first().is_some_and(|b| {
                            b.column_by_name(c)
                                .is_some_and(|a| a.data_type().is_numeric())
                        })
                };
                let texts = columns
                    .iter()
                    .map(|c| {
                        if numeric(c) {
                            // ₽ and % go with each value; other units (deals, min) in the header.
                            let unit = panel.column_units.get(c).map_or("", String::as_str).trim();
                            let unit = if per_value(unit) { unit } else { "" };
                            Ok(cols
                                .numbers(c)?
                                .into_iter()
                                .map(|v| {
                                    v.map_or("—".into(), |v| {
                                        format_value_in(v, unit, panel.english)
                                    })
                                })
                                .collect())
                        } else {
                            cols.texts(c)
                        }
                    })
                    .collect::<Result<Vec<_>>>()?;
                let shown = rows.min(MAX_TABLE_ROWS);
                let columns = columns
                    .into_iter()
                    .map(|c| match panel.column_units.get(&c).map(|u| u.trim()) {
                        Some(u) if !u.is_empty() && !per_value(u) => {
                            format!("{c}, {u}")
                        }
                        _ => c,
                    })
                    .collect();
                ChartData::Table {
                    rows: (0..shown)
                        .map(|r| texts.iter().map(|c| c[r].clone()).collect())
                        .collect(),
                    columns,
                    total_rows: rows,
                }
            }
            ChartKind::Kpi => {
                let first = |b: &[RecordBatch]| -> Result<Option<f64>> {
                    Ok(Columns {
                        batches: b,
                        metric: &panel.metric,
                    }
                    .numbers(&y0)?
                    .into_iter()
                    .flatten()
                    .next())
                };
                ChartData::Kpi {
                    value: first(batches)?,
                    previous: previous.map(first).transpose()?.flatten(),
                }
            }
            ChartKind::Heatmap => {
                let series = panel
                    .series
                    .as_deref()
                    .expect("checked at load: heatmap has series");
                let (x, xi) = distinct(&cols.texts(&panel.x)?);
                let (row_names, ri) = distinct(&cols.texts(series)?);
                let mut cells = vec![vec![None; x.len()]; row_names.len()];
                for ((r, c), v) in ri.iter().zip(&xi).zip(cols.numbers(&y0)?) {
                    cells[*r][*c] = v;
                }
                ChartData::Grid {
                    x,
                    rows: row_names,
                    cells,
                    in_progress: Vec::new(),
                }
            }
            _ => {
                let (x, xi) = distinct(&cols.texts(&panel.x)?);
                // Several value columns and a series column: a stacked bar stacks the value columns
                // summed over the series; other charts draw a series per (series value, column).
                let split = panel
                    .series
                    .as_deref()
                    .filter(|_| panel.y.len() == 1 || panel.chart != ChartKind::StackedBar);
                let series = match split {
                    Some(s) => {
                        let labels = cols.texts(s)?;
                        // One entry per (row, value column): its series name, x and value.
                        let mut keys = Vec::new();
                        let mut cells = Vec::new();
                        for y in &panel.y {
                            for ((label, c), v) in labels.iter().zip(&xi).zip(cols.numbers(y)?) {
                                keys.push(if panel.y.len() == 1 {
                                    label.clone()
                                } else {
                                    format!("{label} · {}", y.replace('_', " "))
                                });
                                cells.push((*c, v));
                            }
                        }
                        let (names, si) = distinct(&keys);
                        let mut series: Vec<Series> = names
                            .into_iter()
                            .map(|name| Series {
                                name,
                                values: vec![None; x.len()],
                            })
                            .collect();
                        for ((c, v), s) in cells.iter().zip(&si) {
                            add(&mut series[*s].values[*c], *v);
                        }
                        fold_series(series, panel.english)
                    }
                    None => panel
                        .y
                        .iter()
                        .map(|y| {
                            let mut values = vec![None; x.len()];
                            for (c, v) in xi.iter().zip(cols.numbers(y)?) {
                                add(&mut values[*c], v);
                            }
                            Ok(Series {
                                name: y.replace('_', " "),
                                values,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?,
                };
                ChartData::Categories { x, series }
            }
        };
        Ok(Chart {
            kind: panel.chart,
            title: panel.title.clone(),
            x_caption: axis_caption_in(&panel.x, "", panel.english),
            y_caption: axis_caption_in(
                if panel.y.len() == 1 { &y0 } else { "" },
                &panel.unit,
                panel.english,
            ),
            unit: panel.unit.clone(),
            data,
            english: panel.english,
        })
    }

    /// Does the chart have nothing to show?
    pub fn is_empty(&self) -> bool {
        match &self.data {
            ChartData::Categories { x, .. } => x.is_empty(),
            ChartData::Grid { rows, .. } => rows.is_empty(),
            ChartData::Kpi { value, .. } => value.is_none(),
            ChartData::Table { total_rows, .. } => *total_rows == 0,
        }
    }

    /// Pixel size.
    pub fn size(&self) -> (u32, u32) {
        if self.kind == ChartKind::Kpi {
            KPI_SIZE
        } else {
            SIZE
        }
    }

    /// Render as an SVG document.
    pub fn to_svg(&self) -> Result<String> {
        register_font();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size()).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(draw)?;
        }
        Ok(svg)
    }

    /// Render as a PNG image.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        register_font();
        let (w, h) = self.size();
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
            self.draw(&root)?;
            root.present().map_err(draw)?;
        }
        let mut out = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut out, w, h);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(draw)?;
            writer.write_image_data(&rgb).map_err(draw)?;
        }
        Ok(out)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        root.fill(&WHITE).map_err(draw)?;
        if self.is_empty() {
            let (w, h) = self.size();
            root.draw_text(&self.title, &(FAMILY, 22).into_text_style(root), (24, 20))
                .map_err(draw)?;
            root.draw_text(
                if self.english {
                    "No data for the period"
                } else {
                    "Нет данных за период"
                },
                &(FAMILY, 18).into_text_style(root).color(&GREY),
                (24, (h / 2) as i32),
            )
            .map_err(draw)?;
            let _ = w;
            return Ok(());
        }
        match (&self.data, self.kind) {
            (ChartData::Categories { x, series }, ChartKind::Line) => self.line(root, x, series),
            (ChartData::Categories { x, series }, ChartKind::StackedBar) => {
                self.bars(root, x, series, true)
            }
            (ChartData::Categories { x, series }, ChartKind::Funnel) => {
                self.funnel(root, x, &series[0])
            }
            (ChartData::Categories { x, series }, _) => self.bars(root, x, series, false),
            (
                ChartData::Grid {
                    x,
                    rows,
                    cells,
                    in_progress,
                },
                _,
            ) => self.heatmap(root, x, rows, cells, in_progress),
            (ChartData::Kpi { value, previous }, _) => {
                self.kpi(root, value.unwrap_or_default(), *previous)
            }
            (
                ChartData::Table {
                    columns,
                    rows,
                    total_rows,
                },
                _,
            ) => self.table(root, columns, rows, *total_rows),
        }
    }

    /// The value axis's range: from 0 (or the lowest value, when negative) to a little above the top.
    fn value_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
        let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let hi = if hi <= lo { lo + 1.0 } else { hi };
        let pad = (hi - lo) * 0.08;
        (if lo < 0.0 { lo - pad } else { 0.0 })..hi + pad
    }

    /// Axes over categories `0..n` (labels at the integers) and values in `range`.
    fn axes<'a, DB: DrawingBackend>(
        &self,
        root: &'a DrawingArea<DB, Shift>,
        x: &'a [String],
        range: std::ops::Range<f64>,
    ) -> Result<
        ChartContext<
            'a,
            DB,
            Cartesian2d<
                plotters::coord::types::RangedCoordf64,
                plotters::coord::types::RangedCoordf64,
            >,
        >,
    > {
        let n = x.len();
        // Labels stay horizontal: as many as fit side by side (plotters spaces them), each cut to
        // what its slot can hold when every category gets one.
        let slot_px = PLOT_WIDTH / n.max(1) as f64;
        let longest = x.iter().map(|l| l.chars().count()).max().unwrap_or(1);
        let (labels_shown, max_chars) = if slot_px >= 6.5 * longest.min(6) as f64 + 8.0 {
            (n, ((slot_px - 8.0) / 6.5) as usize)
        } else {
            let width = 6.5 * longest.min(14) as f64 + 12.0;
            ((PLOT_WIDTH / width).max(2.0) as usize, 14)
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 24))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(100)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), range)
            .map_err(draw)?;
        let unit = self.unit.clone();
        let label_of = move |v: &f64| -> String {
            let i = v.round();
            if (v - i).abs() > 1e-6 || i < 0.0 {
                return String::new();
            }
            cut(&x.get(i as usize).cloned().unwrap_or_default(), max_chars)
        };
        let english = self.english;
        let value_of = move |v: &f64| format_value_in(*v, &unit, english);
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(0xDD, 0xDD, 0xDD))
            .x_desc(&self.x_caption)
            .y_desc(&self.y_caption)
            .x_labels(labels_shown.min(n))
            .x_label_formatter(&label_of)
            .y_label_formatter(&value_of)
            .y_labels(8)
            .axis_desc_style((FAMILY, 15))
            .label_style((FAMILY, 12));
        mesh.draw().map_err(draw)?;
        Ok(chart)
    }

    fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
        chart: &mut ChartContext<'a, DB, CT>,
        series: &[Series],
    ) -> Result<()> {
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(0xCC, 0xCC, 0xCC))
                .label_font((FAMILY, 13))
                .draw()
                .map_err(draw)?;
        }
        Ok(())
    }

    fn line<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        x: &[String],
        series: &[Series],
    ) -> Result<()> {
        let range = Self::value_range(
            series
                .iter()
                .flat_map(|s| s.values.iter().flatten().copied()),
        );
        let mut chart = self.axes(root, x, range)?;
        for (k, s) in series.iter().enumerate() {
            let colour = PALETTE[k % PALETTE.len()];
            let points: Vec<(f64, f64)> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as f64, v)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(draw)?
                .label(&s.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))
                .map_err(draw)?;
        }
        Self::legend(&mut chart, series)
    }

    fn bars<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        x: &[String],
        series: &[Series],
        stacked: bool,
    ) -> Result<()> {
        let totals: Vec<f64> = (0..x.len())
            .map(|i| series.iter().filter_map(|s| s.values[i]).sum())
            .collect();
        let range = if stacked {
            Self::value_range(totals.iter().copied())
        } else {
            Self::value_range(
                series
                    .iter()
                    .flat_map(|s| s.values.iter().flatten().copied()),
            )
        };
        let mut chart = self.axes(root, x, range)?;
        let k = series.len();
        let width = 0.8 / if stacked { 1.0 } else { k as f64 };
        let mut base = vec![0.0f64; x.len()];
        for (j, s) in series.iter().enumerate() {
            let colour = PALETTE[j % PALETTE.len()];
            let rects: Vec<Rectangle<(f64, f64)>> = s
                .values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let v = (*v)?;
                    let left = i as f64 - 0.4 + if stacked { 0.0 } else { j as f64 * width };
                    let (lo, hi) = if stacked {
                        let lo = base[i];
                        base[i] += v;
                        (lo, lo + v)
                    } else {
                        (0.0, v)
                    };
                    Some(Rectangle::new(
                        [(left, lo), (left + width * 0.94, hi)],
                        colour.filled(),
                    ))
                })
                .collect();
            chart
                .draw_series(rects)
                .map_err(draw)?
                .label(&s.name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                });
        }
        // One series: its value over each bar — exact when that fits the bars, else short, else
        // none.
        let slot_px = PLOT_WIDTH / x.len().max(1) as f64;
        if k == 1 {
            let fits = |labels: &[(f64, f64, String)]| {
                let widest = labels
                    .iter()
                    .map(|l| l.2.chars().count())
                    .max()
                    .unwrap_or(0);
                6.5 * widest as f64 + 6.0 <= slot_px
            };
            let labelled = |f: &dyn Fn(f64) -> String| -> Vec<(f64, f64, String)> {
                series[0]
                    .values
                    .iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| (i as f64, v, f(v))))
                    .collect()
            };
            let exact = labelled(&|v| format_value_in(v, &self.unit, self.english));
            let labels = if fits(&exact) {
                Some(exact)
            } else {
                Some(labelled(&|v| compact_value_in(v, &self.unit, self.english)))
                    .filter(|l| fits(l))
            };
            if let Some(labels) = labels {
                chart
                    .draw_series(labels.into_iter().map(|(i, v, text)| {
                        let half = (3.25 * text.chars().count() as f64) as i32;
                        EmptyElement::at((i, v))
                            + Text::new(text, (-half, -16), (FAMILY, 12).into_font().color(&GREY))
                    }))
                    .map_err(draw)?;
            }
        }
        Self::legend(&mut chart, series)
    }

    fn funnel<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        stages: &[String],
        values: &Series,
    ) -> Result<()> {
        let (w, h) = self.size();
        root.draw_text(&self.title, &(FAMILY, 24).into_text_style(root), (24, 16))
            .map_err(draw)?;
        let top = 64i32;
        let n = stages.len().max(1) as i32;
        let row = ((h as i32 - top - 16) / n).min(56);
        let max = values
            .values
            .iter()
            .flatten()
            .fold(0.0f64, |a, b| a.max(*b))
            .max(f64::MIN_POSITIVE);
        let first = values.values.first().copied().flatten();
        // Stage names on the left, the value and share to the right of each bar.
        let label_w = 220i32;
        let area = w as i32 - label_w - 190;
        let centre = label_w + 10 + area / 2;
        for (i, stage) in stages.iter().enumerate() {
            let v = values.values[i].unwrap_or(0.0);
            let half = ((v / max) * area as f64 / 2.0).round() as i32;
            let y = top + i as i32 * row;
            root.draw(&Rectangle::new(
                [
                    (centre - half.max(1), y + 4),
                    (centre + half.max(1), y + row - 4),
                ],
                PALETTE[0].mix(1.0 - 0.5 * i as f64 / n as f64).filled(),
            ))
            .map_err(draw)?;
            let stage_text = cut(stage, 24);
            root.draw_text(
                &stage_text,
                &(FAMILY, 15).into_text_style(root),
                (16, y + row / 2 - 8),
            )
            .map_err(draw)?;
            let share = match first {
                Some(f) if f > 0.0 && i > 0 => format!(" · {:.1}\u{A0}%", v / f * 100.0),
                _ => String::new(),
            };
            root.draw_text(
                &format!("{}{share}", format_value_in(v, &self.unit, self.english)),
                &(FAMILY, 14).into_text_style(root),
                (centre + half + 8, y + row / 2 - 8),
            )
            .map_err(draw)?;
        }
        Ok(())
    }

    fn heatmap<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        x: &[String],
        rows: &[String],
        cells: &[Vec<Option<f64>>],
        in_progress: &[(usize, usize)],
    ) -> Result<()> {
        let (w, h) = self.size();
        root.draw_text(&self.title, &(FAMILY, 24).into_text_style(root), (24, 16))
            .map_err(draw)?;
        let (left, top) = (120i32, 84i32);
        let cw = ((w as i32 - left - 24) / x.len().max(1) as i32).max(8);
        let rh = ((h as i32 - top - 40) / rows.len().max(1) as i32).clamp(8, 40);
        let max = cells
            .iter()
            .flatten()
            .flatten()
            .fold(0.0f64, |a, b| a.max(*b))
            .max(f64::MIN_POSITIVE);
        root.draw_text(
            &self.x_caption,
            &(FAMILY, 14).into_text_style(root).color(&GREY),
            (left, top - 40),
        )
        .map_err(draw)?;
        let label_every = (x.len() / 24).max(1);
        for (c, label) in x.iter().enumerate() {
            if c % label_every == 0 {
                root.draw_text(
                    label,
                    &(FAMILY, 12).into_text_style(root),
                    (left + c as i32 * cw + 2, top - 18),
                )
                .map_err(draw)?;
            }
        }
        let show_values = cw >= 44 && rh >= 18;
        for (r, name) in rows.iter().enumerate() {
            let y = top + r as i32 * rh;
            root.draw_text(
                name,
                &(FAMILY, 12).into_text_style(root),
                (8, y + rh / 2 - 7),
            )
            .map_err(draw)?;
            for (c, v) in cells[r].iter().enumerate() {
                let x0 = left + c as i32 * cw;
                let Some(v) = v else { continue };
                let t = (v / max).clamp(0.0, 1.0);
                // White to the palette's blue.
                let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
                let colour = RGBColor(mix(0xFF, 0x00), mix(0xFF, 0x72), mix(0xFF, 0xB2));
                root.draw(&Rectangle::new(
                    [(x0, y), (x0 + cw - 1, y + rh - 1)],
                    colour.filled(),
                ))
                .map_err(draw)?;
                let going = in_progress.contains(&(r, c));
                if going {
                    // The period has not ended: outlined in orange, the value starred.
                    root.draw(&Rectangle::new(
                        [(x0 + 1, y + 1), (x0 + cw - 2, y + rh - 2)],
                        RGBColor(0xE6, 0x9F, 0x00).stroke_width(2),
                    ))
                    .map_err(draw)?;
                }
                if show_values {
                    let ink = if t > 0.55 { WHITE } else { BLACK };
                    let text = format_value_in(*v, &self.unit, self.english);
                    root.draw_text(
                        &if going {
                            format!("{text}{IN_PROGRESS}")
                        } else {
                            text
                        },
                        &(FAMILY, 11).into_text_style(root).color(&ink),
                        (x0 + 3, y + rh / 2 - 6),
                    )
                    .map_err(draw)?;
                }
            }
        }
        Ok(())
    }

    fn kpi<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        value: f64,
        previous: Option<f64>,
    ) -> Result<()> {
        root.draw_text(&self.title, &(FAMILY, 20).into_text_style(root), (20, 18))
            .map_err(draw)?;
        root.draw_text(
            &format_value_in(value, &self.unit, self.english),
            &(FAMILY, 48).into_text_style(root),
            (20, 90),
        )
        .map_err(draw)?;
        let (text, colour) = match previous {
            Some(p) if p != 0.0 => {
                let change = (value - p) / p.abs() * 100.0;
                let arrow = if change > 0.0 {
                    "▲"
                } else if change < 0.0 {
                    "▼"
                } else {
                    "="
                };
                (
                    if self.english {
                        format!(
                            "{arrow} {change:+.1}\u{A0}% on the previous period ({})",
                            format_value_in(p, &self.unit, true)
                        )
                    } else {
                        format!(
                            "{arrow} {change:+.1}\u{A0}% к прошлому периоду ({})",
                            format_value(p, &self.unit)
                        )
                    },
                    if change >= 0.0 { GREEN } else { RED },
                )
            }
            Some(p) if self.english => (
                format!("previous period: {}", format_value_in(p, &self.unit, true)),
                GREY,
            ),
            Some(p) => (
                format!("прошлый период: {}", format_value(p, &self.unit)),
                GREY,
            ),
            None if self.english => ("no data for the previous period".into(), GREY),
            None => ("нет данных за прошлый период".into(), GREY),
        };
        root.draw_text(
            &text,
            &(FAMILY, 15).into_text_style(root).color(&colour),
            (20, 180),
        )
        .map_err(draw)?;
        Ok(())
    }

    fn table<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        columns: &[String],
        rows: &[Vec<String>],
        total_rows: usize,
    ) -> Result<()> {
        let (w, _) = self.size();
        root.draw_text(&self.title, &(FAMILY, 24).into_text_style(root), (24, 16))
            .map_err(draw)?;
        let cw = (w as i32 - 48) / columns.len().max(1) as i32;
        let max_chars = (cw / 7).max(4) as usize;
        let top = 60i32;
        let rh = 22i32;
        root.draw(&Rectangle::new(
            [(24, top), (w as i32 - 24, top + rh)],
            RGBColor(0xE8, 0xEE, 0xF6).filled(),
        ))
        .map_err(draw)?;
        for (c, name) in columns.iter().enumerate() {
            root.draw_text(
                &cut(&name.replace('_', " "), max_chars),
                &(FAMILY, 13).into_text_style(root),
                (28 + c as i32 * cw, top + 4),
            )
            .map_err(draw)?;
        }
        for (r, row) in rows.iter().enumerate() {
            let y = top + (r as i32 + 1) * rh;
            if r % 2 == 1 {
                root.draw(&Rectangle::new(
                    [(24, y), (w as i32 - 24, y + rh)],
                    RGBColor(0xF6, 0xF6, 0xF6).filled(),
                ))
                .map_err(draw)?;
            }
            for (c, cell) in row.iter().enumerate() {
                root.draw_text(
                    &cut(cell, max_chars),
                    &(FAMILY, 12).into_text_style(root),
                    (28 + c as i32 * cw, y + 5),
                )
                .map_err(draw)?;
            }
        }
        if total_rows > rows.len() {
            root.draw_text(
                &format!("… ещё {} строк (more rows)", total_rows - rows.len()),
                &(FAMILY, 12).into_text_style(root).color(&GREY),
                (28, top + (rows.len() as i32 + 1) * rh + 6),
            )
            .map_err(draw)?;
        }
        Ok(())
    }
}

/// Add `v` into `cell` (rows that share an x and a series are summed).
fn add(cell: &mut Option<f64>, v: Option<f64>) {
    *cell = match (*cell, v) {
        (Some(a), Some(b)) => Some(a + b),
        (a, b) => a.or(b),
    };
}

/// Keep the `MAX_SERIES - 1` largest series and sum the rest into «прочие».
fn fold_series(mut series: Vec<Series>, english: bool) -> Vec<Series> {
    if series.len() <= MAX_SERIES {
        return series;
    }
    let total = |s: &Series| s.values.iter().flatten().sum::<f64>();
    series.sort_by(|a, b| total(b).total_cmp(&total(a)));
    let rest = series.split_off(MAX_SERIES - 1);
    let n = series[0].values.len();
    let mut other = Series {
        name: if english {
            format!("others ({})", rest.len())
        } else {
            format!("прочие ({})", rest.len())
        },
        values: vec![None; n],
    };
    for s in rest {
        for (o, v) in other.values.iter_mut().zip(s.values) {
            add(o, v);
        }
    }
    series.push(other);
    series
}

fn draw<E: std::fmt::Debug>(e: E) -> Error {
    Error::Draw(format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(kind: ChartKind, unit: &str, data: ChartData) -> Chart {
        Chart {
            kind,
            title: format!("Проверка: {}", kind.as_str()),
            x_caption: "месяц".into(),
            y_caption: axis_caption("выручка", unit),
            unit: unit.into(),
            data,
            english: false,
        }
    }

    #[test]
    fn the_period_in_progress_is_marked_not_drawn_as_a_collapse() {
        let labels = |c: &Chart| match &c.data {
            ChartData::Categories { x, .. } => x.clone(),
            _ => Vec::new(),
        };
        let series = |n: usize| {
            vec![Series {
                name: "revenue".into(),
                values: vec![Some(1.0); n],
            }]
        };
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        // Months: only this month.
        let mut c = chart(
            ChartKind::Bar,
            "RUB",
            ChartData::Categories {
                x: months(3),
                series: series(3),
            },
        );
        c.mark_in_progress(day("2025-03-17"));
        assert_eq!(labels(&c), ["2025-01", "2025-02", "2025-03*"]);
        assert!(
            c.x_caption.ends_with("* период ещё идёт"),
            "{}",
            c.x_caption
        );
        // A month that has ended is not marked.
        let mut done = chart(
            ChartKind::Bar,
            "RUB",
            ChartData::Categories {
                x: months(3),
                series: series(3),
            },
        );
        done.mark_in_progress(day("2025-04-01"));
        assert!(labels(&done).iter().all(|l| !l.contains('*')));
        assert!(!done.x_caption.contains('*'));
        // Weeks: the week holding today; days: today.
        let weeks = ["2025-03-03", "2025-03-10", "2025-03-17"]
            .map(String::from)
            .to_vec();
        let mut w = chart(
            ChartKind::Line,
            "",
            ChartData::Categories {
                x: weeks,
                series: series(3),
            },
        );
        w.mark_in_progress(day("2025-03-20"));
        assert_eq!(labels(&w)[2], "2025-03-17*");
        assert!(!labels(&w)[1].contains('*'));
        let days = ["2025-03-19", "2025-03-20"].map(String::from).to_vec();
        let mut d = chart(
            ChartKind::Bar,
            "",
            ChartData::Categories {
                x: days,
                series: series(2),
            },
        );
        d.mark_in_progress(day("2025-03-20"));
        assert_eq!(labels(&d), ["2025-03-19", "2025-03-20*"]);
    }

    #[test]
    fn a_cohort_cell_of_the_month_in_progress_is_marked() {
        let mut c = chart(
            ChartKind::Heatmap,
            "ratio",
            ChartData::Grid {
                x: (0..3).map(|i| i.to_string()).collect(),
                rows: months(3),
                cells: vec![vec![Some(1.0); 3]; 3],
                in_progress: Vec::new(),
            },
        );
        // 2025-03 is this month: cohort 2025-01 at offset 2, 2025-02 at 1, 2025-03 at 0.
        c.mark_in_progress(chrono::NaiveDate::from_ymd_opt(2025, 3, 9).expect("date"));
        let ChartData::Grid { in_progress, .. } = &c.data else {
            panic!("a grid")
        };
        assert_eq!(in_progress, &[(0, 2), (1, 1), (2, 0)]);
        assert!(c.x_caption.ends_with("* период ещё идёт"));
        let svg = c.to_svg().expect("svg");
        assert!(svg.contains("100.0\u{A0}%*"), "the value starred");
    }

    fn months(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("2025-{:02}", i + 1)).collect()
    }

    fn series(name: &str, values: &[f64]) -> Series {
        Series {
            name: name.into(),
            values: values.iter().map(|v| Some(*v)).collect(),
        }
    }

    fn examples() -> Vec<(&'static str, Chart)> {
        vec![
            (
                "line",
                chart(
                    ChartKind::Line,
                    "RUB",
                    ChartData::Categories {
                        x: months(6),
                        series: vec![
                            series("выручка", &[1.2e6, 1.5e6, 1.1e6, 1.9e6, 2.4e6, 2.2e6]),
                            series("план", &[1.5e6, 1.5e6, 1.6e6, 1.8e6, 2.0e6, 2.1e6]),
                        ],
                    },
                ),
            ),
            (
                "bar",
                chart(
                    ChartKind::Bar,
                    "RUB",
                    ChartData::Categories {
                        x: vec![
                            "Анна Петрова".into(),
                            "Борис Иванов".into(),
                            "Вера Ким".into(),
                        ],
                        series: vec![series("выручка", &[3_450_000.0, 2_100_500.0, 980_000.0])],
                    },
                ),
            ),
            (
                "stacked_bar",
                chart(
                    ChartKind::StackedBar,
                    "",
                    ChartData::Categories {
                        x: months(4),
                        series: vec![
                            series("звонки", &[120.0, 140.0, 90.0, 160.0]),
                            series("письма", &[60.0, 55.0, 70.0, 65.0]),
                            series("встречи", &[12.0, 15.0, 9.0, 20.0]),
                        ],
                    },
                ),
            ),
            (
                "funnel",
                chart(
                    ChartKind::Funnel,
                    "deals",
                    ChartData::Categories {
                        x: vec![
                            "Новая заявка".into(),
                            "Квалификация".into(),
                            "Предложение".into(),
                            "Договор".into(),
                        ],
                        series: vec![series("reached", &[1000.0, 640.0, 310.0, 120.0])],
                    },
                ),
            ),
            (
                "heatmap",
                chart(
                    ChartKind::Heatmap,
                    "ratio",
                    ChartData::Grid {
                        x: (0..4).map(|i| i.to_string()).collect(),
                        rows: months(3),
                        cells: vec![
                            vec![Some(1.0), Some(0.42), Some(0.31), Some(0.25)],
                            vec![Some(1.0), Some(0.38), Some(0.29), None],
                            vec![Some(1.0), Some(0.45), None, None],
                        ],
                        in_progress: Vec::new(),
                    },
                ),
            ),
            (
                "kpi",
                chart(
                    ChartKind::Kpi,
                    "RUB",
                    ChartData::Kpi {
                        value: Some(185_400.0),
                        previous: Some(162_000.0),
                    },
                ),
            ),
            (
                "table",
                chart(
                    ChartKind::Table,
                    "",
                    ChartData::Table {
                        columns: vec!["менеджер".into(), "выручка".into(), "win_rate".into()],
                        rows: vec![
                            vec!["Анна Петрова".into(), "3 450 000".into(), "0.41".into()],
                            vec!["Борис Иванов".into(), "2 100 500".into(), "0.33".into()],
                        ],
                        total_rows: 25,
                    },
                ),
            ),
        ]
    }

    #[test]
    fn every_chart_type_renders_the_same_svg() {
        for (name, chart) in examples() {
            let svg = chart.to_svg().expect("renders");
            insta::assert_snapshot!(format!("chart_{name}"), svg);
        }
    }

    #[test]
    fn svgs_carry_titles_labels_units_and_legends() {
        let by_name: std::collections::HashMap<_, _> = examples()
            .into_iter()
            .map(|(n, c)| (n, c.to_svg().expect("renders")))
            .collect();
        assert!(by_name["line"].contains("Проверка: line"));
        assert!(
            by_name["line"].contains("2025-06"),
            "dates on the time axis"
        );
        assert!(
            by_name["line"].contains("выручка, ₽"),
            "axis caption with unit"
        );
        assert!(by_name["line"].contains("план"), "legend");
        assert!(
            by_name["bar"].contains("3\u{202F}450\u{202F}000\u{A0}₽"),
            "values with thousands separators and unit"
        );
        assert!(by_name["funnel"].contains("Квалификация"));
        assert!(
            by_name["funnel"].contains("64.0\u{A0}%"),
            "share of the first stage"
        );
        assert!(by_name["heatmap"].contains("42.0\u{A0}%"));
        assert!(
            by_name["kpi"].contains("▲ +14.4\u{A0}%"),
            "{}",
            by_name["kpi"]
        );
        assert!(by_name["table"].contains("ещё 23 строк"));
        assert!(by_name["stacked_bar"].contains("встречи"));
    }

    #[test]
    fn png_has_the_size_and_is_not_blank() {
        for (name, chart) in examples() {
            let png_bytes = chart.to_png().expect("renders");
            let decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
            let mut reader = decoder.read_info().expect("a PNG");
            let mut buf = vec![0; reader.output_buffer_size().expect("size")];
            let info = reader.next_frame(&mut buf).expect("frame");
            assert_eq!((info.width, info.height), chart.size(), "{name}");
            let pixels = &buf[..info.buffer_size()];
            let inked = pixels
                .chunks(3)
                .filter(|p| p.iter().any(|c| *c < 200))
                .count();
            let total = pixels.len() / 3;
            // Text alone inks well under 1%; a chart inks more, but never most of the picture.
            assert!(
                inked * 200 > total && inked * 2 < total,
                "{name}: {inked} of {total} pixels inked"
            );
        }
    }

    #[test]
    fn empty_results_say_so() {
        let empty = chart(
            ChartKind::Bar,
            "RUB",
            ChartData::Categories {
                x: vec![],
                series: vec![],
            },
        );
        assert!(empty.is_empty());
        assert!(empty.to_svg().expect("renders").contains("Нет данных"));
        let kpi = chart(
            ChartKind::Kpi,
            "",
            ChartData::Kpi {
                value: None,
                previous: None,
            },
        );
        assert!(kpi.to_svg().expect("renders").contains("Нет данных"));
    }

    #[test]
    fn numbers_are_written_for_people() {
        assert_eq!(thousands(1234567.4), "1\u{202F}234\u{202F}567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1\u{202F}000");
        assert_eq!(thousands(-0.2), "0");
        assert_eq!(format_value(0.4567, "ratio"), "45.7\u{A0}%");
        assert_eq!(format_value(2500.0, "RUB"), "2\u{202F}500\u{A0}₽");
        assert_eq!(format_value(3.25, "min"), "3.25\u{A0}мин");
        assert_eq!(compact_value(10_030_000.0, "RUB"), "10.0\u{A0}млн\u{A0}₽");
        assert_eq!(compact_value(830_400.0, "RUB"), "830\u{A0}тыс\u{A0}₽");
        assert_eq!(compact_value(950.0, "RUB"), "950\u{A0}₽");
        // Other currencies by their sign or code; no currency declared: bare numbers.
        assert_eq!(format_value(2500.0, "USD"), "2\u{202F}500\u{A0}$");
        assert_eq!(format_value(2500.0, "CHF"), "2\u{202F}500\u{A0}CHF");
        assert_eq!(format_value(2500.0, MONEY), "2\u{202F}500");
        assert_eq!(compact_value(830_400.0, "EUR"), "830\u{A0}тыс\u{A0}€");
        assert_eq!(axis_caption("revenue", "USD"), "выручка, $");
        assert_eq!(axis_caption("revenue", MONEY), "выручка");
        assert_eq!(axis_caption("calls", "deals"), "звонки, сд.");
        assert_eq!(compact_value(0.452, "ratio"), "45.2\u{A0}%");
        assert_eq!(short_label("2025-02-01"), "2025-02");
        assert_eq!(short_label("2025-02-03"), "2025-02-03");
        assert_eq!(short_label("2025-02-01T00:00:00+03:00"), "2025-02");
        assert_eq!(short_label("2025-02-03T09:30:00"), "2025-02-03 09:30");
        assert_eq!(short_label("Анна"), "Анна");
    }

    #[test]
    fn table_cells_carry_the_catalogs_units() {
        use arrow::array::{Float64Array, Int64Array, StringArray};
        use std::sync::Arc;
        let batch = RecordBatch::try_from_iter(vec![
            (
                "manager",
                Arc::new(Int64Array::from(vec![1234])) as ArrayRef,
            ),
            (
                "name",
                Arc::new(StringArray::from(vec!["Анна"])) as ArrayRef,
            ),
            (
                "revenue",
                Arc::new(Float64Array::from(vec![13_394_700.0])) as ArrayRef,
            ),
            (
                "win_rate",
                Arc::new(Float64Array::from(vec![0.2408])) as ArrayRef,
            ),
            (
                "activities",
                Arc::new(Int64Array::from(vec![2093])) as ArrayRef,
            ),
        ])
        .expect("batch");
        let panel = Panel {
            title: "Scorecard".into(),
            metric: "manager_scorecard".into(),
            params: vec![],
            chart: ChartKind::Table,
            x: "manager".into(),
            y: vec!["revenue".into()],
            series: None,
            unit: "RUB".into(),
            column_units: [
                ("manager", ""),
                ("name", ""),
                ("revenue", "RUB"),
                ("win_rate", "ratio"),
                ("activities", "interactions"),
            ]
            .into_iter()
            .map(|(c, u)| (c.to_string(), u.to_string()))
            .collect(),
            english: false,
        };
        let chart = Chart::from_result(&panel, &[batch], None).expect("chart");
        let ChartData::Table { columns, rows, .. } = chart.data else {
            panic!("a table");
        };
        assert_eq!(
            columns,
            [
                "manager",
                "name",
                "revenue",
                "win_rate",
                "activities, interactions"
            ]
        );
        // An identifier keeps its digits; money and ratios read as such; counts lose the unit
        // (it is in the header).
        assert_eq!(
            rows,
            vec![vec![
                "1234".to_string(),
                "Анна".into(),
                "13\u{202F}394\u{202F}700\u{A0}₽".into(),
                "24.1\u{A0}%".into(),
                "2\u{202F}093".into(),
            ]]
        );
    }

    #[test]
    fn many_series_fold_into_others() {
        let many: Vec<Series> = (0..12)
            .map(|i| series(&format!("s{i}"), &[i as f64, 1.0]))
            .collect();
        let folded = fold_series(many, false);
        assert_eq!(folded.len(), MAX_SERIES);
        assert_eq!(folded[0].name, "s11", "largest first");
        let other = folded.last().expect("others");
        assert_eq!(other.name, "прочие (5)");
        // s0..s4 fold: 0+1+2+3+4 and five 1s.
        assert_eq!(other.values, vec![Some(10.0), Some(5.0)]);
    }
}
