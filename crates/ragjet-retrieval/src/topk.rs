//! Bounded top-k selection that allocates once per query, not per row.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// A scored slot; "greater" means *worse* so the heap top is the current
/// worst kept candidate. Ties on score go to the lower slot (deterministic).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored {
    pub score: f32,
    pub slot: u32,
}

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.slot.cmp(&other.slot))
    }
}

/// Keeps the k best (highest score) candidates seen.
pub(crate) struct TopK {
    k: usize,
    heap: BinaryHeap<Scored>,
}

/// Most candidates a [`TopK`] allocates room for up front; a larger `k`
/// grows the heap as candidates arrive, so a caller's `k` never sizes an
/// allocation by itself (callers cap `k` at the index size too).
const PREALLOCATE_MAX: usize = 4096;

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(PREALLOCATE_MAX) + 1),
        }
    }

    #[inline]
    pub(crate) fn push(&mut self, score: f32, slot: u32) {
        let c = Scored { score, slot };
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(mut worst) = self.heap.peek_mut() {
            if c < *worst {
                *worst = c;
            }
        }
    }

    /// Score of the worst kept candidate once k are kept, else `None`.
    pub(crate) fn worst_score(&self) -> Option<f32> {
        if self.heap.len() < self.k || self.k == 0 {
            return None;
        }
        self.heap.peek().map(|c| c.score)
    }

    pub(crate) fn merge(mut self, other: TopK) -> TopK {
        for c in other.heap {
            self.push(c.score, c.slot);
        }
        self
    }

    /// Best first.
    pub(crate) fn into_sorted(self) -> Vec<Scored> {
        self.heap.into_sorted_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_best_in_order_with_slot_tiebreak() {
        let mut t = TopK::new(3);
        for (i, s) in [0.5f32, 0.9, 0.1, 0.9, 0.7, -1.0].iter().enumerate() {
            t.push(*s, i as u32);
        }
        let v: Vec<(f32, u32)> = t.into_sorted().iter().map(|c| (c.score, c.slot)).collect();
        assert_eq!(v, vec![(0.9, 1), (0.9, 3), (0.7, 4)]);
    }

    #[test]
    fn a_huge_k_allocates_only_what_arrives() {
        let mut t = TopK::new(usize::MAX);
        for i in 0..10u32 {
            t.push(i as f32, i);
        }
        assert_eq!(t.worst_score(), None);
        assert_eq!(t.into_sorted().len(), 10);
    }

    #[test]
    fn k_zero_keeps_nothing() {
        let mut t = TopK::new(0);
        t.push(1.0, 0);
        assert!(t.into_sorted().is_empty());
    }
}
