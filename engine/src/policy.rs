//! Access policies: which rows and which columns of each table a role reads (security.md), and the
//! table wrapper that makes them part of every DataFusion plan.
//!
//! A [`Policy`] maps each table a role may read to a row rule and a column rule per sensitivity class.
//! Deny by default: a table without a policy is not in the session at all, a class without a rule is
//! absent, and a role without a policy (admin, for CRM data) gets no session.
//!
//! [`PolicyTable`] wraps a table's raw provider. Its scan is
//! `PolicyBarrierExec ← projection (masks) ← filter (row rule) ← raw scan`, built by us before any user
//! expression is planned. The barrier is opaque to the optimizer: no user predicate, projection, sort
//! or limit is pushed below it, and it reports unknown statistics, so neither an error raised by a user
//! expression on a hidden row (`CASE WHEN name = '…' THEN 1/0 END`) nor `COUNT(*)` from file footers
//! can reveal what the filter hides. The only user predicates that travel below are comparisons of a
//! visible column with a literal, which cannot fail; they serve pruning.

use std::any::Any;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::execution::context::ExecutionProps;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{Expr, Operator, TableProviderFilterPushDown, col, lit, when};
use datafusion::physical_expr::expressions::{Column, DynamicFilterPhysicalExpr};
use datafusion::physical_expr::{PhysicalExpr, create_physical_expr};
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::filter_pushdown::{
    ChildFilterDescription, FilterDescription, FilterPushdownPhase,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

use crate::id_set::in_ids;
use crate::model::{self, CLASS_KEY, Class, Table};
use crate::session::Role;

/// What a role sees of the columns of one sensitivity class.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnRule {
    /// The stored value.
    Visible,
    /// The keyed-hash token (`tok_…`) instead of the value; the value's key is not needed.
    Masked,
    /// The value where the condition holds, the token elsewhere.
    VisibleIf(Cond),
    /// The column is not in the table at all.
    Absent,
}

