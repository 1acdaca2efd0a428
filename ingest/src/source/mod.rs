//! Sources: where CRM rows come from. Each driver turns its native values into [`crate::batch::Value`]s.

pub mod sqlite;
