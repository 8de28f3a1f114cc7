//! Exact (brute-force) search over contiguous vector storage.

use std::ops::Range;
use std::path::{Path, PathBuf};

use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::bf16_gemm;
use crate::distance::{self, Fns, Metric};
use crate::error::{corrupt, io_err, Result, RetrievalError};
use crate::filter::MetadataFilters;
use crate::index::{check_dim, check_filter, prepare_entries, prepare_query, VectorIndex};
use crate::metrics::{record_op, record_size, DEFAULT_NAMESPACE};
use crate::persist;
use crate::quantized::{FullRows, Kind, Quantized};
use crate::records::{grow, Records};
use crate::topk::TopK;
use crate::types::{Entry, Hit, Record, RecordRef};

/// Element type of the stored vectors.
///
/// # Examples
///
/// ```
/// use ragjet_retrieval::Storage;
///
/// assert_eq!(Storage::default(), Storage::F32);
/// // Quantised storages rescore more candidates the coarser their codes are.
/// assert!(Storage::Binary.default_rescore() > Storage::Int8.default_rescore());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// 4 bytes per component, exact.
    #[default]
    F32,
    /// 2 bytes per component: half the memory and bandwidth, scores carry
    /// f16 rounding (about 3 significant digits per component).
    F16,
    /// One byte per component (scalar quantisation over per-dimension
    /// ranges trained on the rows) scanned, the best `rescore`·k rows
    /// rescored exactly from f32 rows: exact scores, recall ≤ 1.
    Int8,
    /// One bit per component (above or below the dimension's mean),
    /// scanned by Hamming distance, the best `rescore`·k rows rescored
    /// exactly from f32 rows: exact scores, recall ≤ 1.
    Binary,
}

impl Storage {
    /// Candidates per requested result rescored exactly when
    /// [`FlatConfig::rescore`] is 0: the depths that reached recall@10 ≥
    /// 0.99 (int8, random and clustered data) and ≥ 0.95 (binary, clustered
    /// or embedding data; isotropic noise needs far more) on 384-d sets, see
    /// docs/performance.md, "Quantized storage".
    pub fn default_rescore(self) -> usize {
        match self {
            Storage::F32 | Storage::F16 => 0,
            Storage::Int8 => INT8_RESCORE,
            Storage::Binary => BINARY_RESCORE,
        }
    }
}

/// The compression of a quantized storage kind.
pub(crate) fn kind_of(storage: Storage) -> Kind {
    if storage == Storage::Binary {
        Kind::Binary
    } else {
        Kind::Int8
    }
}

/// A rows directory only means something to the storages that rescore
/// from full rows; elsewhere it would be silently ignored.
pub(crate) fn check_rows_dir(storage: Storage, rows_dir: Option<&Path>) -> Result<()> {
    if rows_dir.is_some() && matches!(storage, Storage::F32 | Storage::F16) {
        return Err(RetrievalError::InvalidOption(
            "rows_dir applies to int8 and binary storage (f32 / f16 rows are the index)".into(),
        ));
    }
    Ok(())
}

/// An I/O error of a rows file, named by its directory (the file itself
/// has no name: it is unlinked).
pub(crate) fn rows_io_err(rows_dir: Option<&Path>, e: std::io::Error) -> RetrievalError {
    RetrievalError::Io {
        path: rows_dir.map(Path::to_path_buf).unwrap_or_default(),
        source: e,
    }
}

/// Where a quantized index keeps its full rows: RAM, or a new file in
/// `rows_dir`.
pub(crate) fn full_rows(rows_dir: Option<&Path>, dim: usize) -> Result<FullRows> {
    match rows_dir {
        None => Ok(FullRows::default()),
        Some(dir) => FullRows::in_file(dir, dim).map_err(io_err(dir)),
    }
}

/// Rows rescored exactly for `k` results: `rescore` per result, 0 meaning
/// [`Storage::default_rescore`].
pub(crate) fn rescore_depth(storage: Storage, rescore: usize, k: usize) -> usize {
    let f = if rescore == 0 {
        storage.default_rescore()
    } else {
        rescore
    };
    k.saturating_mul(f.max(1))
}

/// Default int8 rescoring depth, per requested result.
const INT8_RESCORE: usize = 4;
/// Default binary rescoring depth, per requested result.
const BINARY_RESCORE: usize = 64;
/// Saved-format version written by this build; saves without the field
/// are version 1 (f32 or f16 rows only).
const FORMAT_VERSION: u32 = 2;

