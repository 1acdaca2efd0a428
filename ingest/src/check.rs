//! A mapping tried against its source without loading anything: `kartoteka mapping check` (each query
//! run with a small limit, decoded exactly as an ingest decodes it) and `kartoteka mapping scaffold`
//! (a first mapping written from the source's own schema).

use std::collections::{BTreeMap, HashSet};

use arrow::array::{Array, RecordBatch};
use arrow::util::display::{ArrayFormatter, FormatOptions};
use futures::TryStreamExt;
use kartoteka_engine::model::{self, Class};
use serde::Serialize;

use crate::batch::BatchBuilder;
use crate::error::{Error, Result};
use crate::mapping::Mapping;
use crate::run::{BATCH_ROWS, TablePlan, plan};
use crate::source::{Rows, SnapshotReader, Source, SourceRow};

/// One canonical column as a mapping query fills it.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnReport {
    /// Canonical column.
    pub name: String,
    /// The source's type for it (`None`: the query leaves it out, stored as NULL).
    pub source_type: Option<String>,
    /// NULLs among the rows read.
    pub nulls: u64,
    /// Personal data (encrypted with the pii key, masked for roles not cleared).
    pub pii: bool,
}

/// One canonical table's mapping, tried.
#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// Canonical table.
    pub table: String,
    /// Rows read (at most the limit).
    pub rows: u64,
    /// The limit stopped the read: the table holds more.
    pub more: bool,
    /// Key values seen more than once among the rows read (an ingest would refuse them).
    pub duplicate_keys: u64,
    /// Key columns.
    pub key: Vec<String>,
    /// Read incrementally by `updated_at`.
    pub incremental: bool,
    /// Every canonical column.
    pub columns: Vec<ColumnReport>,
}

/// A mapping tried against its source.
#[derive(Debug, Clone, Serialize)]
pub struct MappingReport {
    /// The mapped tables, in canonical order.
    pub tables: Vec<TableReport>,
    /// Canonical tables the mapping leaves out (stored empty; metrics that need them say so).
    pub unmapped_tables: Vec<String>,
    /// The currency amounts are shown in.
    pub currency: Option<String>,
    /// Things worth a look that are not errors.
    pub warnings: Vec<String>,
}

/// Run every query of `mapping` against `source` with at most `limit` rows each, decoding every value
/// as an ingest would: type, key and value errors are the ingest's own. Nothing is written.
pub async fn check_mapping(
    source: &Source,
    mapping: &Mapping,
    limit: u64,
) -> Result<MappingReport> {
    let plans = plan(source, mapping).await?;
    let mut reader = source.begin_read().await?;
    let mut tables = Vec::new();
    let mut warnings = Vec::new();
    for plan in &plans {
        let query = format!(
            "SELECT * FROM ({}) AS kartoteka_check LIMIT {}",
            mapping.tables[plan.table.name].query,
            limit.saturating_add(1)
        );
        let mut tried = Tried::new(plan, mapping);
        match &mut reader {
            SnapshotReader::Sqlite(tx) => tried.read(fetch(tx, &query), limit).await?,
            SnapshotReader::Postgres(tx) => tried.read(fetch(tx, &query), limit).await?,
            SnapshotReader::MySql(tx) => tried.read(fetch(tx, &query), limit).await?,
        }
        let table = plan.table;
        if tried.rows == 0 {
            warnings.push(format!(
                "{}: the query returns no rows (an empty table is loaded as empty, not as unmapped)",
                table.name
            ));
        }
        if tried.duplicates > 0 {
            warnings.push(format!(
                "{}: {} key values repeat among the rows read; an ingest refuses a source that returns a key twice",
                table.name, tried.duplicates
            ));
        }
        let columns = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| ColumnReport {
                name: c.name.into(),
                source_type: plan
                    .index
                    .iter()
                    .position(|&j| j == i)
                    .map(|r| tried.types[r].clone()),
                nulls: tried.nulls[i],
                pii: c.class == Class::Pii,
            })
            .collect();
        tables.push(TableReport {
            table: table.name.into(),
            rows: tried.rows.min(limit),
            more: tried.rows > limit,
            duplicate_keys: tried.duplicates,
            key: table.key.iter().map(|k| k.to_string()).collect(),
            incremental: mapping.tables[table.name].incremental,
            columns,
        });
    }
    if mapping.currency().is_none() {
        warnings.push(
            "no [money] currency: amounts are shown as bare numbers; add e.g. currency = \"USD\""
                .into(),
        );
    }
    Ok(MappingReport {
        tables,
        unmapped_tables: mapping
            .unmapped_tables()
            .into_iter()
            .map(str::to_string)
            .collect(),
        currency: mapping.currency().map(str::to_string),
        warnings,
    })
}

fn fetch<'t, DB: sqlx::Database>(
    tx: &'t mut sqlx::Transaction<'static, DB>,
    query: &str,
) -> Rows<'t, DB::Row>
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
{
    // Mapping queries are SQL written by the owner in their own config: trusted as SQL by design.
    sqlx::query(sqlx::AssertSqlSafe(query.to_string())).fetch(&mut **tx)
}

