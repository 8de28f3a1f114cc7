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

    /// The `self.k` best of both. One linear selection over the union and
    /// a linear heapify, not a heap replacement (log k) per entry of
    /// `other`: parallel scans merge several full `k`-sized lists per
    /// query (the binary storage's rescoring depth is 1,280 at 128·k),
    /// where the per-entry replacements were a fifth of its search time.
    pub(crate) fn merge(self, other: TopK) -> TopK {
        let k = self.k;
        if other.heap.is_empty() {
            return self;
        }
        let mut all = self.heap.into_vec();
        all.append(&mut other.heap.into_vec());
        if all.len() > k {
            if k == 0 {
                all.clear();
            } else {
                all.select_nth_unstable(k - 1);
                all.truncate(k);
            }
        }
        TopK {
            k,
            heap: BinaryHeap::from(all),
        }
    }

    /// Best first. (A sort of the heap's vector: quicker than the heap's
    /// own heapsort, and the same order, `Scored`'s order being total.)
    pub(crate) fn into_sorted(self) -> Vec<Scored> {
        let mut v = self.heap.into_vec();
        v.sort_unstable();
        v
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

    /// Merging partial lists keeps exactly what one list fed every
    /// candidate keeps, in the same order: many tied scores (the lower
    /// slot wins), one to five parts and an empty one, k = 0 and k past
    /// the count.
    #[test]
    fn merge_equals_one_list_over_all_candidates() {
        let mut s = 7u64;
        let mut next = move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        for k in [0, 1, 3, 16, 100, 1000] {
            for parts in [1, 2, 5] {
                let n = 300usize;
                let cands: Vec<(f32, u32)> =
                    (0..n as u32).map(|i| ((next() % 20) as f32, i)).collect();
                let mut whole = TopK::new(k);
                cands.iter().for_each(|&(sc, i)| whole.push(sc, i));
                let mut merged = TopK::new(k);
                for p in 0..parts + 1 {
                    // Part `parts` is empty.
                    let mut t = TopK::new(k);
                    for &(sc, i) in cands.iter().filter(|c| c.1 as usize % parts == p) {
                        t.push(sc, i);
                    }
                    merged = merged.merge(t);
                }
                let key = |t: TopK| -> Vec<(f32, u32)> {
                    t.into_sorted().iter().map(|c| (c.score, c.slot)).collect()
                };
                let want = key(whole);
                assert_eq!(want.len(), k.min(n));
                assert_eq!(key(merged), want, "k={k} parts={parts}");
            }
        }
    }

    #[test]
    fn k_zero_keeps_nothing() {
        let mut t = TopK::new(0);
        t.push(1.0, 0);
        assert!(t.into_sorted().is_empty());
    }
}
