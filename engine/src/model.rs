//! The canonical CRM model (shared/design/crm-model.md): tables, column types and sensitivity classes.
//!
//! Every column carries its class in the Arrow field metadata under [`CLASS_KEY`]; a column without a
//! class is a bug and is refused by the writer (see [`Table::class_of`]).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

/// Field-metadata key holding a column's sensitivity class.
pub const CLASS_KEY: &str = "kartoteka.class";

/// Field-metadata key marking a stored token column, naming the pii column it tokenizes.
pub const TOKEN_OF_KEY: &str = "kartoteka.token_of";

/// Suffix of the stored token column beside each pii column (`email` → `email__tok`).
pub const TOKEN_SUFFIX: &str = "__tok";

/// The type a user session reads a stored column as: text as `Utf8View`, the Parquet reader's
/// zero-copy form (a view into the decoded page or dictionary) — DataFusion's own type for text,
/// and what it reads Parquet text as by default. Read as `Utf8`, every value was copied out of its
/// dictionary: most of a small query's scan time. Results leave a session as `Utf8` again
/// ([`QueryResult`](crate::QueryResult)); the engine's own rewrites read the stored types.
pub fn read_type(stored: &DataType) -> DataType {
    match stored {
        DataType::Utf8 => DataType::Utf8View,
        other => other.clone(),
    }
}

/// Name of the token column stored beside pii column `column`.
pub fn token_column(column: &str) -> String {
    format!("{column}{TOKEN_SUFFIX}")
}

/// Sensitivity class of a column: decides which data key encrypts it and who may read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Business data that is not personal: ids, amounts, dates, stages.
    Internal,
    /// Personal data: names, phones, e-mails, free text that may name people.
    Pii,
}

impl Class {
    /// The label used in metadata and key ids.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Internal => "internal",
            Class::Pii => "pii",
        }
    }

    /// Parse a label.
    pub fn parse(s: &str) -> Option<Class> {
        match s {
            "internal" => Some(Class::Internal),
            "pii" => Some(Class::Pii),
            _ => None,
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Logical column types of the canonical model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// BIGINT
    BigInt,
    /// INT
    Int,
    /// TEXT
    Text,
    /// TIMESTAMP in UTC (microseconds)
    Timestamp,
    /// DATE
    Date,
    /// DECIMAL(18,2): money in the reporting currency
    Money,
}

impl ColumnType {
    /// The Arrow type this column is stored as.
    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::BigInt => DataType::Int64,
            ColumnType::Int => DataType::Int32,
            ColumnType::Text => DataType::Utf8,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Date => DataType::Date32,
            ColumnType::Money => DataType::Decimal128(MONEY_PRECISION, MONEY_SCALE),
        }
    }

    /// SQL-ish name for messages and docs.
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::BigInt => "BIGINT",
            ColumnType::Int => "INT",
            ColumnType::Text => "TEXT",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Date => "DATE",
            ColumnType::Money => "DECIMAL(18,2)",
        }
    }
}

/// Precision of money columns.
pub const MONEY_PRECISION: u8 = 18;
/// Scale of money columns (cents / kopecks).
pub const MONEY_SCALE: i8 = 2;

/// One column of a canonical table.
#[derive(Debug, Clone)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// Logical type.
    pub ty: ColumnType,
    /// Sensitivity class.
    pub class: Class,
    /// Whether NULL is allowed.
    pub nullable: bool,
}

/// One canonical table.
#[derive(Debug)]
pub struct Table {
    /// Table name.
    pub name: &'static str,
    /// Columns in order.
    pub columns: Vec<Column>,
    /// Key columns.
    pub key: Vec<&'static str>,
    /// Cursor column for incremental sync, if the table has one.
    pub cursor: Option<&'static str>,
    schema: SchemaRef,
    stored: SchemaRef,
    read: SchemaRef,
}