/// A condition on one row, in terms of the principal's scope.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// The column holds a staff id of the principal's scope (themselves, or their team).
    StaffIn(&'static str),
    /// The column holds the id of a client the principal may see.
    ClientVisible(&'static str),
    /// The column holds the id of a deal the principal may see.
    DealVisible(&'static str),
    /// The column is NULL (company-wide rows such as targets without a manager).
    IsNull(&'static str),
}

/// Which rows of a table a role reads.
#[derive(Debug, Clone, PartialEq)]
pub enum RowRule {
    /// Every row.
    All,
    /// Rows where any of the conditions holds.
    AnyOf(Vec<Cond>),
}

/// One table's policy for one role.
#[derive(Debug, Clone, PartialEq)]
pub struct TablePolicy {
    /// Row rule.
    pub rows: RowRule,
    /// Column rule per class; a class without a rule is absent.
    pub columns: BTreeMap<Class, ColumnRule>,
    /// Rules for single columns that differ from their class's (staff e-mail for managers).
    pub overrides: BTreeMap<&'static str, ColumnRule>,
}

impl TablePolicy {
    /// Does it show every row and every column of `table` as stored (nothing filtered or masked)?
    pub fn shows_whole(&self, table: &Table) -> bool {
        matches!(self.rows, RowRule::All)
            && table.columns.iter().all(|c| {
                matches!(
                    self.overrides
                        .get(c.name)
                        .or_else(|| self.columns.get(&c.class)),
                    Some(ColumnRule::Visible)
                )
            })
    }
}

/// A role's policy over all tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    tables: BTreeMap<&'static str, TablePolicy>,
}

impl Policy {
    /// The built-in policy of `role` (security.md, "Roles" and the row-predicate matrix).
    pub fn for_role(role: Role) -> Policy {
        use Cond::*;
        let scoped = matches!(role, Role::Manager | Role::TeamLead);
        let pii = match role {
            Role::Owner | Role::Manager | Role::TeamLead => ColumnRule::Visible,
            Role::Analyst => ColumnRule::Masked,
            Role::Admin => ColumnRule::Absent,
        };
        let mut tables = BTreeMap::new();
        if role == Role::Admin {
            // The administrator runs the system and reads no CRM data: no table at all.
            return Policy { tables };
        }
        for t in model::tables() {
            let rows = if !scoped {
                RowRule::All
            } else {
                match t.name {
                    "clients" | "deals" => RowRule::AnyOf(vec![StaffIn("owner_id")]),
                    "deal_stage_changes" => RowRule::AnyOf(vec![DealVisible("deal_id")]),
                    "interactions" | "tasks" => {
                        RowRule::AnyOf(vec![StaffIn("staff_id"), ClientVisible("client_id")])
                    }
                    "payments" => RowRule::AnyOf(vec![ClientVisible("client_id")]),
                    "ownership_changes" => RowRule::AnyOf(vec![
                        ClientVisible("client_id"),
                        StaffIn("from_staff"),
                        StaffIn("to_staff"),
                    ]),
                    "targets" => RowRule::AnyOf(vec![StaffIn("staff_id"), IsNull("staff_id")]),
                    "staff" | "pipeline_stages" | "marketing_spend" => RowRule::All,
                    // A table added to the model without a decision here is not readable.
                    _ => continue,
                }
            };
            // A manager's own interaction with a client who has since moved to a colleague stays
            // visible as a row, but the client's personal data in it does not.
            let pii_rule = match (scoped, t.name) {
                (true, "interactions") => ColumnRule::VisibleIf(ClientVisible("client_id")),
                _ => pii.clone(),
            };
            let columns = BTreeMap::from([
                (Class::Internal, ColumnRule::Visible),
                (Class::Pii, pii_rule),
            ]);
            // Managers see their colleagues' names, not their contact data: a staff e-mail is in
            // the clear only for the principal's own scope (themselves; a team lead's team).
            let overrides = match (scoped, t.name) {
                (true, "staff") => {
                    BTreeMap::from([("email", ColumnRule::VisibleIf(StaffIn("staff_id")))])
                }
                _ => BTreeMap::new(),
            };
            tables.insert(
                t.name,
                TablePolicy {
                    rows,
                    columns,
                    overrides,
                },
            );
        }
        Policy { tables }
    }

    /// The policy of one table, `None` when the role may not read it.
    pub fn table(&self, name: &str) -> Option<&TablePolicy> {
        self.tables.get(name)
    }

    /// Replace (or, with `None`, remove) one table's policy. For tests that prove the security suite
    /// notices a weakened policy.
    #[doc(hidden)]
    #[cfg(feature = "bypass-for-tests")]
    pub fn with_table(mut self, name: &'static str, policy: Option<TablePolicy>) -> Policy {
        match policy {
            Some(p) => self.tables.insert(name, p),
            None => self.tables.remove(name),
        };
        self
    }

    /// Whether any rule needs the principal's visible clients or deals resolved.
    pub fn needs_scope(&self) -> bool {
        let conds = |p: &TablePolicy| -> Vec<Cond> {
            let mut v = match &p.rows {
                RowRule::All => vec![],
                RowRule::AnyOf(c) => c.clone(),
            };
            for r in p.columns.values().chain(p.overrides.values()) {
                if let ColumnRule::VisibleIf(c) = r {
                    v.push(c.clone());
                }
            }
            v
        };
        self.tables.values().flat_map(conds).next().is_some()
    }
}

/// The ids a scoped principal's conditions refer to, resolved once per snapshot.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scope {
    /// Staff ids of the principal (a manager: themselves; a team lead: their team).
    pub staff: Vec<i64>,
    /// Clients whose current owner is in `staff`.
    pub clients: Vec<i64>,
    /// Deals whose current owner is in `staff`.
    pub deals: Vec<i64>,
}

impl Cond {
    fn expr(&self, scope: &Scope) -> Expr {
        match self {
            Cond::StaffIn(c) => in_ids(col(*c), "staff", &scope.staff),
            Cond::ClientVisible(c) => in_ids(col(*c), "clients", &scope.clients),
            Cond::DealVisible(c) => in_ids(col(*c), "deals", &scope.deals),
            Cond::IsNull(c) => col(*c).is_null(),
        }
    }
}

/// Whether user predicates stay above the policy filter. Outside builds with the
/// `bypass-for-tests` feature (the security suite's mutation test) there is only one setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Barrier {
    /// User predicates stay above the policy filter (the only setting outside tests).
    On,
    /// User predicates are evaluated below the policy filter: a deliberate leak.
    #[cfg(feature = "bypass-for-tests")]
    LeakForTests,
}

