//! The read-only search structure of an [`crate::HnswIndex`].
//!
//! hnsw_rs builds and persists the graph; searching it through hnsw_rs
//! costs an `Arc` clone per visited node, a hashed visited set and a heap
//! of reference-counted entries per step, and its neighbour lists are
//! scattered over the heap. A [`SearchGraph`] is a snapshot of that graph
//! in flat arrays: the vectors of all slots in one contiguous buffer,
//! layer 0 as fixed-stride `u32` lists, a reusable epoch-stamped visited
//! array per thread, and distances through the crate's SIMD kernels.
//!
//! The walk is bound by memory latency: it scores a few thousand rows
//! scattered over the whole buffer per query. For cosine (unit vectors,
//! every component in [-1, 1]) the walk reads the rows as f16, half the
//! bytes, and the candidates it returns are rescored exactly with hnsw_rs's
//! own f32 vectors: 1.15–1.35× the queries/s at the same recall on the 100k
//! benchmark set. L2 rows can be of any magnitude, so they stay f32.
//!
//! Re-selecting the layer-0 lists with the diversity heuristic over the
//! links into and out of each node was tried and removed: on the clustered
//! 100k benchmark set it cut recall@10 at ef 64 from 0.98 to 0.74 (inside a
//! tight cluster the heuristic keeps too few of the cluster's members).

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::Arc;

use half::f16;
use half::slice::HalfFloatSliceExt;
use hnsw_rs::hnsw::Point;
use hnsw_rs::prelude::{Distance, Hnsw};

use crate::distance::{graph_distance, Fns, Metric};

/// The walk's best `RESCORE_FACTOR * k + RESCORE_SLACK` rows are rescored
/// exactly when it ran on f16 rows.
const RESCORE_FACTOR: usize = 2;
const RESCORE_SLACK: usize = 16;

/// A distance with a total order, smaller is closer.
#[derive(Clone, Copy, PartialEq)]
struct Near(f32, u32);

impl Eq for Near {}
impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Near {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(self.1.cmp(&other.1))
    }
}

/// The rows the walk scores, slots `0..n`, each `dim` values.
enum Rows {
    /// Cosine: unit vectors; the walk's distances are approximate and the
    /// results are rescored in f32.
    UnitF16(Vec<f16>),
    /// L2: exact.
    F32(Vec<f32>),
}

/// A flat, immutable copy of an hnsw_rs graph (see the module docs).
pub(crate) struct SearchGraph {
    dim: usize,
    metric: Metric,
    fns: &'static Fns,
    rows: Rows,
    /// hnsw_rs's points by slot: their exact f32 vectors, without a copy.
    points: Vec<Arc<Point<'static, f32>>>,
    /// Layer 0: per slot `[count, link, link, ...]`, stride `1 + degree0`.
    links0: Vec<u32>,
    degree0: usize,
    /// Upper layers, only for the few slots that have them: slot `s` owns
    /// `upper[upper_at[s]..upper_at[s + 1]]`, `level(s)` blocks of stride
    /// `1 + degree` for layers 1, 2, ...
    upper_at: Vec<u32>,
    upper: Vec<u32>,
    degree: usize,
    entry: u32,
    top_level: usize,
}

impl std::fmt::Debug for SearchGraph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchGraph")
            .field("slots", &self.len())
            .field("top_level", &self.top_level)
            .finish()
    }
}