impl Table {
    fn new(
        name: &'static str,
        key: &[&'static str],
        cols: &[(&'static str, ColumnType, Class, bool)],
    ) -> Table {
        let columns: Vec<Column> = cols
            .iter()
            .map(|&(name, ty, class, nullable)| Column {
                name,
                ty,
                class,
                nullable,
            })
            .collect();
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| {
                Field::new(c.name, c.ty.arrow_type(), c.nullable).with_metadata(HashMap::from([(
                    CLASS_KEY.to_string(),
                    c.class.as_str().to_string(),
                )]))
            })
            .collect();
        // Beside each pii column, its keyed-hash token (an internal column): analysts count and
        // de-duplicate people by token without their sessions ever holding the pii key.
        let mut stored_fields = fields.clone();
        for c in columns.iter().filter(|c| c.class == Class::Pii) {
            stored_fields.push(
                Field::new(token_column(c.name), DataType::Utf8, true).with_metadata(
                    HashMap::from([
                        (CLASS_KEY.to_string(), Class::Internal.as_str().to_string()),
                        (TOKEN_OF_KEY.to_string(), c.name.to_string()),
                    ]),
                ),
            );
        }
        let cursor = columns
            .iter()
            .any(|c| c.name == "updated_at")
            .then_some("updated_at");
        let read_fields: Vec<Field> = stored_fields
            .iter()
            .map(|f| f.clone().with_data_type(read_type(f.data_type())))
            .collect();
        Table {
            name,
            key: key.to_vec(),
            cursor,
            schema: Arc::new(Schema::new(fields)),
            stored: Arc::new(Schema::new(stored_fields)),
            read: Arc::new(Schema::new(read_fields)),
            columns,
        }
    }

    /// The Arrow schema, with each field's class in its metadata.
    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The schema of the stored files: the canonical columns, then one token column per pii column.
    pub fn stored_schema(&self) -> SchemaRef {
        Arc::clone(&self.stored)
    }

    /// The stored schema as user sessions read it: text as `Utf8View` (see [`read_type`]).
    pub fn read_schema(&self) -> SchemaRef {
        Arc::clone(&self.read)
    }

    /// The pii columns of this table, in order.
    pub fn pii_columns(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().filter(|c| c.class == Class::Pii)
    }

    /// Class of a column, or `None` when the column is unknown.
    pub fn class_of(&self, column: &str) -> Option<Class> {
        self.columns
            .iter()
            .find(|c| c.name == column)
            .map(|c| c.class)
    }

    /// The classes used by this table's columns (always includes `internal`).
    pub fn classes(&self) -> Vec<Class> {
        let mut classes: Vec<Class> = self.columns.iter().map(|c| c.class).collect();
        classes.push(Class::Internal);
        classes.sort();
        classes.dedup();
        classes
    }

    /// Look up a column.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }
}

use Class::{Internal as I, Pii as P};
use ColumnType::{BigInt, Date, Int, Money, Text, Timestamp};

static TABLES: LazyLock<Vec<Table>> = LazyLock::new(|| {
    vec![
        Table::new(
            "staff",
            &["staff_id"],
            &[
                ("staff_id", BigInt, I, false),
                ("full_name", Text, P, true),
                ("email", Text, P, true),
                ("position", Text, I, true),
                ("team", Text, I, true),
                ("hired_at", Date, I, true),
                ("left_at", Date, I, true),
                ("successor_id", BigInt, I, true),
                ("updated_at", Timestamp, I, true),
            ],
        ),
        Table::new(
            "clients",
            &["client_id"],
            &[
                ("client_id", BigInt, I, false),
                ("kind", Text, I, true),
                ("name", Text, P, true),
                ("phone", Text, P, true),
                ("email", Text, P, true),
                ("city", Text, I, true),
                ("country", Text, I, true),
                ("industry", Text, I, true),
                ("source", Text, I, true),
                ("owner_id", BigInt, I, true),
                ("created_at", Timestamp, I, true),
                ("consent_at", Timestamp, I, true),
                ("updated_at", Timestamp, I, true),
            ],
        ),
        Table::new(
            "pipeline_stages",
            &["pipeline", "stage"],
            &[
                ("pipeline", Text, I, false),
                ("stage", Text, I, false),
                ("position", Int, I, false),
                ("kind", Text, I, false),
            ],
        ),
        Table::new(
            "deals",
            &["deal_id"],
            &[
                ("deal_id", BigInt, I, false),
                ("client_id", BigInt, I, true),
                ("owner_id", BigInt, I, true),
                ("pipeline", Text, I, true),
                ("stage", Text, I, true),
                ("status", Text, I, true),
                ("amount", Money, I, true),
                ("product", Text, I, true),
                ("created_at", Timestamp, I, true),
                ("closed_at", Timestamp, I, true),
                ("closed_by", BigInt, I, true),
                ("expected_close", Date, I, true),
                ("lost_reason", Text, I, true),
                ("updated_at", Timestamp, I, true),
            ],
        ),
        Table::new(
            "deal_stage_changes",
            &["change_id"],
            &[
                ("change_id", BigInt, I, false),
                ("deal_id", BigInt, I, true),
                ("pipeline", Text, I, true),
                ("from_stage", Text, I, true),
                ("to_stage", Text, I, true),
                ("changed_at", Timestamp, I, true),
                ("changed_by", BigInt, I, true),
                ("updated_at", Timestamp, I, true),
            ],
        ),
        Table::new(
            "interactions",
            &["interaction_id"],
            &[
                ("interaction_id", BigInt, I, false),
                ("client_id", BigInt, I, true),
                ("deal_id", BigInt, I, true),
                ("staff_id", BigInt, I, true),
                ("channel", Text, I, true),
                ("direction", Text, I, true),
                ("occurred_at", Timestamp, I, true),
                ("duration_s", Int, I, true),
                ("outcome", Text, I, true),
                ("summary", Text, P, true),
                ("updated_at", Timestamp, I, true),
            ],
        ),
        Table::new(
            "tasks",
            &["task_id"],
            &[
                ("task_id", BigInt, I, false),
                ("staff_id", BigInt, I, true),
                ("client_id", BigInt, I, true),
                ("deal_id", BigInt, I, true),
                ("kind", Text, I, true),
                ("created_at", Timestamp, I, true),
                ("due_at", Timestamp, I, true),
                ("completed_at", Timestamp, I, true),
                ("updated_at", Timestamp, I, true),
            ],
        ),
        Table::new(
            "payments",
            &["payment_id"],
            &[
                ("payment_id", BigInt, I, false),
                ("client_id", BigInt, I, true),
                ("deal_id", BigInt, I, true),
                ("amount", Money, I, true),
                ("paid_at", Timestamp, I, true),
                ("updated_at", Timestamp, I, true),
            ],
        ),
        Table::new(
            "ownership_changes",
            &["change_id"],
            &[
                ("change_id", BigInt, I, false),
                ("client_id", BigInt, I, true),
                ("from_staff", BigInt, I, true),
                ("to_staff", BigInt, I, true),
                ("changed_at", Timestamp, I, true),
                ("reason", Text, I, true),
                ("updated_at", Timestamp, I, true),
            ],
        ),
        Table::new(
            "targets",
            &["month", "staff_id"],
            &[
                ("month", Date, I, false),
                ("staff_id", BigInt, I, true),
                ("revenue_target", Money, I, true),
                ("updated_at", Timestamp, I, true),
            ],
        ),
        Table::new(
            "marketing_spend",
            &["month", "source"],
            &[
                ("month", Date, I, false),
                ("source", Text, I, true),
                ("amount", Money, I, true),
                ("updated_at", Timestamp, I, true),
            ],
        ),
    ]
});

/// All canonical tables, in a stable order.
pub fn tables() -> &'static [Table] {
    &TABLES
}

/// Look up a canonical table by name.
pub fn table(name: &str) -> Option<&'static Table> {
    TABLES.iter().find(|t| t.name == name)
}

