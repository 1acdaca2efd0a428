//! Charts as SVG.

use std::sync::Once;

use arrow::array::{Array, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::{Error, Result};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "kartoteka-sans";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the bundled font is a valid TrueType font"));
    });
}

/// Group digits by thousands with a thin space: 1234567.5 → "1 234 567.5".
pub fn thousands(v: f64) -> String {
    let neg = v < 0.0;
    let rounded = v.abs().round() as u128;
    let digits = rounded.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{202F}');
        }
        out.push(ch);
    }
    if neg { format!("-{out}") } else { out }
}

/// One bar per category.
#[derive(Debug, Clone)]
pub struct BarChart {
    /// Chart title.
    pub title: String,
    /// Label under the x axis.
    pub x_label: String,
    /// Label of the y axis, with unit.
    pub y_label: String,
    /// Categories and values.
    pub bars: Vec<(String, f64)>,
}

impl BarChart {
    /// Build from a result: `x` column as labels, `y` column as values.
    pub fn from_batches(
        metric: &str,
        title: &str,
        batches: &[RecordBatch],
        x: &str,
        y: &str,
        unit: &str,
    ) -> Result<BarChart> {
        let mut bars = Vec::new();
        let opts = FormatOptions::default();
        for b in batches {
            let col = |name: &str| {
                b.column_by_name(name).ok_or_else(|| Error::Shape {
                    metric: metric.into(),
                    detail: format!("no column {name}"),
                })
            };
            let xs = col(x)?;
            let ys = arrow::compute::cast(col(y)?, &arrow::datatypes::DataType::Float64).map_err(
                |e| Error::Shape {
                    metric: metric.into(),
                    detail: format!("column {y} is not numeric: {e}"),
                },
            )?;
            let ys = ys
                .as_any()
                .downcast_ref::<arrow::array::Float64Array>()
                .expect("cast to Float64");
            let fmt = ArrayFormatter::try_new(xs.as_ref(), &opts)
                .map_err(|e| Error::Draw(e.to_string()))?;
            for i in 0..b.num_rows() {
                let v = if ys.is_null(i) { 0.0 } else { ys.value(i) };
                bars.push((fmt.value(i).to_string(), v));
            }
        }
        Ok(BarChart {
            title: title.into(),
            x_label: x.into(),
            y_label: if unit.is_empty() {
                y.into()
            } else {
                format!("{y}, {unit}")
            },
            bars,
        })
    }

    /// Render as an SVG document.
    pub fn to_svg(&self) -> Result<String> {
        register_font();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (960, 540)).into_drawing_area();
            root.fill(&WHITE).map_err(draw)?;
            if self.bars.is_empty() {
                root.draw_text(
                    &format!(
                        "{} — нет данных за период (no data for the period)",
                        self.title
                    ),
                    &(FAMILY, 20).into_text_style(&root),
                    (40, 260),
                )
                .map_err(draw)?;
                root.present().map_err(draw)?;
                drop(root);
                return Ok(svg);
            }
            let max = self
                .bars
                .iter()
                .map(|b| b.1)
                .fold(0.0f64, f64::max)
                .max(1.0)
                * 1.1;
            let n = self.bars.len();
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, (FAMILY, 26))
                .margin(16)
                .x_label_area_size(70)
                .y_label_area_size(110)
                // A segmented 0..k axis has k + 1 slots; n bars need 0..n-1.
                .build_cartesian_2d((0..n.saturating_sub(1).max(1)).into_segmented(), 0f64..max)
                .map_err(draw)?;
            let labels: Vec<String> = self.bars.iter().map(|b| short_label(&b.0)).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .light_line_style(TRANSPARENT)
                .x_desc(&self.x_label)
                .y_desc(&self.y_label)
                .x_labels(n.min(24))
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .y_label_formatter(&|v| thousands(*v))
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 15))
                .draw()
                .map_err(draw)?;
            let colour = RGBColor(0x2b, 0x6c, 0xb0);
            chart
                .draw_series(self.bars.iter().enumerate().map(|(i, (_, v))| {
                    let mut bar = Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0.0),
                            (SegmentValue::Exact(i + 1), *v),
                        ],
                        colour.filled(),
                    );
                    bar.set_margin(0, 0, 4, 4);
                    bar
                }))
                .map_err(draw)?;
            root.present().map_err(draw)?;
        }
        Ok(svg)
    }
}

/// Month starts (`2025-11-01`) are shown as months (`2025-11`): the axis is about months.
fn short_label(label: &str) -> String {
    match label.strip_suffix("-01") {
        Some(month) if label.len() == 10 && label.as_bytes()[4] == b'-' => month.to_string(),
        _ => label.to_string(),
    }
}

fn draw<E: std::fmt::Debug>(e: E) -> Error {
    Error::Draw(format!("{e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(1234567.4), "1\u{202F}234\u{202F}567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1\u{202F}000");
    }

    #[test]
    fn bar_chart_renders_cyrillic_labels_and_values() {
        let chart = BarChart {
            title: "Выручка по месяцам".into(),
            x_label: "месяц".into(),
            y_label: "выручка, ₽".into(),
            bars: vec![
                ("2025-01".into(), 1_500_000.0),
                ("2025-02".into(), 2_250_000.0),
            ],
        };
        let svg = chart.to_svg().expect("renders");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains("Выручка по месяцам"));
        assert!(svg.contains("2025-02"));
        assert_eq!(short_label("2025-02-01"), "2025-02");
        assert_eq!(short_label("2025-02-03"), "2025-02-03");
        assert!(
            svg.matches("<rect").count() >= 3,
            "two bars plus background"
        );
    }

    #[test]
    fn empty_result_says_so() {
        let chart = BarChart {
            title: "Выручка".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            bars: vec![],
        };
        assert!(chart.to_svg().expect("renders").contains("нет данных"));
    }
}
