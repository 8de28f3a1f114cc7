//! The adaptive token budget of one forward pass, and out-of-memory
//! detection.
//!
//! The budget starts at `EmbedderOptions::max_batch_tokens`. On an
//! out-of-memory error it drops to half the cost of the batch that failed
//! (the batch is then re-planned and retried: no text is dropped), and that
//! cost is remembered as a ceiling. On a GPU it grows by a quarter after
//! [`GROW_AFTER`] successful batches that the budget actually limited, while
//! the device has at least [`GROW_MIN_FREE`] of its memory free, up to
//! [`GROW_CAP_FACTOR`] × the starting budget and never above ¾ of the
//! smallest cost that failed.

/// Consecutive successful, budget-limited batches before the budget grows.
pub(crate) const GROW_AFTER: usize = 4;

/// Largest budget growth may reach, as a multiple of the starting budget.
pub(crate) const GROW_CAP_FACTOR: usize = 8;

/// Share of the device's memory that must be free for the budget to grow.
pub(crate) const GROW_MIN_FREE: f64 = 0.25;

#[derive(Debug)]
pub(crate) struct AdaptiveBudget {
    limit: usize,
    cap: usize,
    /// The smallest batch cost that ran out of memory.
    ceiling: Option<usize>,
    streak: usize,
    can_grow: bool,
}

impl AdaptiveBudget {
    pub fn new(initial: usize, can_grow: bool) -> Self {
        Self {
            limit: initial.max(1),
            cap: initial.max(1).saturating_mul(GROW_CAP_FACTOR),
            ceiling: None,
            streak: 0,
            can_grow,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// A batch of `cost` tokens ran out of memory: the budget becomes at
    /// most half of it. Returns the new limit.
    pub fn on_oom(&mut self, cost: usize) -> usize {
        self.ceiling = Some(self.ceiling.map_or(cost, |c| c.min(cost)));
        self.limit = self.limit.min(cost / 2).max(1);
        self.streak = 0;
        self.limit
    }

    /// A batch of `cost` tokens succeeded. Returns the new limit when the
    /// budget grew; `memory_allows` is asked only then.
    pub fn on_success(
        &mut self,
        cost: usize,
        memory_allows: impl FnOnce() -> bool,
    ) -> Option<usize> {
        if !self.can_grow || cost.saturating_mul(4) < self.limit.saturating_mul(3) {
            // Rows, not tokens, limited this batch: more budget would not
            // change it.
            return None;
        }
        self.streak += 1;
        if self.streak < GROW_AFTER {
            return None;
        }
        self.streak = 0;
        let max = match self.ceiling {
            Some(c) => self.cap.min(c / 4 * 3),
            None => self.cap,
        };
        let next = (self.limit + (self.limit / 4).max(1)).min(max);
        if next > self.limit && memory_allows() {
            self.limit = next;
            Some(next)
        } else {
            None
        }
    }
}

/// Whether `err` is a device out-of-memory error, judged by its text:
/// cudarc's `CUDA_ERROR_OUT_OF_MEMORY` ("out of memory"), cuBLAS's
/// `CUBLAS_STATUS_ALLOC_FAILED`, or the simulated one
/// (`EmbedderOptions::simulate_oom_above_tokens`), whatever candle wrapped
/// around them.
pub(crate) fn is_oom(err: &crate::InferenceError) -> bool {
    let text = format!("{err} {err:?}").to_ascii_lowercase();
    text.contains("out of memory")
        || text.contains("out_of_memory")
        || text.contains("alloc_failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::tensor;
    use crate::InferenceError;

    #[test]
    fn oom_halves_and_remembers_the_ceiling() {
        let mut b = AdaptiveBudget::new(1000, true);
        assert_eq!(b.on_oom(800), 400);
        // A later, larger failure does not raise the limit.
        assert_eq!(b.on_oom(900), 400);
        assert_eq!(b.on_oom(300), 150);
        assert_eq!(b.on_oom(1), 1);
    }

    #[test]
    fn grows_after_limited_batches_up_to_the_caps() {
        let mut b = AdaptiveBudget::new(100, true);
        for _ in 0..GROW_AFTER - 1 {
            assert_eq!(b.on_success(90, || true), None);
        }
        assert_eq!(b.on_success(90, || true), Some(125));
        // Batches far below the budget never make it grow.
        for _ in 0..10 * GROW_AFTER {
            assert_eq!(b.on_success(10, || true), None);
        }
        // Memory too full: no growth.
        for _ in 0..GROW_AFTER - 1 {
            b.on_success(125, || true);
        }
        assert_eq!(b.on_success(125, || false), None);
        // Never beyond the cap.
        for _ in 0..1000 {
            let l = b.limit();
            b.on_success(l, || true);
        }
        assert_eq!(b.limit(), 100 * GROW_CAP_FACTOR);
        // After an OOM at 600: 300, growing to at most 450.
        b.on_oom(600);
        for _ in 0..1000 {
            let l = b.limit();
            b.on_success(l, || true);
        }
        assert_eq!(b.limit(), 450);
    }

    #[test]
    fn cpu_budgets_never_grow() {
        let mut b = AdaptiveBudget::new(100, false);
        for _ in 0..100 {
            assert_eq!(b.on_success(100, || true), None);
        }
        assert_eq!(b.limit(), 100);
    }

    #[test]
    fn oom_errors_are_told_from_others() {
        let cuda = candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        assert!(is_oom(&tensor(cuda)));
        let cublas = candle_core::Error::Msg("CublasError(CUBLAS_STATUS_ALLOC_FAILED)".into());
        assert!(is_oom(&tensor(cublas.context("matmul"))));
        let shape = candle_core::Error::Msg("shape mismatch in matmul".into());
        assert!(!is_oom(&tensor(shape)));
        assert!(!is_oom(&InferenceError::EmptyInput));
    }
}
