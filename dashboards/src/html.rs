//! Pages as HTML text: escaping, the page frame (header, navigation, "data as of", banners), and the
//! two languages. Every value that reaches a page goes through [`esc`]; no page carries a script or
//! an inline style (the CSP forbids both), so the only dynamic parts are forms and links.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use kartoteka_engine::Role;

/// A page's language: Russian by default, English on request (a cookie the language link sets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Русский.
    Ru,
    /// English.
    En,
}

impl Lang {
    /// The language a cookie value names (Russian for anything else).
    pub fn parse(s: &str) -> Lang {
        if s == "en" { Lang::En } else { Lang::Ru }
    }

    /// The code (`ru`, `en`).
    pub fn code(self) -> &'static str {
        match self {
            Lang::Ru => "ru",
            Lang::En => "en",
        }
    }

    /// `ru` or `en` of a pair of texts.
    pub fn pick<'a>(self, ru: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Ru => ru,
            Lang::En => en,
        }
    }

    /// A number with the language's digit grouping and decimal mark: `1 234 567,5` / `1,234,567.5`.
    pub fn number(self, v: f64, decimals: usize) -> String {
        let text = format!("{:.*}", decimals, v.abs());
        let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
        let (group, mark) = match self {
            Lang::Ru => ('\u{a0}', ','),
            Lang::En => (',', '.'),
        };
        let mut out = String::new();
        for (i, c) in int.chars().enumerate() {
            if i > 0 && (int.len() - i).is_multiple_of(3) {
                out.push(group);
            }
            out.push(c);
        }
        if !frac.is_empty() {
            out.push(mark);
            out.push_str(frac);
        }
        if v < 0.0 && out.chars().any(|c| c.is_ascii_digit() && c != '0') {
            out.insert(0, '−');
        }
        out
    }

    /// An instant in `zone` as the language writes it: `06.12.2026 14:05` / `2026-12-06 14:05`.
    pub fn time(self, t: DateTime<Utc>, zone: chrono_tz::Tz) -> String {
        let local = t.with_timezone(&zone);
        match self {
            Lang::Ru => local.format("%d.%m.%Y %H:%M").to_string(),
            Lang::En => local.format("%Y-%m-%d %H:%M").to_string(),
        }
    }

    /// A role's name.
    pub fn role(self, role: Role) -> &'static str {
        match (self, role) {
            (Lang::Ru, Role::Owner) => "владелец",
            (Lang::Ru, Role::Manager) => "менеджер",
            (Lang::Ru, Role::TeamLead) => "руководитель группы",
            (Lang::Ru, Role::Analyst) => "аналитик",
            (Lang::Ru, Role::Admin) => "администратор",
            (Lang::En, Role::Owner) => "owner",
            (Lang::En, Role::Manager) => "manager",
            (Lang::En, Role::TeamLead) => "team lead",
            (Lang::En, Role::Analyst) => "analyst",
            (Lang::En, Role::Admin) => "administrator",
        }
    }
}

/// Escape text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query string from pairs, each part percent-encoded.
pub fn query(pairs: &[(String, String)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// Who is looking at a signed-in page: for the header.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// Login.
    pub login: String,
    /// Role.
    pub role: Role,
    /// The session's CSRF token (for the sign-out form).
    pub csrf: String,
}

/// What the frame says about the data under the page.
#[derive(Debug, Clone)]
pub struct DataAsOf {
    /// The snapshot's id.
    pub snapshot: u64,
    /// When it was committed.
    pub at: DateTime<Utc>,
    /// The reporting time zone.
    pub zone: chrono_tz::Tz,
    /// Sources whose newest successful ingest is older than their schedule allows: (source, when).
    pub stale: Vec<(String, Option<DateTime<Utc>>)>,
}

/// The links of a role's navigation: (path, Russian, English).
pub fn nav(role: Role) -> &'static [(&'static str, &'static str, &'static str)] {
    match role {
        Role::Owner => &[
            ("/owner", "Компания", "Company"),
            ("/catalog", "Все метрики", "All metrics"),
            ("/admin", "Система", "System"),
        ],
        Role::Manager => &[
            ("/manager", "Мои продажи", "My sales"),
            ("/catalog", "Все метрики", "All metrics"),
        ],
        Role::TeamLead => &[
            ("/team", "Моя группа", "My team"),
            ("/catalog", "Все метрики", "All metrics"),
        ],
        Role::Analyst => &[("/catalog", "Каталог метрик", "Metric catalog")],
        Role::Admin => &[("/admin", "Система", "System")],
    }
}

