//! Exact (brute-force) search over contiguous vector storage.

use std::ops::Range;
use std::path::Path;

use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bf16_gemm;
use crate::distance::{self, Fns, Metric};
use crate::error::{corrupt, Result};
use crate::filter::MetadataFilters;
use crate::index::{check_dim, check_filter, prepare_entries, prepare_query, VectorIndex};
use crate::metrics::{record_op, record_size, DEFAULT_NAMESPACE};
use crate::persist;
use crate::records::Records;
use crate::topk::TopK;
use crate::types::{Entry, Hit, Record};

/// Element type of the stored vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// 4 bytes per component, exact.
    #[default]
    F32,
    /// 2 bytes per component: half the memory and bandwidth, scores carry
    /// f16 rounding (about 3 significant digits per component).
    F16,
}

/// Options of a [`FlatIndex`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlatConfig {
    /// Vector dimension.
    pub dim: usize,
    /// Similarity metric.
    pub metric: Metric,
    /// Element type of the stored vectors.
    #[serde(default)]
    pub storage: Storage,
    /// Scans of at least this many rows are split across rayon threads;
    /// below it the thread hand-off costs more than it saves.
    #[serde(default = "default_parallel_rows")]
    pub parallel_rows: usize,
}

fn default_parallel_rows() -> usize {
    16_384
}

impl FlatConfig {
    /// f32 storage, default parallel threshold.
    pub fn new(dim: usize, metric: Metric) -> Self {
        FlatConfig {
            dim,
            metric,
            storage: Storage::F32,
            parallel_rows: default_parallel_rows(),
        }
    }

    /// Sets the storage type.
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }
}

#[derive(Debug, Clone)]
enum Vectors {
    F32(Vec<f32>),
    F16(Vec<f16>),
}

/// Batches smaller than this run as single queries.
const QUERY_BLOCK: usize = 8;
/// Most queries in one matrix product of the batched path.
const GEMM_QUERY_BLOCK: usize = 512;
/// Rows per matrix product: the score tile (queries × rows) and the row
/// block stay cache-resident.
const GEMM_ROW_BLOCK: usize = 512;
/// Candidates kept per query beyond `2k` before the exact rescore.
const POOL_EXTRA: usize = 16;

/// How the batched path computes its first-pass product scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Product {
    /// f32 `gemm`.
    F32,
    /// AVX-512 BF16 ([`bf16_gemm::scores`]); only where it is available.
    Bf16,
    /// The portable emulation of the bf16 kernel: the tests run the bf16
    /// pass's bound and fallback logic on every CPU with it.
    #[cfg(test)]
    Bf16Emulated,
}

/// What the bound check and the L2 scores of the batched path need to know
/// of the rows.
struct RowStats<'a> {
    mask: Option<&'a [bool]>,
    norms2: &'a [f32],
    max_norm: f32,
}

/// Exact search. Rows live in one contiguous array (row `i` at
/// `i*dim..(i+1)*dim`); deletes move the last row into the hole so the
/// array stays dense and a scan never skips tombstones.
#[derive(Debug, Clone)]
pub struct FlatIndex {
    cfg: FlatConfig,
    vectors: Vectors,
    records: Records,
    namespace: String,
}