/// Options of a [`FlatIndex`].
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{Entry, FlatConfig, FlatIndex, Metric, Storage, VectorIndex};
///
/// // Int8 codes are scanned, then the best 8·k rows are rescored exactly.
/// let cfg = FlatConfig::new(4, Metric::Dot).with_storage(Storage::Int8).with_rescore(8);
/// let mut index = FlatIndex::new(cfg)?;
/// let entries: Vec<Entry> = (0..100)
///     .map(|i| {
///         let x = i as f32 / 100.0;
///         Entry::new(format!("e{i}"), vec![x, 1.0 - x, x * x, 0.5])
///     })
///     .collect();
/// index.upsert(entries)?;
/// let hits = index.search(&[1.0, 0.0, 1.0, 0.0], 3, None)?;
/// assert_eq!(hits[0].id, "e99");
/// // Scores are exact even though the scan ran on one byte per component.
/// assert!((hits[0].score - (0.99 + 0.99 * 0.99)).abs() < 1e-5);
/// let (scanned, rescore) = index.vector_bytes();
/// assert!(scanned < rescore);
/// # Ok(()) }
/// ```
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
    /// Int8 and binary storage: rows rescored exactly per requested result
    /// (the approximate pass keeps `rescore · k`); 0 means
    /// [`Storage::default_rescore`]. Ignored by f32 and f16.
    #[serde(default)]
    pub rescore: usize,
    /// Int8 and binary storage: a directory for the full-precision rows.
    /// `None` (the default) keeps them in RAM; with a directory they live
    /// in an unlinked file there, memory-mapped, so the resident memory
    /// is the codes and the records (the rescore reads its rows through
    /// the page cache). Saved with the config: a loaded index maps its
    /// rows in the same directory, which must then exist. f32 and f16
    /// storage refuse it (`InvalidOption`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_dir: Option<PathBuf>,
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
            rescore: 0,
            rows_dir: None,
        }
    }

    /// Sets the storage type.
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Keeps the full-precision rows of int8 / binary storage in a mapped
    /// file in `dir` (see [`FlatConfig::rows_dir`]).
    pub fn with_rows_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.rows_dir = Some(dir.into());
        self
    }

    /// Where a quantized index keeps its full rows (RAM or a file in
    /// [`FlatConfig::rows_dir`]).
    fn full_rows(&self) -> Result<FullRows> {
        full_rows(self.rows_dir.as_deref(), self.dim)
    }

    /// Sets the rescoring depth per requested result (int8 and binary).
    pub fn with_rescore(mut self, rescore: usize) -> Self {
        self.rescore = rescore;
        self
    }

    fn rescore_depth(&self, k: usize) -> usize {
        rescore_depth(self.storage, self.rescore, k)
    }
}

#[derive(Debug, Clone)]
enum Vectors {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Quantized(Box<Quantized>),
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
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{Entry, FlatConfig, FlatIndex, Metric, VectorIndex};
///
/// let mut index = FlatIndex::new(FlatConfig::new(3, Metric::Cosine))?;
/// index.upsert(vec![
///     Entry::new("north", vec![0.0, 1.0, 0.0]).with_text("up"),
///     Entry::new("east", vec![1.0, 0.0, 0.0]).with_text("right"),
///     Entry::new("north-east", vec![1.0, 1.0, 0.0]).with_text("diagonal"),
/// ])?;
/// let hits = index.search(&[0.1, 1.0, 0.0], 2, None)?;
/// assert_eq!(hits[0].id, "north");
/// assert_eq!(hits[1].id, "north-east");
/// // Cosine vectors are stored normalised.
/// let v = index.vector("north-east").unwrap();
/// assert!((v[0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
/// // Several queries at once take the blocked path; results match one-by-one search.
/// let batch = index.search_batch(&[vec![1.0, 0.0, 0.0], vec![0.0, 1.0, 0.0]], 1, None)?;
/// assert_eq!((batch[0][0].id.as_str(), batch[1][0].id.as_str()), ("east", "north"));
/// // Upserting an existing id replaces it; deleting is by id or by source document.
/// index.upsert(vec![Entry::new("east", vec![0.0, 0.0, 1.0])])?;
/// assert_eq!(index.search(&[0.0, 0.0, 1.0], 1, None)?[0].id, "east");
/// assert_eq!(index.delete(&["north", "nowhere"]), 1);
/// assert_eq!(index.len(), 2);
/// assert_eq!(index.vector_bytes(), (2 * 3 * 4, 0)); // f32 rows, nothing kept for rescoring
///
/// let dir = tempfile::tempdir()?;
/// index.save(dir.path())?;
/// assert_eq!(FlatIndex::load(dir.path())?.len(), 2);
/// # Ok(()) }
/// ```
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
        check_rows_dir(cfg.storage, cfg.rows_dir.as_deref())?;
        let vectors = match cfg.storage {
            Storage::F32 => Vectors::F32(Vec::new()),
            Storage::F16 => Vectors::F16(Vec::new()),
            Storage::Int8 | Storage::Binary => Vectors::Quantized(Box::new(Quantized::new(
                kind_of(cfg.storage),
                cfg.dim,
                cfg.metric,
                cfg.full_rows()?,
            ))),
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

    /// Bytes of vector data held in memory, split as (scanned, rescore):
    /// the rows a search scans (f32, f16, or the int8 / binary codes with
    /// their parameters) and the full-precision rows kept for the exact
    /// rescore (0 for f32 and f16, which rescore nothing). The rescore rows
    /// are in RAM today; the split is what a file-backed store would save.
    pub fn vector_bytes(&self) -> (usize, usize) {
        match &self.vectors {
            Vectors::F32(v) => (4 * v.len(), 0),
            Vectors::F16(v) => (2 * v.len(), 0),
            Vectors::Quantized(q) => (q.code_bytes(), 4 * q.full().as_slice().len()),
        }
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
            Vectors::Quantized(q) => q.row(slot).to_vec(),
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
            Vectors::Quantized(q) => q.set(slot, v),
        }
    }