impl SearchGraph {
    /// Snapshots `h`, whose data ids are the slots `0..n`. `Ok(None)` for
    /// an empty graph. A graph this index did not build — ids not dense in
    /// `0..n` or repeated, a vector of another dimension, a link to a
    /// missing slot, no entry point — is an `Err`: the search loop below
    /// indexes by slot without further checks, so a reloaded graph must
    /// not get here unchecked.
    pub(crate) fn from_hnsw<D: Distance<f32> + Send + Sync>(
        h: &Hnsw<'static, f32, D>,
        dim: usize,
        metric: Metric,
    ) -> Result<Option<Self>, String> {
        let n = h.get_nb_point();
        if n == 0 {
            return Ok(None);
        }
        if u32::try_from(n).is_err() {
            return Err(format!("{n} points: slots are u32"));
        }
        let m = h.get_max_nb_connection() as usize;
        let degree0 = 2 * m;
        let mut rows = match metric {
            Metric::L2 => Rows::F32(vec![0.0; n * dim]),
            _ => Rows::UnitF16(vec![f16::ZERO; n * dim]),
        };
        let mut points: Vec<Option<Arc<Point<'static, f32>>>> = vec![None; n];
        let mut lists0: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut uppers: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
        let top_level = h.get_max_level_observed() as usize;
        let mut entry = None;
        for p in h.get_point_indexation() {
            let slot = p.get_origin_id();
            if slot >= n || points[slot].is_some() {
                return Err(format!("point id {slot} out of 0..{n} or repeated"));
            }
            let v = p.get_v();
            if v.len() != dim {
                return Err(format!(
                    "point {slot} has dimension {}, the index {dim}",
                    v.len()
                ));
            }
            let at = slot * dim..(slot + 1) * dim;
            match &mut rows {
                Rows::UnitF16(r) => r[at].convert_from_f32_slice(v),
                Rows::F32(r) => r[at].copy_from_slice(v),
            }
            let level = p.get_point_id().0 as usize;
            // Any top-layer point is a valid entry; the lowest slot makes
            // the choice independent of iteration order (a reloaded graph
            // answers exactly as the saved one).
            if level == top_level && entry.is_none_or(|e| slot < e as usize) {
                entry = Some(slot as u32);
            }
            let hood = p.get_neighborhood_id();
            for (l, links) in hood.iter().enumerate().take(level + 1) {
                let mut ids = Vec::with_capacity(links.len());
                for nb in links {
                    if nb.d_id >= n {
                        return Err(format!("point {slot} links to missing point {}", nb.d_id));
                    }
                    ids.push(nb.d_id as u32);
                }
                if l == 0 {
                    lists0[slot] = ids;
                } else {
                    uppers[slot].push(ids);
                }
            }
            points[slot] = Some(p);
        }
        let points = points
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| format!("the graph does not hold every slot of 0..{n}"))?;
        let entry = entry.ok_or("no entry point at the top level")?;
        let mut upper_at = Vec::with_capacity(n + 1);
        let mut upper = Vec::new();
        for layers in &uppers {
            upper_at.push(
                u32::try_from(upper.len()).map_err(|_| "upper layers too large".to_string())?,
            );
            for ids in layers {
                upper.extend(pack(std::slice::from_ref(ids), m));
            }
        }
        upper_at
            .push(u32::try_from(upper.len()).map_err(|_| "upper layers too large".to_string())?);
        Ok(Some(SearchGraph {
            dim,
            metric,
            fns: Fns::get(),
            rows,
            points,
            links0: pack(&lists0, degree0),
            degree0,
            upper_at,
            upper,
            degree: m,
            entry,
            top_level,
        }))
    }

    pub(crate) fn len(&self) -> usize {
        self.points.len()
    }

    /// The exact stored vector of `slot`.
    pub(crate) fn vector(&self, slot: u32) -> &[f32] {
        self.points[slot as usize].get_v()
    }

    /// The walk's distance to `slot` (approximate for [`Rows::UnitF16`]).
    #[inline]
    fn walk_distance(&self, q: &[f32], slot: u32) -> f32 {
        let s = slot as usize * self.dim;
        match &self.rows {
            Rows::UnitF16(r) => (1.0 - (self.fns.dot_f16)(q, &r[s..s + self.dim])).max(0.0),
            Rows::F32(r) => (self.fns.l2)(q, &r[s..s + self.dim]),
        }
    }

    #[inline]
    fn prefetch_row(&self, slot: u32) {
        let s = slot as usize * self.dim;
        match &self.rows {
            Rows::UnitF16(r) => prefetch(&r[s..s + self.dim]),
            Rows::F32(r) => prefetch(&r[s..s + self.dim]),
        }
    }

    #[inline]
    fn links0(&self, slot: u32) -> &[u32] {
        let s = slot as usize * (self.degree0 + 1);
        let count = self.links0[s] as usize;
        &self.links0[s + 1..s + 1 + count]
    }

    fn links_at(&self, slot: u32, level: usize) -> &[u32] {
        let start = self.upper_at[slot as usize] as usize + (level - 1) * (self.degree + 1);
        if start >= self.upper_at[slot as usize + 1] as usize {
            return &[];
        }
        let count = self.upper[start] as usize;
        &self.upper[start + 1..start + 1 + count]
    }

    /// The `k` closest slots to `q` that `accept` lets through among the
    /// walk's `ef` best, closest first, as `(exact distance, slot)`.
    /// Rejected slots are still walked through, so the graph stays
    /// connected under a filter.
    pub(crate) fn search(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<(f32, u32)> {
        let mut ep = self.entry;
        let mut ep_dist = self.walk_distance(q, ep);
        for level in (1..=self.top_level).rev() {
            loop {
                let mut moved = false;
                for &nb in self.links_at(ep, level) {
                    let d = self.walk_distance(q, nb);
                    if d < ep_dist {
                        ep_dist = d;
                        ep = nb;
                        moved = true;
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        let mut found = VISITED.with(|cell| {
            let mut visited = cell.borrow_mut();
            visited.reset(self.len());
            // ef sizes the candidate heaps: never more than the graph.
            let ef = ef.max(k).max(1).min(self.len());
            self.search_layer0(q, ep, ep_dist, ef, accept, &mut visited)
        });
        if let Rows::UnitF16(_) = self.rows {
            // f16 rounding moves a distance by ~1e-4: enough to swap near
            // ties, not to push a true top-k row far down the list, so the
            // head of the list is rescored, not all `ef` rows.
            found.truncate(RESCORE_FACTOR * k + RESCORE_SLACK);
            for (d, slot) in &mut found {
                *d = graph_distance(self.metric, q, self.vector(*slot));
            }
            found.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        found.truncate(k);
        found
    }

    fn search_layer0(
        &self,
        q: &[f32],
        ep: u32,
        ep_dist: f32,
        ef: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
        visited: &mut Visited,
    ) -> Vec<(f32, u32)> {
        let ok = |s: u32| accept.is_none_or(|f| f(s));
        let mut candidates: BinaryHeap<Reverse<Near>> = BinaryHeap::with_capacity(ef * 4);
        let mut best: BinaryHeap<Near> = BinaryHeap::with_capacity(ef + 1);
        visited.insert(ep);
        candidates.push(Reverse(Near(ep_dist, ep)));
        if ok(ep) {
            best.push(Near(ep_dist, ep));
        }
        let mut bound = if best.len() == ef {
            ep_dist
        } else {
            f32::INFINITY
        };
        let mut fresh: Vec<u32> = Vec::with_capacity(self.degree0);
        while let Some(Reverse(Near(d, c))) = candidates.pop() {
            if d > bound {
                break;
            }
            fresh.clear();
            for &nb in self.links0(c) {
                if visited.insert(nb) {
                    fresh.push(nb);
                }
            }
            for (i, &nb) in fresh.iter().enumerate() {
                if let Some(&next) = fresh.get(i + 1) {
                    self.prefetch_row(next);
                }
                let dn = self.walk_distance(q, nb);
                if best.len() < ef || dn < bound {
                    candidates.push(Reverse(Near(dn, nb)));
                    if ok(nb) {
                        best.push(Near(dn, nb));
                        if best.len() > ef {
                            best.pop();
                        }
                        if best.len() == ef {
                            bound = best.peek().map_or(f32::INFINITY, |b| b.0);
                        }
                    }
                }
            }
        }
        best.into_sorted_vec()
            .into_iter()
            .map(|Near(d, s)| (d, s))
            .collect()
    }
}

fn pack(lists: &[Vec<u32>], degree: usize) -> Vec<u32> {
    let mut out = Vec::with_capacity(lists.len() * (degree + 1));
    for list in lists {
        let kept = list.len().min(degree);
        out.push(kept as u32);
        out.extend_from_slice(&list[..kept]);
        out.resize(out.len() + degree - kept, 0);
    }
    out
}

#[inline]
fn prefetch<T>(v: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // One hint per 64-byte line; the loads follow within a few hundred
        // cycles, so the lines arrive while the current row is scored.
        for line in v.chunks((64 / std::mem::size_of::<T>()).max(1)) {
            // SAFETY: prefetch is a hint and never faults; the pointer is
            // in bounds.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = v;
}

/// Visited marks stamped with an epoch, so a search clears nothing.
struct Visited {
    marks: Vec<u16>,
    epoch: u16,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `slot`; false when it was already marked in this search.
    #[inline]
    fn insert(&mut self, slot: u32) -> bool {
        let m = &mut self.marks[slot as usize];
        if *m == self.epoch {
            false
        } else {
            *m = self.epoch;
            true
        }
    }
}

thread_local! {
    static VISITED: RefCell<Visited> = const {
        RefCell::new(Visited { marks: Vec::new(), epoch: 0 })
    };
}