impl FlatIndex {
    /// An empty index.
    pub fn new(cfg: FlatConfig) -> Result<Self> {
        check_dim(cfg.dim)?;
        let vectors = match cfg.storage {
            Storage::F32 => Vectors::F32(Vec::new()),
            Storage::F16 => Vectors::F16(Vec::new()),
        };
        Ok(FlatIndex {
            cfg,
            vectors,
            records: Records::default(),
            namespace: DEFAULT_NAMESPACE.to_string(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FlatConfig {
        &self.cfg
    }

    /// The stored (prepared: normalised for cosine, widened from f16)
    /// vector of an entry.
    pub fn vector(&self, id: &str) -> Option<Vec<f32>> {
        let slot = self.records.slot_of(id)? as usize;
        let d = self.cfg.dim;
        Some(match &self.vectors {
            Vectors::F32(v) => v[slot * d..(slot + 1) * d].to_vec(),
            Vectors::F16(v) => {
                let mut out = vec![0.0; d];
                distance::widen_f16(&v[slot * d..(slot + 1) * d], &mut out);
                out
            }
        })
    }

    fn set_row(&mut self, slot: usize, v: &[f32]) {
        let d = self.cfg.dim;
        match &mut self.vectors {
            Vectors::F32(s) => s[slot * d..(slot + 1) * d].copy_from_slice(v),
            Vectors::F16(s) => s[slot * d..(slot + 1) * d]
                .iter_mut()
                .zip(v)
                .for_each(|(o, x)| *o = f16::from_f32(*x)),
        }
    }

    fn push_row(&mut self, v: &[f32]) {
        match &mut self.vectors {
            Vectors::F32(s) => s.extend_from_slice(v),
            Vectors::F16(s) => s.extend(distance::narrow_f16(v)),
        }
    }

    fn remove_slot(&mut self, slot: u32) {
        let d = self.cfg.dim;
        let last = self.records.capacity() - 1;
        let s = slot as usize;
        fn mv<T: Copy>(v: &mut Vec<T>, s: usize, last: usize, d: usize) {
            if s != last {
                v.copy_within(last * d..(last + 1) * d, s * d);
            }
            v.truncate(last * d);
        }
        match &mut self.vectors {
            Vectors::F32(v) => mv(v, s, last, d),
            Vectors::F16(v) => mv(v, s, last, d),
        }
        self.records.swap_remove(slot);
    }

    #[inline]
    fn passes(&self, row: usize, filter: Option<&MetadataFilters>) -> bool {
        match filter {
            None => true,
            Some(f) => self
                .records
                .get(row)
                .is_some_and(|r| f.matches(&r.metadata)),
        }
    }

    fn scan(
        &self,
        q: &[f32],
        rows: Range<usize>,
        k: usize,
        filter: Option<&MetadataFilters>,
    ) -> TopK {
        let mut top = TopK::new(k);
        for r in rows {
            if self.passes(r, filter) {
                top.push(self.exact_score(q, r), r as u32);
            }
        }
        top
    }

    /// Score of row `r` with the active SIMD kernel; the one definition of
    /// a score that single, parallel and batched searches all return.
    #[inline]
    fn exact_score(&self, q: &[f32], r: usize) -> f32 {
        let d = self.cfg.dim;
        let f = Fns::get();
        match (&self.vectors, self.cfg.metric) {
            (Vectors::F32(v), Metric::L2) => -(f.l2)(q, &v[r * d..(r + 1) * d]),
            (Vectors::F32(v), _) => (f.dot)(q, &v[r * d..(r + 1) * d]),
            (Vectors::F16(v), Metric::L2) => -(f.l2_f16)(q, &v[r * d..(r + 1) * d]),
            (Vectors::F16(v), _) => (f.dot_f16)(q, &v[r * d..(r + 1) * d]),
        }
    }

    fn search_prepared(&self, q: &[f32], k: usize, filter: Option<&MetadataFilters>) -> TopK {
        let n = self.records.capacity();
        let threads = rayon::current_num_threads();
        if n < self.cfg.parallel_rows.max(1) || threads < 2 {
            return self.scan(q, 0..n, k, filter);
        }
        let chunk = n.div_ceil(threads * 4).max(1024);
        let starts: Vec<usize> = (0..n).step_by(chunk).collect();
        starts
            .into_par_iter()
            .map(|s| self.scan(q, s..(s + chunk).min(n), k, filter))
            .reduce(|| TopK::new(k), TopK::merge)
    }

    fn to_hits(&self, top: TopK) -> Vec<Hit> {
        top.into_sorted()
            .into_iter()
            .filter_map(|c| {
                self.records.get(c.slot as usize).map(|r| Hit {
                    id: r.id.clone(),
                    score: c.score,
                })
            })
            .collect()
    }

    /// Batched exact search: query blocks × row blocks as matrix products
    /// (AVX-512 BF16 where the CPU has it, twice the f32 multiply rate,
    /// else f32 `gemm`), a candidate pool per query, then an exact rescore.
    ///
    /// The product sums in a different order from the SIMD kernel, so its
    /// scores can differ in the last bits. To return exactly what
    /// [`VectorIndex::search`] returns, each query keeps its best
    /// `POOL_EXTRA + 2k` rows by product score, rescores them with the
    /// kernel, and checks that no row outside the pool could reach the k-th
    /// exact score given a worst-case rounding bound `delta`; when one could
    /// (near-ties at the pool edge), that query falls back to a full scan.
    fn search_gemm(
        &self,
        qs: &[Vec<f32>],
        k: usize,
        filter: Option<&MetadataFilters>,
        product: Product,
    ) -> Vec<TopK> {
        let d = self.cfg.dim;
        let n = self.records.capacity();
        let mask: Option<Vec<bool>> =
            filter.map(|_| (0..n).map(|r| self.passes(r, filter)).collect());
        // Squared row norms (for L2 and for the rounding bound).
        let f = Fns::get();
        let mut row_buf = vec![0.0f32; d];
        let norms2: Vec<f32> = (0..n)
            .map(|r| match &self.vectors {
                Vectors::F32(v) => (f.dot)(&v[r * d..(r + 1) * d], &v[r * d..(r + 1) * d]),
                Vectors::F16(v) => {
                    distance::widen_f16(&v[r * d..(r + 1) * d], &mut row_buf);
                    (f.dot)(&row_buf, &row_buf)
                }
            })
            .collect();
        let rows = RowStats {
            mask: mask.as_deref(),
            max_norm: norms2.iter().fold(0.0f32, |m, x| m.max(*x)).sqrt(),
            norms2: &norms2,
        };
        let mut tops = self.gemm_pass(qs, k, &rows, product);
        // Queries whose near-ties the bf16 bound could not settle get an
        // f32 pass (a bound 2⁹ times tighter), together when there are
        // enough of them; what is still unsettled is scanned.
        let unsettled: Vec<usize> = (0..qs.len()).filter(|&i| tops[i].is_none()).collect();
        if product != Product::F32 && unsettled.len() >= 2 * QUERY_BLOCK {
            let retry: Vec<Vec<f32>> = unsettled.iter().map(|&i| qs[i].clone()).collect();
            for (&i, t) in unsettled
                .iter()
                .zip(self.gemm_pass(&retry, k, &rows, Product::F32))
            {
                tops[i] = t;
            }
        }
        tops.into_iter()
            .zip(qs)
            .map(|(t, q)| t.unwrap_or_else(|| self.search_prepared(q, k, filter)))
            .collect()
    }

    /// Product scores (bf16 or f32) for every query, a candidate pool of
    /// `2k + POOL_EXTRA`, the exact rescore, and the bound check: `None`
    /// for a query whose top k the pool cannot prove.
    fn gemm_pass(
        &self,
        qs: &[Vec<f32>],
        k: usize,
        rows: &RowStats,
        product: Product,
    ) -> Vec<Option<TopK>> {
        let d = self.cfg.dim;
        let pool = 2 * k + POOL_EXTRA;
        let threads = rayon::current_num_threads().max(1);
        let qblock = qs.len().div_ceil(threads).clamp(1, GEMM_QUERY_BLOCK);
        let blocks: Vec<&[Vec<f32>]> = qs.chunks(qblock).collect();
        let pools: Vec<Vec<TopK>> = blocks
            .into_par_iter()
            .map(|block| self.gemm_block(block, pool, rows, product))
            .collect();
        // Worst-case error of a product score, plus that of the kernel's
        // exact score it is compared with, per unit of ‖q‖‖row‖.
        let exact_err = f32::EPSILON * d as f32 * 2.5;
        let err = exact_err
            + if product != Product::F32 {
                bf16_gemm::relative_error(d)
            } else {
                exact_err
            };
        let pools: Vec<TopK> = pools.into_iter().flatten().collect();
        qs.par_iter()
            .zip(pools)
            .map(|(q, cand)| {
                let cand = cand.into_sorted();
                let mut top = TopK::new(k);
                for c in &cand {
                    top.push(self.exact_score(q, c.slot as usize), c.slot);
                }
                if cand.len() >= pool {
                    let qn = distance::dot(q, q).sqrt();
                    let delta = match self.cfg.metric {
                        Metric::L2 => err * (qn + rows.max_norm) * (qn + rows.max_norm),
                        _ => err * qn * rows.max_norm,
                    } + f32::MIN_POSITIVE;
                    let worst_pool = cand.last().map_or(f32::NEG_INFINITY, |c| c.score);
                    if top
                        .worst_score()
                        .is_none_or(|kth| worst_pool + delta >= kth)
                    {
                        return None;
                    }
                }
                Some(top)
            })
            .collect()
    }

    /// One block of queries against every row, `GEMM_ROW_BLOCK` rows at a
    /// time: `scores = Q · Rᵀ`, then each query's candidate pool.
    fn gemm_block(
        &self,
        qs: &[Vec<f32>],
        pool: usize,
        stats: &RowStats,
        product: Product,
    ) -> Vec<TopK> {
        let (mask, norms2) = (stats.mask, stats.norms2);
        let d = self.cfg.dim;
        let n = self.records.capacity();
        let l2 = self.cfg.metric == Metric::L2;
        let m = qs.len();
        let mut qmat = Vec::with_capacity(m * d);
        qs.iter().for_each(|q| qmat.extend_from_slice(q));
        let qn2: Vec<f32> = qs.iter().map(|q| distance::dot(q, q)).collect();
        let mut tops: Vec<TopK> = (0..m).map(|_| TopK::new(pool)).collect();
        let mut scores = vec![0.0f32; m * GEMM_ROW_BLOCK];
        let bq = (product != Product::F32).then(|| bf16_gemm::Queries::new(qs, d));
        let mut panels = bf16_gemm::Panels::default();
        let mut wide = match &self.vectors {
            Vectors::F16(_) => vec![0.0f32; GEMM_ROW_BLOCK * d],
            Vectors::F32(_) => Vec::new(),
        };
        for start in (0..n).step_by(GEMM_ROW_BLOCK) {
            let rb = GEMM_ROW_BLOCK.min(n - start);
            let rows: &[f32] = match &self.vectors {
                Vectors::F32(v) => &v[start * d..(start + rb) * d],
                Vectors::F16(v) => {
                    distance::widen_f16(&v[start * d..(start + rb) * d], &mut wide[..rb * d]);
                    &wide[..rb * d]
                }
            };
            if let Some(bq) = &bq {
                match product {
                    #[cfg(test)]
                    Product::Bf16Emulated => {
                        bf16_gemm::scores_emulated(bq, rows, d, &mut panels, &mut scores)
                    }
                    _ => bf16_gemm::scores(bq, rows, d, &mut panels, &mut scores),
                }
            } else {
                // The sizes the unsafe call relies on, checked here rather
                // than assumed from the callers.
                assert!(qmat.len() == m * d && rows.len() == rb * d && scores.len() >= m * rb);
                // SAFETY: dst is m × rb (row stride rb), lhs m × d (row stride
                // d), rhs d × rb read from the row-major rows (element (kk, r)
                // at r*d + kk); every buffer holds at least that many elements
                // (asserted above).
                unsafe {
                    gemm::gemm(
                        m,
                        rb,
                        d,
                        scores.as_mut_ptr(),
                        1,
                        rb as isize,
                        false,
                        qmat.as_ptr(),
                        1,
                        d as isize,
                        rows.as_ptr(),
                        d as isize,
                        1,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            for (qi, top) in tops.iter_mut().enumerate() {
                let srow = &scores[qi * rb..(qi + 1) * rb];
                // Once the pool is full, a row enters only with a score
                // above the pool's worst (an equal score loses the tie: its
                // slot is higher), so most rows cost one comparison.
                let mut floor = top.worst_score().unwrap_or(f32::NEG_INFINITY);
                for (j, &dp) in srow.iter().enumerate() {
                    let r = start + j;
                    let sc = if l2 {
                        2.0 * dp - qn2[qi] - norms2[r]
                    } else {
                        dp
                    };
                    if sc <= floor || mask.is_some_and(|mk| !mk[r]) {
                        continue;
                    }
                    top.push(sc, r as u32);
                    floor = top.worst_score().unwrap_or(f32::NEG_INFINITY);
                }
            }
        }
        tops
    }

    pub(crate) fn write_to(&self, dir: &Path) -> Result<()> {
        let meta = FlatMeta {
            config: self.cfg.clone(),
            rows: self.records.capacity(),
        };
        persist::write_json(&dir.join("flat.json"), &meta)?;
        persist::write_json(&dir.join("records.json"), &self.records.slots())?;
        let bytes = match &self.vectors {
            Vectors::F32(v) => persist::f32s_to_bytes(v),
            Vectors::F16(v) => persist::f16s_to_bytes(v),
        };
        persist::write_file(&dir.join("vectors.bin"), &bytes)
    }

    /// Reads a saved index, checking everything against everything else:
    /// the dimension, one record per row, unique non-empty ids, the exact
    /// byte length of the rows (computed without overflow) and finite
    /// values. Anything else is [`crate::RetrievalError::Corrupt`].
    pub(crate) fn read_from(dir: &persist::View<'_>) -> Result<Self> {
        let mpath = dir.path("flat.json");
        let meta: FlatMeta = dir.read_json("flat.json")?;
        check_dim(meta.config.dim).map_err(|e| corrupt(&mpath, e))?;
        let rpath = dir.path("records.json");
        let slots: Vec<Option<Record>> = dir.read_json("records.json")?;
        if slots.len() != meta.rows || slots.iter().any(|s| s.is_none()) {
            return Err(corrupt(&rpath, "record count does not match the vectors"));
        }
        let records = Records::from_slots(slots).map_err(|e| corrupt(&rpath, e))?;
        let vpath = dir.path("vectors.bin");
        let expected = meta
            .rows
            .checked_mul(meta.config.dim)
            .ok_or_else(|| corrupt(&vpath, "size overflow"))?;
        let bytes = dir.read("vectors.bin")?;
        let vectors = match meta.config.storage {
            Storage::F32 => Vectors::F32(persist::bytes_to_f32s(&vpath, &bytes, expected)?),
            Storage::F16 => Vectors::F16(persist::bytes_to_f16s(&vpath, &bytes, expected)?),
        };
        Ok(FlatIndex {
            cfg: meta.config,
            vectors,
            records,
            namespace: DEFAULT_NAMESPACE.to_string(),
        })
    }

    /// Loads an index saved with [`VectorIndex::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let _span = tracing::info_span!("index.load", kind = "flat").entered();
        let gen = persist::open_verified(dir)?;
        if gen.kind() != "flat" {
            return Err(corrupt(
                dir,
                format!("holds a {:?} index, not a flat one", gen.kind()),
            ));
        }
        let idx = Self::read_from(&gen.root())?;
        record_op(&idx.namespace, "load", 1);
        record_size(&idx.namespace, idx.len());
        Ok(idx)
    }
}

#[derive(Serialize, Deserialize)]
struct FlatMeta {
    config: FlatConfig,
    rows: usize,
}

impl VectorIndex for FlatIndex {
    fn dim(&self) -> usize {
        self.cfg.dim
    }

    fn metric(&self) -> Metric {
        self.cfg.metric
    }

    fn len(&self) -> usize {
        self.records.live()
    }

    fn upsert(&mut self, entries: Vec<Entry>) -> Result<()> {
        let _span =
            tracing::info_span!("index.add", namespace = %self.namespace, n = entries.len())
                .entered();
        let prepared = prepare_entries(entries, self.cfg.dim, self.cfg.metric)?;
        let n = prepared.len() as u64;
        for (rec, v) in prepared {
            match self.records.slot_of(&rec.id) {
                Some(slot) => {
                    self.set_row(slot as usize, &v);
                    self.records.replace(slot, rec);
                }
                None => {
                    self.push_row(&v);
                    self.records.push(rec);
                }
            }
        }
        record_op(&self.namespace, "add", n);
        record_size(&self.namespace, self.len());
        Ok(())
    }

    fn delete(&mut self, ids: &[&str]) -> usize {
        let mut removed = 0;
        for id in ids {
            if let Some(slot) = self.records.slot_of(id) {
                self.remove_slot(slot);
                removed += 1;
            }
        }
        record_op(&self.namespace, "delete", removed as u64);
        record_size(&self.namespace, self.len());
        removed
    }

    fn delete_ref_doc(&mut self, ref_doc_id: &str) -> usize {
        let ids = self.records.ids_of_ref(ref_doc_id);
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.delete(&refs)
    }

    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&MetadataFilters>,
    ) -> Result<Vec<Hit>> {
        let _span = tracing::debug_span!("index.search", namespace = %self.namespace, k).entered();
        check_filter(filter)?;
        let q = prepare_query(query, self.cfg.dim, self.cfg.metric)?;
        record_op(&self.namespace, "search", 1);
        // Capped: the top-k heap is allocated for k, and no more than
        // `len` entries can be returned anyway.
        let k = k.min(self.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        Ok(self.to_hits(self.search_prepared(&q, k, filter)))
    }

    fn search_batch(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        filter: Option<&MetadataFilters>,
    ) -> Result<Vec<Vec<Hit>>> {
        let _span = tracing::debug_span!("index.search", namespace = %self.namespace, k, queries = queries.len())
            .entered();
        check_filter(filter)?;
        let qs = queries
            .iter()
            .map(|q| prepare_query(q, self.cfg.dim, self.cfg.metric))
            .collect::<Result<Vec<_>>>()?;
        record_op(&self.namespace, "search", qs.len() as u64);
        let k = k.min(self.len());
        if k == 0 {
            return Ok(vec![Vec::new(); qs.len()]);
        }
        if qs.len() < 2 * QUERY_BLOCK {
            return Ok(qs
                .iter()
                .map(|q| self.to_hits(self.search_prepared(q, k, filter)))
                .collect());
        }
        let product = if bf16_gemm::available() {
            Product::Bf16
        } else {
            Product::F32
        };
        let tops = self.search_gemm(&qs, k, filter, product);
        Ok(tops.into_par_iter().map(|t| self.to_hits(t)).collect())
    }

    fn ids_matching(&self, filter: Option<&MetadataFilters>) -> Result<Vec<String>> {
        check_filter(filter)?;
        Ok(self.records.ids_matching(filter))
    }

    fn get(&self, id: &str) -> Option<&Record> {
        self.records.by_id(id)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        let _span = tracing::info_span!("index.save", namespace = %self.namespace).entered();
        persist::save_atomic(dir, "flat", |tmp| self.write_to(tmp))?;
        record_op(&self.namespace, "save", 1);
        Ok(())
    }

    fn namespace(&self) -> &str {
        &self.namespace
    }

    fn set_namespace(&mut self, namespace: &str) {
        self.namespace = namespace.to_string();
        record_size(&self.namespace, self.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 pass, the emulated bf16 pass and, where the CPU has it, the
    /// AVX-512 BF16 pass all return
    /// exactly the single-query answer, near-ties included: the first 40
    /// rows are one vector, a tie no rounding bound can break, so queries
    /// near it must fall back instead of guessing.
    #[test]
    fn both_product_passes_return_the_exact_top_k() {
        let dim = 40;
        let mut next = crate::testutil::uniform(11);
        let dup: Vec<f32> = (0..dim).map(|_| next()).collect();
        let mut entries: Vec<Entry> = (0..40)
            .map(|i| Entry::new(format!("d{i}"), dup.clone()))
            .collect();
        entries.extend(
            (0..1500).map(|i| Entry::new(format!("r{i}"), (0..dim).map(|_| next()).collect())),
        );
        let mut qs: Vec<Vec<f32>> = (0..30)
            .map(|_| (0..dim).map(|_| next()).collect())
            .collect();
        qs.extend((0..10).map(|i| {
            dup.iter()
                .map(|x| x + 0.01 * i as f32)
                .collect::<Vec<f32>>()
        }));
        for metric in [Metric::Cosine, Metric::L2] {
            let mut idx = FlatIndex::new(FlatConfig::new(dim, metric)).unwrap();
            idx.upsert(entries.clone()).unwrap();
            let qs: Vec<Vec<f32>> = qs
                .iter()
                .map(|q| prepare_query(q, dim, metric).unwrap())
                .collect();
            let want: Vec<_> = qs
                .iter()
                .map(|q| idx.search_prepared(q, 10, None).into_sorted())
                .collect();
            let mut passes = vec![Product::F32, Product::Bf16Emulated];
            if bf16_gemm::available() {
                passes.push(Product::Bf16);
            } else {
                eprintln!(
                    "SKIPPED the AVX-512 BF16 pass of both_product_passes_return_the_exact_top_k: \
                     not on this CPU (the emulated bf16 pass ran)"
                );
            }
            for product in passes {
                let got: Vec<_> = idx
                    .search_gemm(&qs, 10, None, product)
                    .into_iter()
                    .map(TopK::into_sorted)
                    .collect();
                assert_eq!(got, want, "{metric:?}, {product:?}");
            }
        }
    }
}