impl Barrier {
    /// Does this barrier let user predicates below the policy filter?
    fn leaks(self) -> bool {
        #[cfg(feature = "bypass-for-tests")]
        if self == Barrier::LeakForTests {
            return true;
        }
        false
    }
}

/// A table wrapped in a principal's policy.
pub(crate) struct PolicyTable {
    name: &'static str,
    inner: Arc<dyn TableProvider>,
    /// Row filter over the stored schema (`None`: all rows).
    rows: Option<Expr>,
    /// Output columns: name and expression over the stored schema.
    outputs: Vec<(String, Expr)>,
    /// Columns whose output is the stored value unchanged: user predicates on them may be pushed down.
    plain: HashSet<String>,
    schema: SchemaRef,
    barrier: Barrier,
    /// Where the scan's decrypted footers are kept, and the key ids of the session reading them.
    footers: Option<(Arc<crate::footers::FooterCache>, Arc<str>)>,
    /// The policy shows the whole table: its statistics describe only what the principal sees.
    whole: bool,
}

impl fmt::Debug for PolicyTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Row filters list the principal's client ids: not for logs.
        f.debug_struct("PolicyTable")
            .field("table", &self.name)
            .field("columns", &self.outputs.len())
            .finish_non_exhaustive()
    }
}

impl PolicyTable {
    /// Wrap `inner` (a provider of `table`'s stored schema) in `policy`, resolved for `scope`.
    pub(crate) fn new(
        table: &'static Table,
        inner: Arc<dyn TableProvider>,
        policy: &TablePolicy,
        scope: &Scope,
        barrier: Barrier,
    ) -> datafusion::error::Result<PolicyTable> {
        let rows = match &policy.rows {
            RowRule::All => None,
            RowRule::AnyOf(conds) => Some(
                conds
                    .iter()
                    .map(|c| c.expr(scope))
                    .reduce(Expr::or)
                    .unwrap_or(lit(false)),
            ),
        };
        let mut outputs = Vec::new();
        let mut plain = HashSet::new();
        let mut fields = Vec::new();
        for c in &table.columns {
            let rule = policy
                .overrides
                .get(c.name)
                .or_else(|| policy.columns.get(&c.class))
                .unwrap_or(&ColumnRule::Absent);
            let token = || -> Expr {
                if c.class == Class::Pii {
                    col(model::token_column(c.name))
                } else {
                    // Only pii has tokens; a masked internal column is NULL.
                    lit(ScalarValue::try_from(&model::read_type(&c.ty.arrow_type()))
                        .unwrap_or(ScalarValue::Null))
                }
            };
            let (expr, masked) = match rule {
                ColumnRule::Absent => continue,
                ColumnRule::Visible => (col(c.name), false),
                ColumnRule::Masked => (token(), true),
                ColumnRule::VisibleIf(cond) => (
                    when(cond.expr(scope), col(c.name)).otherwise(token())?,
                    true,
                ),
            };
            // As the session reads the stored column (or, masked pii, its text token).
            let data_type = if masked && c.class == Class::Pii {
                DataType::Utf8View
            } else {
                model::read_type(&c.ty.arrow_type())
            };
            let mut metadata = std::collections::HashMap::from([(
                CLASS_KEY.to_string(),
                c.class.as_str().to_string(),
            )]);
            if masked {
                metadata.insert("kartoteka.masked".into(), "true".into());
            } else {
                plain.insert(c.name.to_string());
            }
            fields
                .push(Field::new(c.name, data_type, masked || c.nullable).with_metadata(metadata));
            outputs.push((c.name.to_string(), expr));
        }
        Ok(PolicyTable {
            name: table.name,
            inner,
            rows,
            outputs,
            plain,
            schema: Arc::new(Schema::new(fields)),
            barrier,
            footers: None,
            whole: policy.shows_whole(table),
        })
    }

    /// Read footers through `cache`, as decrypted with the keys `keys` names.
    pub(crate) fn with_footers(
        mut self,
        cache: Arc<crate::footers::FooterCache>,
        keys: Arc<str>,
    ) -> PolicyTable {
        self.footers = Some((cache, keys));
        self
    }

