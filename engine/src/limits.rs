//! Per-session resource caps inside the engine's shared memory pool.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

/// A view of the shared pool that lets one session hold at most `cap` bytes: a session's query
/// fails with "resources exhausted" at its own cap, before it can starve other users of the pool.
#[derive(Debug)]
pub(crate) struct CappedPool {
    shared: Arc<dyn MemoryPool>,
    cap: usize,
    used: AtomicUsize,
}

impl CappedPool {
    pub(crate) fn new(shared: Arc<dyn MemoryPool>, cap: usize) -> CappedPool {
        CappedPool {
            shared,
            cap,
            used: AtomicUsize::new(0),
        }
    }
}

impl fmt::Display for CappedPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CappedPool(cap {} of {})", self.cap, self.shared)
    }
}

impl MemoryPool for CappedPool {
    fn name(&self) -> &str {
        "kartoteka-session"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let claimed = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(additional).filter(|&n| n <= self.cap)
            });
        if claimed.is_err() {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "this query needs more than the {} MiB its role may use; aggregate or filter more",
                self.cap >> 20
            )));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.cap)
    }
}
