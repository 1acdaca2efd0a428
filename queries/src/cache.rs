//! Metric answers kept for the next asker with the same key: the snapshot, the principal's scope
//! (login, role and the staff ids their policy keeps — so one user's answer is never served to
//! another), the metric, and its parameters *as bound* (defaults filled, times resolved), so two
//! spellings of one period share an answer and two periods never do. A newer snapshot drops every
//! answer over older ones. The security family reads the audit log, which moves on without a
//! snapshot: it is never cached.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use kartoteka_engine::{Principal, QueryResult, QuerySession};

use crate::catalog::{Family, Metric};
use crate::{Result, bind};

/// Whose answer: everything the engine's policy reads of the principal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    user: String,
    role: &'static str,
    staff: Vec<i64>,
}

impl Scope {
    /// The scope of `principal`.
    pub fn of(principal: &Principal) -> Scope {
        Scope {
            user: principal.user.clone(),
            role: principal.role.as_str(),
            staff: principal.staff_scope(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    snapshot: u64,
    scope: Scope,
    metric: String,
    /// Bound parameters, sorted by name, each value with its type.
    params: Vec<(String, String)>,
}

#[derive(Default)]
struct Entries {
    answers: HashMap<Key, Arc<QueryResult>>,
    order: VecDeque<Key>,
    newest_snapshot: u64,
}

/// The cache; cheap to share (`Arc`).
pub struct AnswerCache {
    capacity: usize,
    entries: Mutex<Entries>,
}

impl std::fmt::Debug for AnswerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnswerCache")
            .field("capacity", &self.capacity)
            .field("answers", &self.len())
            .finish()
    }
}

impl AnswerCache {
    /// A cache holding up to `capacity` answers (the oldest goes first).
    pub fn new(capacity: usize) -> AnswerCache {
        AnswerCache {
            capacity: capacity.max(1),
            entries: Mutex::new(Entries::default()),
        }
    }

    /// Answers held.
    pub fn len(&self) -> usize {
        self.lock().answers.len()
    }

    /// Holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves a consistent map (every change is one statement).
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// [`crate::run_metric`] through the cache: the answer for this session's snapshot and principal,
    /// computed once.
    pub async fn run_metric(
        &self,
        session: &QuerySession,
        metric: &Metric,
        args: &[(String, String)],
    ) -> Result<Arc<QueryResult>> {
        if metric.family == Family::Security {
            return Ok(Arc::new(crate::run_metric(session, metric, args).await?));
        }
        let snapshot = session.snapshot();
        let bound = bind(metric, args, snapshot.committed_at, session.time_zone())?;
        let mut params: Vec<(String, String)> = bound
            .into_iter()
            .map(|(k, v)| (k, format!("{:?}", v)))
            .collect();
        params.sort();
        let key = Key {
            snapshot: snapshot.id,
            scope: Scope::of(session.principal()),
            metric: metric.name.clone(),
            params,
        };
        if let Some(hit) = self.lock().answers.get(&key) {
            return Ok(Arc::clone(hit));
        }
        let answer = Arc::new(crate::run_metric(session, metric, args).await?);
        let mut entries = self.lock();
        if key.snapshot > entries.newest_snapshot {
            // A new snapshot: every older answer describes data that is no longer current.
            entries.newest_snapshot = key.snapshot;
            let newest = key.snapshot;
            entries.answers.retain(|k, _| k.snapshot >= newest);
            entries.order.retain(|k| k.snapshot >= newest);
        }
        if key.snapshot == entries.newest_snapshot && !entries.answers.contains_key(&key) {
            while entries.answers.len() >= self.capacity {
                let Some(oldest) = entries.order.pop_front() else {
                    break;
                };
                entries.answers.remove(&oldest);
            }
            entries.order.push_back(key.clone());
            entries.answers.insert(key, Arc::clone(&answer));
        }
        Ok(answer)
    }
}