    /// A user predicate that cannot fail and reads only plain columns: safe below the policy filter.
    fn is_safe(&self, e: &Expr) -> bool {
        let is_col = |e: &Expr| matches!(e, Expr::Column(c) if self.plain.contains(c.name()));
        let is_lit = |e: &Expr| matches!(e, Expr::Literal(..));
        match e {
            Expr::BinaryExpr(b) => match b.op {
                Operator::And => self.is_safe(&b.left) && self.is_safe(&b.right),
                Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq => {
                    (is_col(&b.left) && is_lit(&b.right)) || (is_lit(&b.left) && is_col(&b.right))
                }
                _ => false,
            },
            Expr::IsNull(e) | Expr::IsNotNull(e) => is_col(e),
            Expr::InList(l) => is_col(&l.expr) && l.list.iter().all(is_lit),
            Expr::Between(b) => is_col(&b.expr) && is_lit(&b.low) && is_lit(&b.high),
            _ => false,
        }
    }
}

fn physical(expr: &Expr, schema: &DFSchema) -> datafusion::error::Result<Arc<dyn PhysicalExpr>> {
    create_physical_expr(
        expr,
        schema,
        &ExecutionProps::new(),
        &PhysicalPlanningContext::default(),
    )
}

#[async_trait]
impl TableProvider for PolicyTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|f| {
                if self.is_safe(f) {
                    // Evaluated on the scan (below), on the stored value the output shows unchanged:
                    // the same answer as above the barrier, so it is not evaluated twice.
                    TableProviderFilterPushDown::Exact
                } else if self.barrier.leaks() {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        // A limit below the policy filter would cut before filtering; the plan above applies it.
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let wanted: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.outputs.len()).collect(),
        };
        let (leaky, pushed): (Vec<Expr>, Vec<Expr>) = filters
            .iter()
            .cloned()
            .partition(|f| self.barrier.leaks() && !self.is_safe(f));
        // Stored columns the scan must read: those of the wanted outputs, the row filter, the
        // pushed-down predicates.
        let mut needed: HashSet<String> = HashSet::new();
        let mut refs = |e: &Expr| {
            for c in e.column_refs() {
                needed.insert(c.name().to_string());
            }
        };
        for &i in &wanted {
            refs(&self.outputs[i].1);
        }
        if let Some(r) = &self.rows {
            refs(r);
        }
        for f in filters {
            // Filters name output columns; plain outputs share their stored column's name.
            refs(f);
        }
        let stored = self.inner.schema();
        let mut inner_projection: Vec<usize> = stored
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| needed.contains(f.name()))
            .map(|(i, _)| i)
            .collect();
        inner_projection.sort_unstable();
        let mut plan = self
            .inner
            .scan(state, Some(&inner_projection), &pushed, None)
            .await?;
        if let Some((cache, keys)) = &self.footers {
            plan = crate::footers::through_cache(plan, state, cache, keys)?;
        }
        let scanned = DFSchema::try_from(plan.schema())?;
        if let Some(conj) = pushed.iter().cloned().reduce(Expr::and) {
            // The predicates that cannot fail (a plain column against a literal), right on the scan:
            // DataFusion's physical filter pushdown hands them to the Parquet reader, which skips
            // row groups (and pages) by their statistics. They leak nothing on the rows the policy
            // hides, and they are not evaluated again above the barrier (`Exact`): a plain column's
            // output is its stored value.
            plan = Arc::new(FilterExec::try_new(physical(&conj, &scanned)?, plan)?);
        }
        if !leaky.is_empty() {
            // Deliberately wrong (tests only): user predicates evaluated before the policy filter.
            let conj = leaky.into_iter().reduce(Expr::and).expect("not empty");
            plan = Arc::new(FilterExec::try_new(physical(&conj, &scanned)?, plan)?);
            // Kept apart from the policy filter, which the optimizer would otherwise merge it into
            // (and DataFusion evaluates `AND` lazily, hiding the leak this switch exists to show).
            plan = Arc::new(PolicyBarrierExec::new(plan, false));
        }
        if let Some(rows) = &self.rows {
            plan = Arc::new(FilterExec::try_new(physical(rows, &scanned)?, plan)?);
        }
        let exprs = wanted
            .iter()
            .map(|&i| {
                let (name, e) = &self.outputs[i];
                Ok((physical(e, &scanned)?, name.clone()))
            })
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let declared = self.schema.project(&wanted)?;
        plan = Arc::new(ProjectionExec::try_new_with_schema_metadata(
            exprs, plan, &declared,
        )?);
        Ok(Arc::new(PolicyBarrierExec::new(plan, self.whole)))
    }
}