/// One table's rows read through the ingest's decoding.
struct Tried<'a> {
    plan: &'a TablePlan,
    builder: BatchBuilder,
    types: Vec<String>,
    rows: u64,
    nulls: Vec<u64>,
    keys: HashSet<String>,
    duplicates: u64,
}

impl<'a> Tried<'a> {
    fn new(plan: &'a TablePlan, mapping: &Mapping) -> Tried<'a> {
        Tried {
            plan,
            builder: BatchBuilder::new(plan.table, mapping.conversions()),
            types: Vec::new(),
            rows: 0,
            nulls: vec![0; plan.table.columns.len()],
            keys: HashSet::new(),
            duplicates: 0,
        }
    }

    async fn read<R: SourceRow>(&mut self, mut rows: Rows<'_, R>, limit: u64) -> Result<()> {
        let table = self.plan.table;
        let query_err = |cause| Error::SourceQuery {
            table: table.name.into(),
            cause,
        };
        while let Some(row) = rows.try_next().await.map_err(query_err)? {
            self.rows += 1;
            if self.rows > limit {
                break;
            }
            if self.types.is_empty() {
                use sqlx::{Column, TypeInfo};
                self.types = row
                    .columns()
                    .iter()
                    .map(|c| c.type_info().name().to_string())
                    .collect();
            }
            self.plan.push_row(&row, &mut self.builder, |_, _| {})?;
            if self.builder.len() >= BATCH_ROWS {
                let batch = self.builder.finish()?;
                self.count(&batch)?;
            }
        }
        if !self.builder.is_empty() {
            let batch = self.builder.finish()?;
            self.count(&batch)?;
        }
        if self.types.is_empty() {
            self.types = vec![String::new(); self.plan.index.len()];
        }
        Ok(())
    }

    fn count(&mut self, batch: &RecordBatch) -> Result<()> {
        for (i, column) in batch.columns().iter().enumerate() {
            self.nulls[i] += column.null_count() as u64;
        }
        let options = FormatOptions::default();
        let key: Vec<ArrayFormatter<'_>> = self
            .plan
            .table
            .key
            .iter()
            .map(|k| {
                let column = batch.column(batch.schema().index_of(k)?);
                Ok(ArrayFormatter::try_new(column.as_ref(), &options)?)
            })
            .collect::<Result<_>>()?;
        for row in 0..batch.num_rows() {
            let text = key
                .iter()
                .map(|f| f.value(row).to_string())
                .collect::<Vec<_>>()
                .join("\u{1f}");
            if !self.keys.insert(text) {
                self.duplicates += 1;
            }
        }
        Ok(())
    }
}

/// Names a CRM may give the table behind each canonical one (for the scaffold's first guess).
const SYNONYMS: &[(&str, &[&str])] = &[
    (
        "staff",
        &[
            "staff",
            "users",
            "employees",
            "employee",
            "managers",
            "agents",
            "sales_reps",
        ],
    ),
    (
        "clients",
        &[
            "clients",
            "customers",
            "customer",
            "contacts",
            "companies",
            "accounts",
            "leads",
        ],
    ),
    (
        "pipeline_stages",
        &[
            "pipeline_stages",
            "stages",
            "statuses",
            "funnel_statuses",
            "deal_stages",
        ],
    ),
    (
        "deals",
        &[
            "deals",
            "deal",
            "opportunities",
            "orders",
            "invoices",
            "leads",
        ],
    ),
    (
        "deal_stage_changes",
        &[
            "deal_stage_changes",
            "stage_history",
            "lead_status_log",
            "deal_history",
        ],
    ),
    (
        "interactions",
        &[
            "interactions",
            "activities",
            "calls",
            "emails",
            "messages",
            "events",
        ],
    ),
    ("tasks", &["tasks", "todo", "todos", "reminders"]),
    (
        "payments",
        &["payments", "invoices", "transactions", "orders", "invoice"],
    ),
    (
        "ownership_changes",
        &["ownership_changes", "responsible_log", "owner_history"],
    ),
    ("targets", &["targets", "plans", "quotas"]),
    (
        "marketing_spend",
        &["marketing_spend", "ad_spend", "marketing", "campaigns"],
    ),
];

/// A first mapping for `source`, written from its own schema: every canonical table as a commented
/// section (a guess at the source table when a name suggests one; columns of the same name selected
/// as they are, the rest marked TODO), then the source's tables and columns with their types. Every
/// section stays commented until the user fills it: a table left commented is simply unmapped.
pub async fn scaffold(source: &Source, name: &str) -> Result<String> {
    let schema = source_schema(source).await?;
    let mut out = String::new();
    out.push_str(&format!(
        "# A first mapping for {}, written by `kartoteka mapping scaffold` from the source's own schema.\n\
         # Fill each section you can (uncomment it, finish the TODOs), leave out what your CRM does not\n\
         # have, then try it without loading anything: `kartoteka mapping check --url URL (or --sqlite\n\
         # FILE) --mapping THIS`. A column or table left out is loaded as NULL / empty and reported.\n\
         # Canonical tables and columns: shared/design/crm-model.md; examples: ingest/src/demo/mapping*.toml.\n\n\
         name = {name:?}\n\n\
         [money]\n\
         # currency = \"USD\"            # TODO: ISO 4217 code of the amounts\n\
         # integers = \"minor_units\"    # only when money is stored as integers: \"minor_units\" (cents) or \"units\"\n\n\
         [time]\n\
         # zone = \"UTC\"                # zone of timestamps stored without one (IANA name)\n\n",
        source.display()
    ));
    for table in model::tables() {
        let guess = SYNONYMS
            .iter()
            .find(|(t, _)| *t == table.name)
            .and_then(|(_, names)| {
                names.iter().find_map(|n| {
                    schema
                        .keys()
                        .find(|s| s.rsplit('.').next().unwrap_or(s).eq_ignore_ascii_case(n))
                })
            });
        out.push_str(&format!(
            "# ---- {}: key {}{} ----\n# [tables.{}]\n# query = \"\"\"\n# SELECT\n",
            table.name,
            table.key.join(", "),
            table.cursor.map_or(String::new(), |_| {
                "; add `incremental = true` when updated_at moves on every change".into()
            }),
            table.name
        ));
        let source_columns: Vec<&(String, String)> = guess
            .and_then(|g| schema.get(g))
            .map(|cs| cs.iter().collect())
            .unwrap_or_default();
        // Columns found by name, and keys, are in the SELECT; the others are SQL comments with a
        // leading comma, to uncomment once their source column is written in (or to leave out: a
        // nullable column the query does not return is stored as NULL).
        let mut selected = Vec::new();
        let mut optional = Vec::new();
        for c in &table.columns {
            let same = source_columns
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(c.name));
            let pii = if c.class == Class::Pii { ", pii" } else { "" };
            match same {
                Some((s, ty)) => selected.push(format!(
                    "{s} AS {}    -- {}{pii}; the source's {ty}",
                    c.name,
                    c.ty.sql_name()
                )),
                None if table.key.contains(&c.name) || !c.nullable => selected.push(format!(
                    "TODO AS {}    -- {}, required",
                    c.name,
                    c.ty.sql_name()
                )),
                None => optional.push(format!(
                    "#   -- , TODO AS {}    -- {}{pii}; or leave it out",
                    c.name,
                    c.ty.sql_name()
                )),
            }
        }
        for (i, line) in selected.iter().enumerate() {
            out.push_str(if i == 0 { "#     " } else { "#   , " });
            out.push_str(line);
            out.push('\n');
        }
        for line in optional {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&format!(
            "# FROM {}\n# \"\"\"\n\n",
            guess.map_or("TODO", String::as_str)
        ));
    }
    out.push_str("# ---- The source's tables ----\n");
    for (t, columns) in &schema {
        out.push_str(&format!("# {t}:"));
        for (c, ty) in columns {
            out.push_str(&format!(" {c} {ty},"));
        }
        out.pop();
        out.push('\n');
    }
    Ok(out)
}