/// A whole page: `title`, the frame for `viewer` (none on the sign-in pages), `data` ("data as of"
/// and the staleness banner, on pages that read the lake), and `body` (already HTML).
pub fn page(
    lang: Lang,
    title: &str,
    here: &str,
    viewer: Option<&Viewer>,
    data: Option<&DataAsOf>,
    body: &str,
) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · {}</title><link rel=\"stylesheet\" href=\"/assets/app.css\"></head><body>",
        lang.code(),
        esc(title),
        lang.pick("Картотека", "Kartoteka"),
    );
    out.push_str("<header class=\"top\"><a class=\"brand\" href=\"/\">");
    out.push_str(lang.pick("Картотека", "Kartoteka"));
    out.push_str("</a>");
    if let Some(v) = viewer {
        out.push_str("<nav>");
        for (path, ru, en) in nav(v.role) {
            let current = if here.starts_with(path) {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"{path}\"{current}>{}</a>", lang.pick(ru, en));
        }
        out.push_str("</nav>");
    }
    out.push_str("<div class=\"who\">");
    let other = match lang {
        Lang::Ru => ("en", "English"),
        Lang::En => ("ru", "Русский"),
    };
    let _ = write!(
        out,
        "<a href=\"/language?{}\" lang=\"{}\">{}</a>",
        query(&[("to".into(), other.0.into()), ("back".into(), here.into())]),
        other.0,
        other.1
    );
    if let Some(v) = viewer {
        let _ = write!(
            out,
            "<span>{} · {}</span><form method=\"post\" action=\"/logout\"><input type=\"hidden\" \
             name=\"csrf\" value=\"{}\"><button type=\"submit\">{}</button></form>",
            esc(&v.login),
            lang.role(v.role),
            esc(&v.csrf),
            lang.pick("Выйти", "Sign out")
        );
    }
    out.push_str("</div></header>");
    if let Some(d) = data {
        for (source, when) in &d.stale {
            let when = when.map_or_else(
                || lang.pick("ни разу", "never").to_string(),
                |t| lang.time(t, d.zone),
            );
            let _ = write!(
                out,
                "<p class=\"banner\" role=\"alert\">{}</p>",
                esc(&match lang {
                    Lang::Ru => format!(
                        "Данные источника «{source}» устарели: последняя успешная загрузка — {when}, \
                         а по расписанию она должна быть чаще. Цифры ниже могут не учитывать свежие сделки."
                    ),
                    Lang::En => format!(
                        "Source “{source}” is stale: its last successful load was {when}, later than \
                         its schedule allows. The figures below may miss recent deals."
                    ),
                })
            );
        }
    }
    out.push_str("<main>");
    let _ = write!(out, "<h1>{}</h1>", esc(title));
    if let Some(d) = data {
        let _ = write!(
            out,
            "<p class=\"asof muted\">{} {} <span class=\"snap\">({} {})</span></p>",
            lang.pick("Данные на", "Data as of"),
            lang.time(d.at, d.zone),
            lang.pick("снимок", "snapshot"),
            d.snapshot
        );
    }
    out.push_str(body);
    out.push_str("</main></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_text_are_written_for_the_reader() {
        assert_eq!(Lang::Ru.number(1_234_567.5, 1), "1\u{a0}234\u{a0}567,5");
        assert_eq!(Lang::En.number(1_234_567.5, 1), "1,234,567.5");
        assert_eq!(Lang::Ru.number(-42.0, 0), "−42");
        assert_eq!(Lang::Ru.number(-0.001, 0), "0");
        assert_eq!(Lang::En.number(999.0, 0), "999");
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(
            query(&[("back".into(), "/metric/x?a=1&b=2".into())]),
            "back=%2Fmetric%2Fx%3Fa%3D1%26b%3D2"
        );
    }
}
