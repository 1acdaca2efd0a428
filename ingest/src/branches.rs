//! A mapping query that is a `UNION ALL` of plain `SELECT`s, aggregated branch by branch.
//!
//! MariaDB materialises a derived `UNION ALL` whole — every row of every branch written to a
//! temporary table — before an outer `SELECT COUNT(*), SUM(…)` reads it: for the demo's
//! `interactions` (four activity tables, 2.8 M rows at scale 10) the key checksum cost about as much
//! as reading every row. The same aggregate computed inside each branch over that branch's own
//! expressions, then summed, reads each table once and materialises four rows.

use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, Query, SelectItem, SetExpr, SetOperator, SetQuantifier, Statement,
};
use datafusion::sql::sqlparser::dialect::MySqlDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// The branches of `query` when it is `b1 UNION ALL b2 …` of plain `SELECT`s (no `DISTINCT`,
/// grouping, window, `LIMIT`, `ORDER BY` or `WITH` anywhere, no `*` in a projection); `None` for
/// anything else, including a query of one branch.
fn union_all_branches(query: &str) -> Option<Vec<datafusion::sql::sqlparser::ast::Select>> {
    let statements = Parser::parse_sql(&MySqlDialect {}, query).ok()?;
    let [Statement::Query(query)] = statements.as_slice() else {
        return None;
    };
    let mut branches = Vec::new();
    collect(query, &mut branches)?;
    (branches.len() > 1).then_some(branches)
}

fn plain(query: &Query) -> bool {
    query.with.is_none()
        && query.order_by.is_none()
        && query.limit_clause.is_none()
        && query.fetch.is_none()
        && query.locks.is_empty()
        && query.for_clause.is_none()
        && query.settings.is_none()
        && query.format_clause.is_none()
        && query.pipe_operators.is_empty()
}

fn collect(query: &Query, out: &mut Vec<datafusion::sql::sqlparser::ast::Select>) -> Option<()> {
    if !plain(query) {
        return None;
    }
    set(&query.body, out)
}