/// The barrier above a policy-wrapped scan: passes its input through unchanged, and lets nothing
/// through from above — no filter, projection, sort or limit pushdown — and reports unknown statistics,
/// unless the policy shows the whole table (`whole`): then the statistics below describe exactly what
/// the principal sees, and passing them lets joins be planned with row counts. (Only sessions that show
/// every table whole gather statistics at all; see `Engine::session_under`.)
#[derive(Debug, Clone)]
pub struct PolicyBarrierExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    whole: bool,
}

impl PolicyBarrierExec {
    fn new(input: Arc<dyn ExecutionPlan>, whole: bool) -> PolicyBarrierExec {
        let properties = Arc::new(PlanProperties::clone(input.properties()));
        PolicyBarrierExec {
            input,
            properties,
            whole,
        }
    }
}

impl DisplayAs for PolicyBarrierExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PolicyBarrierExec")
    }
}

impl ExecutionPlan for PolicyBarrierExec {
    fn name(&self) -> &str {
        "PolicyBarrierExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> datafusion::error::Result<TreeNodeRecursion>,
    ) -> datafusion::error::Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    /// Only DataFusion's own dynamic filters (bounds a hash join or TopK derives at run time from rows
    /// the principal may see) pass below: comparisons of a column with bounds, which cannot fail, so
    /// they cannot turn a hidden row into an error — they only skip rows earlier. Every user predicate
    /// stays above. A placeholder column that does not exist below marks a filter as not pushed (it is
    /// never evaluated: the optimizer pushes only what is marked supported).
    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> datafusion::error::Result<FilterDescription> {
        let screened: Vec<Arc<dyn PhysicalExpr>> = parent_filters
            .iter()
            .map(|f| {
                if (f.as_ref() as &dyn Any).is::<DynamicFilterPhysicalExpr>() {
                    Arc::clone(f)
                } else {
                    Arc::new(Column::new("__kartoteka_policy_barrier__", usize::MAX))
                        as Arc<dyn PhysicalExpr>
                }
            })
            .collect();
        Ok(FilterDescription::new()
            .with_child(ChildFilterDescription::from_child(&screened, &self.input)?))
    }

    // Sorts pushed below the barrier would evaluate user expressions on hidden rows.
    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        options: ReplaceChildrenOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(datafusion::error::DataFusionError::Internal(
                "PolicyBarrierExec has one child".into(),
            ));
        }
        let input = children.swap_remove(0);
        Ok(match options.children_properties {
            ChildrenPropertiesMode::Keep => Arc::new(PolicyBarrierExec {
                input,
                properties: Arc::clone(&self.properties),
                whole: self.whole,
            }),
            ChildrenPropertiesMode::Recompute => {
                Arc::new(PolicyBarrierExec::new(input, self.whole))
            }
        })
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> datafusion::error::Result<SendableRecordBatchStream> {
        self.input.execute(partition, context)
    }

    fn child_stats_requests(
        &self,
        partition: Option<usize>,
    ) -> Vec<datafusion::physical_plan::statistics::ChildStats> {
        use datafusion::physical_plan::statistics::ChildStats;
        vec![if self.whole {
            ChildStats::At(partition)
        } else {
            ChildStats::Skip
        }]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<datafusion::common::Statistics>],
        _args: &datafusion::physical_plan::statistics::StatisticsArgs,
    ) -> datafusion::error::Result<Arc<datafusion::common::Statistics>> {
        match input_stats.first() {
            Some(stats) if self.whole => Ok(Arc::clone(stats)),
            _ => Ok(Arc::new(datafusion::common::Statistics::new_unknown(
                &self.schema(),
            ))),
        }
    }
}