    /// Appends a row; fails only when a rows file cannot grow, which the
    /// batch's reserve rules out.
    fn push_row(&mut self, v: &[f32]) -> Result<()> {
        match &mut self.vectors {
            Vectors::F32(s) => s.extend_from_slice(v),
            Vectors::F16(s) => s.extend(distance::narrow_f16(v)),
            Vectors::Quantized(q) => q
                .push(v)
                .map_err(|e| rows_io_err(self.cfg.rows_dir.as_deref(), e))?,
        }
        Ok(())
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
            Vectors::Quantized(q) => q.swap_remove(s),
        }
        self.records.swap_remove(slot);
    }

    #[inline]
    fn passes(&self, row: usize, filter: Option<&MetadataFilters>) -> bool {
        match filter {
            None => true,
            Some(f) => self.records.metadata(row).is_some_and(|m| f.matches(&m)),
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
            (Vectors::Quantized(v), Metric::L2) => -(f.l2)(q, v.row(r)),
            (Vectors::Quantized(v), _) => (f.dot)(q, v.row(r)),
        }
    }

    fn search_prepared(&self, q: &[f32], k: usize, filter: Option<&MetadataFilters>) -> TopK {
        if let Vectors::Quantized(codes) = &self.vectors {
            return self.search_quantized(codes, q, k, filter, true);
        }
        self.split_rows(k, |rows| self.scan(q, rows, k, filter))
    }

    /// Runs `scan` over all rows, split across rayon threads for large
    /// indexes, and merges the partial top-`keep` lists.
    fn split_rows(&self, keep: usize, scan: impl Fn(Range<usize>) -> TopK + Sync) -> TopK {
        let n = self.records.capacity();
        let threads = rayon::current_num_threads();
        if n < self.cfg.parallel_rows.max(1) || threads < 2 {
            return scan(0..n);
        }
        let chunk = n.div_ceil(threads * 4).max(1024);
        let starts: Vec<usize> = (0..n).step_by(chunk).collect();
        starts
            .into_par_iter()
            .map(|s| scan(s..(s + chunk).min(n)))
            .reduce(|| TopK::new(keep), TopK::merge)
    }

    /// Int8 / binary: the approximate scan keeps `rescore · k` candidates,
    /// then each is rescored with [`Self::exact_score`] (the f32 rows), so
    /// the scores are the f32 index's; only recall depends on the codes.
    /// `split`: the rows are split across threads (a single query); a
    /// batch already runs one query per thread, where splitting each
    /// query's rows too would only add merges of `depth`-sized lists.
    fn search_quantized(
        &self,
        codes: &Quantized,
        q: &[f32],
        k: usize,
        filter: Option<&MetadataFilters>,
        split: bool,
    ) -> TopK {
        let depth = self.cfg.rescore_depth(k);
        let scan = |rows| codes.candidates(q, rows, depth, |r| self.passes(r, filter));
        let cand = if split {
            self.split_rows(depth, scan)
        } else {
            scan(0..self.records.capacity())
        };
        let mut top = TopK::new(k);
        for c in cand.into_sorted() {
            top.push(self.exact_score(q, c.slot as usize), c.slot);
        }
        top
    }

    fn to_hits(&self, top: TopK) -> Vec<Hit> {
        top.into_sorted()
            .into_iter()
            .filter_map(|c| {
                self.records.id(c.slot as usize).map(|id| Hit {
                    id: id.to_string(),
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
                Vectors::Quantized(q) => (f.dot)(q.row(r), q.row(r)),
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
            Vectors::F32(_) | Vectors::Quantized(_) => Vec::new(),
        };
        for start in (0..n).step_by(GEMM_ROW_BLOCK) {
            let rb = GEMM_ROW_BLOCK.min(n - start);
            let rows: &[f32] = match &self.vectors {
                Vectors::F32(v) => &v[start * d..(start + rb) * d],
                Vectors::F16(v) => {
                    distance::widen_f16(&v[start * d..(start + rb) * d], &mut wide[..rb * d]);
                    &wide[..rb * d]
                }
                Vectors::Quantized(q) => &q.full().as_slice()[start * d..(start + rb) * d],
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
            format: FORMAT_VERSION,
            config: self.cfg.clone(),
            rows: self.records.capacity(),
        };
        persist::write_json(&dir.join("flat.json"), &meta)?;
        persist::write_json(&dir.join("records.json"), &self.records.slots())?;
        let bytes = match &self.vectors {
            Vectors::F32(v) => persist::f32s_to_bytes(v),
            Vectors::F16(v) => persist::f16s_to_bytes(v),
            // The full rows are saved; the codes are retrained on load.
            Vectors::Quantized(q) => persist::f32s_to_bytes(q.full().as_slice()),
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
        if meta.format > FORMAT_VERSION {
            return Err(corrupt(
                &mpath,
                format!(
                    "format version {} is newer than this build reads ({FORMAT_VERSION})",
                    meta.format
                ),
            ));
        }
        check_dim(meta.config.dim).map_err(|e| corrupt(&mpath, e))?;
        check_rows_dir(meta.config.storage, meta.config.rows_dir.as_deref())
            .map_err(|e| corrupt(&mpath, e))?;
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
            Storage::Int8 | Storage::Binary => {
                let rows = persist::bytes_to_f32s(&vpath, &bytes, expected)?;
                drop(bytes);
                let full = meta.config.full_rows()?;
                let c = &meta.config;
                let q = Quantized::from_rows(kind_of(c.storage), c.dim, c.metric, rows, full)
                    .map_err(|e| rows_io_err(c.rows_dir.as_deref(), e))?;
                Vectors::Quantized(Box::new(q))
            }
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
    /// [`FORMAT_VERSION`] at save time; absent (1) in saves of earlier
    /// versions, which hold only f32 or f16 rows.
    #[serde(default = "format_v1")]
    format: u32,
    config: FlatConfig,
    rows: usize,
}

fn format_v1() -> u32 {
    1
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
        self.records.reserve(prepared.len());
        match &mut self.vectors {
            Vectors::F32(s) => grow(s, prepared.len() * self.cfg.dim),
            Vectors::F16(s) => grow(s, prepared.len() * self.cfg.dim),
            Vectors::Quantized(q) => {
                // A rows file that cannot grow fails the batch here,
                // before anything changed.
                q.reserve(prepared.len())
                    .map_err(|e| rows_io_err(self.cfg.rows_dir.as_deref(), e))?;
            }
        }
        for (rec, v) in prepared {
            match self.records.slot_of(&rec.id) {
                Some(slot) => {
                    self.set_row(slot as usize, &v);
                    self.records.replace(slot, rec);
                }
                None => {
                    self.push_row(&v)?;
                    self.records.push(rec);
                }
            }
        }
        if let Vectors::Quantized(q) = &mut self.vectors {
            q.maybe_retrain();
            q.release();
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
        if let Vectors::Quantized(codes) = &self.vectors {
            // Compressed storage scans its codes per query, in parallel over
            // the queries: the matrix-product path reads f32 rows.
            let split = qs.len() < 2 * rayon::current_num_threads();
            return Ok(qs
                .par_iter()
                .map(|q| self.to_hits(self.search_quantized(codes, q, k, filter, split)))
                .collect());
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

    fn get(&self, id: &str) -> Option<RecordRef<'_>> {
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
