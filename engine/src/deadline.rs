//! A statement's time limit, enforced inside the plan.
//!
//! A query runs as a tokio task that is aborted when its time is up, but an abort only takes effect
//! when the task yields, and an operator that produces much more than it reads (a cross join, a
//! nested-loop join, a recursive CTE) can keep a worker busy for minutes without yielding: the
//! statement runs on past its limit, burns a core in `serve`, and keeps a CLI process from exiting.
//! So every operator with inputs is wrapped in a [`DeadlineExec`] whose stream ends with
//! [`Error::Timeout`] at the first batch asked for after the deadline — each operator asks its
//! input for batches, so the whole plan stops within one batch of work of its limit.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, RecordBatchStream,
    SendableRecordBatchStream,
};
use futures::{Stream, StreamExt};

use crate::error::Error;

/// Wrap every operator of `plan` that has inputs so that it stops with a timeout error once
/// `deadline` has passed. `EXPLAIN ANALYZE` plans are left as they are (their output shows the plan).
pub(crate) fn with_deadline(
    plan: Arc<dyn ExecutionPlan>,
    deadline: Instant,
    limit: Duration,
) -> Result<Arc<dyn ExecutionPlan>> {
    if plan.name() == "AnalyzeExec" {
        return Ok(plan);
    }
    plan.transform_up(|node| {
        if node.children().is_empty() {
            return Ok(Transformed::no(node));
        }
        Ok(Transformed::yes(
            Arc::new(DeadlineExec::new(node, deadline, limit)) as Arc<dyn ExecutionPlan>,
        ))
    })
    .map(|t| t.data)
}

/// Is `e` the timeout a [`DeadlineExec`] raised (possibly wrapped by the operators above it)?
pub(crate) fn is_timeout(e: &DataFusionError) -> bool {
    e.to_string().contains(TIMEOUT_MARK)
}

const TIMEOUT_MARK: &str = "exceeded the time limit of";

/// Passes its input through, and ends it with a timeout error once the deadline has passed.
#[derive(Debug)]
struct DeadlineExec {
    input: Arc<dyn ExecutionPlan>,
    deadline: Instant,
    limit: Duration,
}

impl DeadlineExec {
    fn new(input: Arc<dyn ExecutionPlan>, deadline: Instant, limit: Duration) -> DeadlineExec {
        DeadlineExec {
            input,
            deadline,
            limit,
        }
    }
}

impl DisplayAs for DeadlineExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeadlineExec")
    }
}

impl ExecutionPlan for DeadlineExec {
    fn name(&self) -> &str {
        "DeadlineExec"
    }

    // Code that inspects the plan by type sees the operator this one wraps.
    fn downcast_delegate(&self) -> Option<&dyn ExecutionPlan> {
        Some(self.input.as_ref())
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(DataFusionError::Internal(
                "DeadlineExec has one child".into(),
            ));
        }
        Ok(Arc::new(DeadlineExec::new(
            children.swap_remove(0),
            self.deadline,
            self.limit,
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Ok(Box::pin(DeadlineStream {
            input: self.input.execute(partition, context)?,
            deadline: self.deadline,
            limit: self.limit,
        }))
    }
}

struct DeadlineStream {
    input: SendableRecordBatchStream,
    deadline: Instant,
    limit: Duration,
}

impl Stream for DeadlineStream {
    type Item = Result<arrow::array::RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if Instant::now() >= self.deadline {
            let e = Error::Timeout {
                seconds: self.limit.as_secs(),
            };
            return Poll::Ready(Some(Err(DataFusionError::External(Box::new(e)))));
        }
        self.input.poll_next_unpin(cx)
    }
}

impl RecordBatchStream for DeadlineStream {
    fn schema(&self) -> arrow::datatypes::SchemaRef {
        self.input.schema()
    }
}