/// Names of all canonical tables.
pub fn table_names() -> Vec<&'static str> {
    TABLES.iter().map(|t| t.name).collect()
}

/// The BIGINT a source's text key is stored as, when the text is not a whole number (`C536379`,
/// `A-17`, a UUID): a stable negative number from SHA-256 of the text, the same in every table and
/// every run, so references between tables still meet. Whole numbers keep their value (and CRM ids
/// are not negative), so the two never meet; two texts with one number (odds ~n²/2⁶³) would be one
/// key held twice, which reconciliation refuses. `source_key('C536379')` in SQL gives the same number.
pub fn text_key(text: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("kartoteka/text-key/v1\0{}", text.trim()).as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    // 62 bits, negated and shifted: in [-2^62, -1].
    let n = i64::from_be_bytes(bytes) & ((1i64 << 62) - 1);
    -n - 1
}

/// The BIGINT a source's key written as text is stored as: a whole number (`42`, `17850.0`, as
/// exports write ids) is that number; any other text is [`text_key`] of it.
pub fn key_of_text(text: &str) -> i64 {
    let t = text.trim();
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = int.strip_prefix(['-', '+']).unwrap_or(int);
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b == b'0')
        && let Ok(v) = int.parse::<i64>()
    {
        return v;
    }
    text_key(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_keys_are_stable_negative_and_distinct() {
        assert_eq!(text_key("C536379"), text_key(" C536379 "));
        assert_ne!(text_key("C536379"), text_key("C536380"));
        assert!(text_key("C536379") < 0 && text_key("") < 0);
        assert_eq!(key_of_text("17850.0"), 17850);
        assert_eq!(key_of_text(" 42 "), 42);
        assert_eq!(key_of_text("17850.5"), text_key("17850.5"));
        assert_eq!(key_of_text("C536379"), text_key("C536379"));
    }

    #[test]
    fn every_column_has_a_class_in_its_metadata() {
        for t in tables() {
            for f in t.schema().fields() {
                let class = f.metadata().get(CLASS_KEY).and_then(|c| Class::parse(c));
                assert!(class.is_some(), "{}.{} has no class", t.name, f.name());
            }
        }
    }

    #[test]
    fn pii_columns_are_the_ones_the_model_names() {
        let pii: Vec<String> = tables()
            .iter()
            .flat_map(|t| {
                t.columns
                    .iter()
                    .filter(|c| c.class == Class::Pii)
                    .map(move |c| format!("{}.{}", t.name, c.name))
            })
            .collect();
        assert_eq!(
            pii,
            [
                "staff.full_name",
                "staff.email",
                "clients.name",
                "clients.phone",
                "clients.email",
                "interactions.summary"
            ]
        );
    }
}