fn set(body: &SetExpr, out: &mut Vec<datafusion::sql::sqlparser::ast::Select>) -> Option<()> {
    match body {
        SetExpr::SetOperation {
            left,
            op: SetOperator::Union,
            set_quantifier: SetQuantifier::All,
            right,
        } => {
            set(left, out)?;
            set(right, out)
        }
        SetExpr::Query(q) => collect(q, out),
        SetExpr::Select(select) => {
            let s = select.as_ref();
            let grouped = !matches!(&s.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
            let simple = s.distinct.is_none()
                && s.select_modifiers.is_none()
                && s.top.is_none()
                && s.exclude.is_none()
                && s.into.is_none()
                && s.lateral_views.is_empty()
                && s.prewhere.is_none()
                && s.connect_by.is_empty()
                && !grouped
                && s.cluster_by.is_empty()
                && s.distribute_by.is_empty()
                && s.sort_by.is_empty()
                && s.having.is_none()
                && s.named_window.is_empty()
                && s.qualify.is_none()
                && s.value_table_mode.is_none()
                && s.projection.iter().all(|item| {
                    matches!(
                        item,
                        SelectItem::UnnamedExpr(_) | SelectItem::ExprWithAlias { .. }
                    )
                });
            simple.then(|| out.push(s.clone()))
        }
        _ => None,
    }
}

/// The expression of the `position`-th column of `select`.
fn column(select: &datafusion::sql::sqlparser::ast::Select, position: usize) -> Option<&Expr> {
    match select.projection.get(position)? {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    }
}

/// Rows a branch leaves out: the positions of the columns the condition reads, and the condition
/// over those columns' SQL (rows for which it holds are left out).
pub(crate) type Exclude<'a> = (&'a [usize], &'a dyn Fn(&[String]) -> String);

/// `query` aggregated branch by branch, when it is a `UNION ALL` of plain `SELECT`s: each branch's
/// projection replaced by `aggregates(key)` — `key` the SQL of its `key`-th column, each aggregate
/// named `kartoteka_a{i}` — and its `WHERE` extended by `NOT (exclude(columns))` when `exclude` is
/// given (`columns`: the SQL of that branch's column at each of `exclude`'s positions). Returns the
/// `UNION ALL` of the branches, for an outer query to combine; `None` when `query` is not of that
/// shape (the caller aggregates over the whole query instead).
pub(crate) fn per_branch(
    query: &str,
    key: usize,
    aggregates: &dyn Fn(&str) -> Vec<String>,
    exclude: Option<Exclude<'_>>,
) -> Option<String> {
    let branches = union_all_branches(query)?;
    let mut rendered = Vec::with_capacity(branches.len());
    for mut branch in branches {
        let key_sql = format!("({})", column(&branch, key)?);
        let excluded = match exclude {
            Some((positions, condition)) => {
                let columns = positions
                    .iter()
                    .map(|&p| column(&branch, p).map(|e| format!("({e})")))
                    .collect::<Option<Vec<_>>>()?;
                Some(condition(&columns))
            }
            None => None,
        };
        let projection = aggregates(&key_sql)
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{a} AS kartoteka_a{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let filter = match (branch.selection.take(), excluded) {
            (Some(w), Some(x)) => format!(" WHERE ({w}) AND NOT ({x})"),
            (Some(w), None) => format!(" WHERE {w}"),
            (None, Some(x)) => format!(" WHERE NOT ({x})"),
            (None, None) => String::new(),
        };
        // Nothing else is left in a plain branch (`union_all_branches`): its FROM, and the WHERE.
        let from = if branch.from.is_empty() {
            String::new()
        } else {
            let tables: Vec<String> = branch.from.iter().map(ToString::to_string).collect();
            format!(" FROM {}", tables.join(", "))
        };
        rendered.push(format!("SELECT {projection}{from}{filter}"));
    }
    Some(rendered.join(" UNION ALL "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &str = "SELECT id * 10 + 1 AS interaction_id, contact_id AS client_id, note
        FROM calls WHERE kind <> 'x'
        UNION ALL
        SELECT id * 10 + 2, contact_id, `subject` FROM emails
        UNION ALL (SELECT c.id * 10 + 3, NULL, body FROM chat_messages c JOIN chats h ON h.id = c.chat_id)";

    fn sums(k: &str) -> Vec<String> {
        vec!["COUNT(*)".into(), format!("SUM({k})")]
    }

    #[test]
    fn each_branch_aggregates_its_own_key_expression() {
        let sql = per_branch(QUERY, 0, &sums, None).expect("a union of plain selects");
        assert_eq!(
            sql,
            "SELECT COUNT(*) AS kartoteka_a0, SUM((id * 10 + 1)) AS kartoteka_a1 FROM calls WHERE kind <> 'x' \
             UNION ALL SELECT COUNT(*) AS kartoteka_a0, SUM((id * 10 + 2)) AS kartoteka_a1 FROM emails \
             UNION ALL SELECT COUNT(*) AS kartoteka_a0, SUM((c.id * 10 + 3)) AS kartoteka_a1 FROM chat_messages c JOIN chats h ON h.id = c.chat_id"
        );
        let without = |cols: &[String]| format!("COALESCE({} IN (7), FALSE)", cols[0]);
        let sql = per_branch(QUERY, 0, &sums, Some((&[1], &without))).expect("shape");
        assert!(
            sql.contains(
                "FROM calls WHERE (kind <> 'x') AND NOT (COALESCE((contact_id) IN (7), FALSE))"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("FROM emails WHERE NOT (COALESCE((contact_id) IN (7), FALSE))"),
            "{sql}"
        );
        assert!(
            sql.contains("WHERE NOT (COALESCE((NULL) IN (7), FALSE))"),
            "{sql}"
        );
    }

    #[test]
    fn anything_but_a_union_all_of_plain_selects_is_left_whole() {
        for query in [
            "SELECT id FROM calls",
            "SELECT id FROM calls UNION SELECT id FROM emails",
            "SELECT DISTINCT id FROM calls UNION ALL SELECT id FROM emails",
            "SELECT id FROM calls UNION ALL SELECT id FROM emails GROUP BY id",
            "SELECT id FROM calls UNION ALL SELECT id FROM emails ORDER BY id",
            "SELECT id FROM calls UNION ALL SELECT * FROM emails",
            "WITH e AS (SELECT id FROM emails) SELECT id FROM calls UNION ALL SELECT id FROM e",
            "SELECT id FROM calls UNION ALL (SELECT id FROM emails LIMIT 5)",
            "not sql at all",
        ] {
            assert!(per_branch(query, 0, &sums, None).is_none(), "{query}");
        }
        // A column the branches do not have.
        assert!(per_branch(QUERY, 5, &sums, None).is_none());
    }

    /// The branch-wise aggregate, combined, equals the aggregate over the whole query — on SQLite,
    /// a database with its own answer (the rendered SQL is plain enough for it).
    #[tokio::test]
    async fn summed_branches_equal_the_whole_on_a_real_database() {
        use sqlx::Row;
        let pool = sqlx::SqlitePool::connect("sqlite::memory:")
            .await
            .expect("sqlite");
        for sql in [
            "CREATE TABLE calls (id INTEGER, contact_id INTEGER, note TEXT, kind TEXT)",
            "CREATE TABLE emails (id INTEGER, contact_id INTEGER, subject TEXT)",
            "CREATE TABLE chat_messages (id INTEGER, chat_id INTEGER, body TEXT)",
            "CREATE TABLE chats (id INTEGER)",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO calls SELECT i, i % 9, 'n', CASE WHEN i % 5 = 0 THEN 'x' ELSE 'y' END FROM n",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO emails SELECT i, CASE WHEN i % 4 = 0 THEN NULL ELSE i % 7 END, 's' FROM n",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200)
             INSERT INTO chat_messages SELECT i, i % 3, 'b' FROM n",
            "INSERT INTO chats VALUES (0), (1)",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("setup");
        }
        // SQLite takes neither backticks nor a parenthesised branch.
        let query = QUERY
            .replace('`', "")
            .replace("ALL (SELECT", "ALL SELECT")
            .replace("c.chat_id)", "c.chat_id");
        let without = |cols: &[String]| format!("COALESCE({} IN (2, 3), FALSE)", cols[0]);
        let whole = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*), SUM(interaction_id) FROM ({query}) AS q
             WHERE NOT (COALESCE(q.client_id IN (2, 3), FALSE))"
        )))
        .fetch_one(&pool)
        .await
        .expect("whole");
        let branches = per_branch(&query, 0, &sums, Some((&[1], &without))).expect("shape");
        let summed = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT SUM(kartoteka_a0), SUM(kartoteka_a1) FROM ({branches}) AS b"
        )))
        .fetch_one(&pool)
        .await
        .expect("summed");
        let pair = |r: &sqlx::sqlite::SqliteRow| (r.get::<i64, _>(0), r.get::<i64, _>(1));
        assert_eq!(pair(&whole), pair(&summed));
        assert!(pair(&whole).0 > 400, "{:?}", pair(&whole));
    }
}