/// Table → its (column, type) in order, from the database's own catalog.
async fn source_schema(source: &Source) -> Result<BTreeMap<String, Vec<(String, String)>>> {
    let query_err = |cause| Error::SourceQuery {
        table: "(the source's schema)".into(),
        cause,
    };
    let rows: Vec<(String, String, String)> = match source {
        Source::Sqlite(s) => sqlx::query_as(
            "SELECT m.name, p.name, p.type FROM sqlite_master m, pragma_table_info(m.name) p \
             WHERE m.type IN ('table', 'view') AND m.name NOT LIKE 'sqlite_%' \
             ORDER BY m.name, p.cid",
        )
        .fetch_all(s.pool())
        .await
        .map_err(query_err)?,
        Source::Postgres(s) => sqlx::query_as(
            "SELECT CASE WHEN table_schema = 'public' THEN table_name::text \
                         ELSE table_schema || '.' || table_name END, \
                    column_name::text, data_type::text \
             FROM information_schema.columns \
             WHERE table_schema NOT IN ('pg_catalog', 'information_schema') \
             ORDER BY table_schema, table_name, ordinal_position",
        )
        .fetch_all(s.pool())
        .await
        .map_err(query_err)?,
        Source::MySql(s) => sqlx::query_as(
            "SELECT CAST(table_name AS CHAR), CAST(column_name AS CHAR), CAST(column_type AS CHAR) \
             FROM information_schema.columns WHERE table_schema = DATABASE() \
             ORDER BY table_name, ordinal_position",
        )
        .fetch_all(s.pool())
        .await
        .map_err(query_err)?,
    };
    let mut schema: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (t, c, ty) in rows {
        schema.entry(t).or_default().push((c, ty));
    }
    Ok(schema)
}
