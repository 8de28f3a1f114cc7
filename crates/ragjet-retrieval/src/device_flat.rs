//! Exact search with the vectors resident on a candle device: an NVIDIA GPU
//! with the `cuda` feature, or the CPU (which is how it is tested).
//!
//! A query batch is scored by blocked matrix products and its top-k is
//! found on the device, so only `queries × pool` candidates travel back,
//! never the `queries × rows` score matrix. The on-device top-k sorts
//! segments of at most [`SEGMENT`] columns (candle's CUDA arg-sort sorts one
//! row per thread block, in shared memory, with at most 1024 threads), keeps
//! the best `pool` of each segment, and repeats on the survivors until one
//! segment remains. The pool's candidates are then rescored exactly in f32
//! from the stored rows on the device, and ordered on the host by
//! (score, row) — the same order [`crate::FlatIndex`] uses — so results do
//! not depend on the GPU sort's handling of ties.
//!
//! The device is the caller's: this crate does not probe for a GPU. The
//! `ragjet` facade chooses it with `ragjet-inference`'s driver probe (one
//! probe for the whole library; cudarc panics if asked for a GPU without a
//! driver) and passes the opened device in. This makes candle's `Device`
//! ([`CandleDevice`]) part of this module's API, under the `device` /
//! `cuda` features only; it is re-exported here so callers use the same
//! candle version.

use std::collections::HashSet;

use candle_core::{DType, Device, Tensor};

/// The candle device type [`DeviceFlatIndex`] takes (a re-export of
/// `candle_core::Device`): `CandleDevice::Cpu`, or a CUDA device the caller
/// opened after checking that a driver is present.
pub use candle_core::Device as CandleDevice;

use crate::distance::Metric;
use crate::error::{Result, RetrievalError};
use crate::flat::{FlatIndex, Storage};
use crate::index::{check_dim, VectorIndex};
use crate::metrics::{record_op, DEFAULT_NAMESPACE};
use crate::types::Hit;

/// Columns per on-device sort (one CUDA thread block sorts one segment).
pub const SEGMENT: usize = 1024;
/// Largest `k` a [`DeviceFlatIndex`] search accepts: the candidate pool
/// (`2k + 16`, capped at half a segment) must hold at least `k` rows.
pub const MAX_K: usize = SEGMENT / 4;
/// Rows per matrix product; a multiple of [`SEGMENT`].
const ROW_BLOCK: usize = 64 * SEGMENT;
/// Score elements of one (queries × rows) tile: bounds device memory per
/// step (about 256 MiB of f32 scores, plus the sort's indices).
const TILE_ELEMS: usize = 64 << 20;
/// Candidates kept per query beyond `2k` before the exact rescore: the
/// coarse product (f16, or f32 in another summation order) may rank
/// near-ties differently from the exact score.
const POOL_EXTRA: usize = 16;

/// Exact top-k search over rows held on a candle device in f32 or f16.
///
/// Built from a [`FlatIndex`] ([`DeviceFlatIndex::from_flat`]) or from raw
/// rows ([`DeviceFlatIndex::from_rows`]); read-only once built (rebuild it
/// after the source index changes). Scores are those of
/// [`crate::FlatIndex`] for the same metric: dot product of normalised
/// vectors for cosine, raw dot product, or `-‖q − r‖²` for L2, computed in
/// f32 from the stored (f32 or f16) rows.
///
/// # Examples
///
/// On the CPU here; with the `cuda` feature the same code takes a CUDA device
/// the caller opened after checking for a driver.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{CandleDevice, DeviceFlatIndex, Entry, FlatConfig, FlatIndex, Metric, Storage, VectorIndex};
///
/// let mut flat = FlatIndex::new(FlatConfig::new(3, Metric::Cosine))?;
/// flat.upsert(vec![
///     Entry::new("x", vec![1.0, 0.0, 0.0]),
///     Entry::new("y", vec![0.0, 1.0, 0.0]),
///     Entry::new("xy", vec![1.0, 1.0, 0.0]),
/// ])?;
/// let device = DeviceFlatIndex::from_flat(&flat, Storage::F32, &CandleDevice::Cpu)?;
/// assert_eq!((device.len(), device.dim()), (3, 3));
/// // Two queries, row-major, in one call; the same hits as the host index.
/// let hits = device.search_batch(&[1.0, 0.1, 0.0, 0.0, 1.0, 0.1], 2)?;
/// assert_eq!(hits[0][0].id, "x");
/// assert_eq!(hits[1][0].id, "y");
/// assert_eq!(hits[0], flat.search(&[1.0, 0.1, 0.0], 2, None)?);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DeviceFlatIndex {
    device: Device,
    metric: Metric,
    storage: Storage,
    dim: usize,
    /// Live rows.
    n: usize,
    /// `n` padded up to a multiple of [`SEGMENT`] with zero rows.
    rows: Tensor,
    /// `(1, n_pad)` in the rows' dtype, added to every coarse score tile:
    /// `-inf` on padding rows, `-‖r‖²` for L2, 0 otherwise.
    bias: Tensor,
    ids: Vec<String>,
    namespace: String,
    /// [`ROW_BLOCK`] and [`TILE_ELEMS`]; tests shrink them to exercise
    /// several row and query blocks on small data.
    row_block: usize,
    tile_elems: usize,
}

fn dev_err(e: candle_core::Error) -> RetrievalError {
    RetrievalError::Unsupported(format!("device search failed: {e}"))
}

impl DeviceFlatIndex {
    /// Copies every live row of `index` (as stored: normalised for cosine,
    /// widened from f16) to `device`, held as `storage`.
    pub fn from_flat(index: &FlatIndex, storage: Storage, device: &CandleDevice) -> Result<Self> {
        let dim = index.dim();
        let ids = index.ids_matching(None)?;
        let mut rows = Vec::with_capacity(ids.len() * dim);
        for id in &ids {
            let v = index.vector(id).ok_or_else(|| {
                RetrievalError::InvalidId(format!("id {id:?} vanished while copying"))
            })?;
            rows.extend_from_slice(&v);
        }
        let mut out = Self::build(ids, rows, dim, index.metric(), storage, device)?;
        out.namespace = index.namespace().to_string();
        Ok(out)
    }

    /// Builds from `ids.len()` row-major rows of `dim` components. Rows are
    /// validated and prepared as [`FlatIndex`] does (finite, normalised for
    /// cosine; a zero vector is refused for cosine).
    pub fn from_rows(
        ids: Vec<String>,
        rows: &[f32],
        dim: usize,
        metric: Metric,
        storage: Storage,
        device: &CandleDevice,
    ) -> Result<Self> {
        check_dim(dim)?;
        if Some(rows.len()) != ids.len().checked_mul(dim) {
            return Err(if !rows.len().is_multiple_of(dim) {
                RetrievalError::DimensionMismatch {
                    expected: dim,
                    got: rows.len() % dim,
                }
            } else {
                RetrievalError::InvalidOption(format!(
                    "{} ids for {} rows",
                    ids.len(),
                    rows.len() / dim
                ))
            });
        }
        let mut seen = HashSet::with_capacity(ids.len());
        for id in &ids {
            if id.is_empty() {
                return Err(RetrievalError::InvalidId("empty id".into()));
            }
            if !seen.insert(id.as_str()) {
                return Err(RetrievalError::InvalidId(format!(
                    "id {id:?} appears twice"
                )));
            }
        }
        let mut prepared = rows.to_vec();
        for row in prepared.chunks_exact_mut(dim) {
            metric.prepare(row, dim)?;
        }
        Self::build(ids, prepared, dim, metric, storage, device)
    }

    /// `rows` are already prepared.
    fn build(
        ids: Vec<String>,
        mut rows: Vec<f32>,
        dim: usize,
        metric: Metric,
        storage: Storage,
        device: &CandleDevice,
    ) -> Result<Self> {
        check_dim(dim)?;
        let n = ids.len();
        if n == 0 {
            return Err(RetrievalError::InvalidOption(
                "a DeviceFlatIndex needs at least one row".into(),
            ));
        }
        if n > u32::MAX as usize {
            return Err(RetrievalError::InvalidOption(format!(
                "{n} rows: at most {} fit a DeviceFlatIndex",
                u32::MAX
            )));
        }
        let device = device.clone();
        let n_pad = n.div_ceil(SEGMENT) * SEGMENT;
        let mut bias: Vec<f32> = match metric {
            Metric::L2 => rows
                .chunks_exact(dim)
                .map(|r| -r.iter().map(|x| x * x).sum::<f32>())
                .collect(),
            _ => vec![0.0; n],
        };
        bias.resize(n_pad, f32::NEG_INFINITY);
        rows.resize(n_pad * dim, 0.0);
        let dtype = dtype_of(storage)?;
        let rows = Tensor::from_vec(rows, (n_pad, dim), &device)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(dev_err)?;
        let bias = Tensor::from_vec(bias, (1, n_pad), &device)
            .and_then(|t| t.to_dtype(dtype))
            .map_err(dev_err)?;
        Ok(DeviceFlatIndex {
            device,
            metric,
            storage,
            dim,
            n,
            rows,
            bias,
            ids,
            namespace: DEFAULT_NAMESPACE.to_string(),
            row_block: ROW_BLOCK,
            tile_elems: TILE_ELEMS,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: an empty index cannot be built.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Similarity metric.
    pub fn metric(&self) -> Metric {
        self.metric
    }

    /// Element type of the rows on the device.
    pub fn storage(&self) -> Storage {
        self.storage
    }

    /// `"cpu"` or `"cuda:N"`.
    pub fn device_name(&self) -> String {
        match self.device.location() {
            candle_core::DeviceLocation::Cpu => "cpu".into(),
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            other => format!("{other:?}").to_lowercase(),
        }
    }

    /// Exact top-`k` for each of the `queries.len() / dim` row-major
    /// queries, best first, ties broken by row order — the results of
    /// [`FlatIndex`]'s batch search on the same rows, up to f32 rounding
    /// (f16 storage: as [`Storage::F16`] would give). `k` is capped at the
    /// number of rows first, as every index does (so `k = usize::MAX` on a
    /// small index is fine); what remains must be at most [`MAX_K`], else
    /// the search is an [`RetrievalError::InvalidOption`]. `k == 0` gives
    /// empty lists.
    pub fn search_batch(&self, queries: &[f32], k: usize) -> Result<Vec<Vec<Hit>>> {
        let _span = tracing::debug_span!("index.search", namespace = %self.namespace, k, device = %self.device_name()).entered();
        if !queries.len().is_multiple_of(self.dim) {
            return Err(RetrievalError::DimensionMismatch {
                expected: self.dim,
                got: queries.len() % self.dim,
            });
        }
        let k = k.min(self.n);
        if k > MAX_K {
            return Err(RetrievalError::InvalidOption(format!(
                "k = {k}: the device index returns at most {MAX_K} hits per query"
            )));
        }
        let mut qs = queries.to_vec();
        for q in qs.chunks_exact_mut(self.dim) {
            self.metric.prepare(q, self.dim)?;
        }
        let nq = qs.len() / self.dim;
        record_op(&self.namespace, "search", nq as u64);
        if nq == 0 {
            return Ok(Vec::new());
        }
        if k == 0 {
            return Ok(vec![Vec::new(); nq]);
        }
        let pool = (2 * k + POOL_EXTRA).min(SEGMENT / 2);
        let row_block = self.row_block.min(self.rows.dims()[0]);
        let qblock = (self.tile_elems / row_block).max(1);
        let mut out = Vec::with_capacity(nq);
        for block in qs.chunks(qblock * self.dim) {
            let (scores, rows) = self.search_block(block, pool, row_block).map_err(dev_err)?;
            for (srow, rrow) in scores.iter().zip(&rows) {
                let mut cand: Vec<(f32, u32)> = srow
                    .iter()
                    .zip(rrow)
                    .filter(|(_, &r)| (r as usize) < self.n)
                    .map(|(&s, &r)| (s, r))
                    .collect();
                cand.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                cand.dedup_by_key(|c| c.1);
                cand.truncate(k);
                out.push(
                    cand.into_iter()
                        .map(|(score, r)| Hit {
                            id: self.ids[r as usize].clone(),
                            score,
                        })
                        .collect(),
                );
            }
        }
        Ok(out)
    }

    /// One block of prepared queries: coarse scores tile by tile, the
    /// on-device top-`pool`, then the exact f32 rescore of that pool.
    /// Returns per query the pool's exact scores and row numbers (padding
    /// rows, numbered `>= n`, may appear when `n < pool`).
    #[allow(clippy::type_complexity)]
    fn search_block(
        &self,
        qs: &[f32],
        pool: usize,
        row_block: usize,
    ) -> candle_core::Result<(Vec<Vec<f32>>, Vec<Vec<u32>>)> {
        let m = qs.len() / self.dim;
        let n_pad = self.rows.dims()[0];
        let q32 = Tensor::from_slice(qs, (m, self.dim), &self.device)?;
        // L2: 2 q·r − ‖r‖² ranks like −‖q − r‖² (‖q‖² is the same for all rows).
        let qc = match self.metric {
            Metric::L2 => q32.affine(2.0, 0.0)?,
            _ => q32.clone(),
        }
        .to_dtype(self.rows.dtype())?;
        let mut cand_s = Vec::new();
        let mut cand_i = Vec::new();
        for start in (0..n_pad).step_by(row_block) {
            let len = row_block.min(n_pad - start);
            let rows = self.rows.narrow(0, start, len)?;
            let tile = qc
                .matmul(&rows.t()?)?
                .broadcast_add(&self.bias.narrow(1, start, len)?)?;
            let (s, i) = segment_topk(tile, None, start as u32, pool)?;
            cand_s.push(s);
            cand_i.push(i);
        }
        // Every row block's survivors compete once more.
        let (_, i) = segment_topk(
            Tensor::cat(&cand_s, 1)?,
            Some(Tensor::cat(&cand_i, 1)?),
            0,
            pool,
        )?;
        let p = i.dims()[1];
        // Exact rescore in f32 of the candidates' stored rows.
        let cand = self
            .rows
            .index_select(&i.flatten_all()?, 0)?
            .to_dtype(DType::F32)?
            .reshape((m, p, self.dim))?;
        let exact = match self.metric {
            Metric::L2 => cand
                .broadcast_sub(&q32.unsqueeze(1)?)?
                .sqr()?
                .sum(2)?
                .neg()?,
            _ => cand.matmul(&q32.unsqueeze(2)?)?.squeeze(2)?,
        };
        Ok((exact.to_vec2::<f32>()?, i.to_vec2::<u32>()?))
    }
}

fn dtype_of(storage: Storage) -> Result<DType> {
    match storage {
        Storage::F32 => Ok(DType::F32),
        Storage::F16 => Ok(DType::F16),
        Storage::Int8 | Storage::Binary => Err(RetrievalError::Unsupported(format!(
            "{storage:?} storage on a device (f32 or f16 only)"
        ))),
    }
}

/// Keeps the best `pool` columns of each row of `scores` (`m × c`), on the
/// device: sorts segments of at most [`SEGMENT`] columns, keeps each
/// segment's best `pool`, and repeats until one segment is left. `idx`
/// (`m × c`, u32) names each column's row; `None` means column `j` is row
/// `base + j`. Returns the kept scores and rows (`m × min(pool, c)`), in
/// no particular order. Padding columns added here carry row 0 with a
/// score of `-inf`: they survive only where a segment has fewer than `pool`
/// real columns, and the exact rescore then sees a real row (a duplicate
/// that the caller drops).
fn segment_topk(
    mut scores: Tensor,
    mut idx: Option<Tensor>,
    base: u32,
    pool: usize,
) -> candle_core::Result<(Tensor, Tensor)> {
    let dev = scores.device().clone();
    loop {
        let (m, c) = scores.dims2()?;
        if c <= pool {
            let i = match idx {
                Some(i) => i,
                None => Tensor::arange(base, base + c as u32, &dev)?
                    .unsqueeze(0)?
                    .repeat((m, 1))?,
            };
            return Ok((scores, i));
        }
        let seg = c.min(SEGMENT);
        if !c.is_multiple_of(seg) {
            let pad = seg - c % seg;
            let fill = Tensor::full(f32::NEG_INFINITY, (m, pad), &dev)?.to_dtype(scores.dtype())?;
            scores = Tensor::cat(&[&scores, &fill], 1)?;
            if let Some(i) = idx {
                idx = Some(Tensor::cat(
                    &[&i, &Tensor::zeros((m, pad), DType::U32, &dev)?],
                    1,
                )?);
            }
        }
        let c = scores.dims()[1];
        let nseg = c / seg;
        let keep = pool.min(seg);
        let flat = scores.reshape((m * nseg, seg))?;
        let order = flat
            .arg_sort_last_dim(false)?
            .narrow(1, 0, keep)?
            .contiguous()?;
        let top_s = flat.gather(&order, 1)?;
        let top_i = match &idx {
            Some(i) => i.reshape((m * nseg, seg))?.gather(&order, 1)?,
            None => {
                let offsets: Vec<u32> = (0..nseg).map(|s| base + (s * seg) as u32).collect();
                let offsets = Tensor::from_vec(offsets, (1, nseg, 1), &dev)?;
                order.reshape((m, nseg, keep))?.broadcast_add(&offsets)?
            }
        };
        let top_i = top_i.reshape((m, nseg * keep))?;
        scores = top_s.reshape((m, nseg * keep))?;
        if nseg == 1 {
            return Ok((scores, top_i));
        }
        idx = Some(top_i);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flat::FlatConfig;
    use crate::types::Entry;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn random_rows(n: usize, dim: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n * dim)
            .map(|_| rng.random::<f32>() * 2.0 - 1.0)
            .collect()
    }

    fn flat(rows: &[f32], dim: usize, metric: Metric) -> FlatIndex {
        let mut idx = FlatIndex::new(FlatConfig::new(dim, metric)).unwrap();
        let entries = rows
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| Entry::new(format!("r{i}"), v.to_vec()))
            .collect();
        idx.upsert(entries).unwrap();
        idx
    }

    /// Equal ids at every rank, except where the reference's scores at
    /// that rank tie within `tol` (then either order is exact).
    fn assert_same(got: &[Vec<Hit>], want: &[Vec<Hit>], tol: f32) {
        assert_eq!(got.len(), want.len());
        for (qi, (g, w)) in got.iter().zip(want).enumerate() {
            assert_eq!(g.len(), w.len(), "query {qi}");
            for (rank, (a, b)) in g.iter().zip(w).enumerate() {
                assert!(
                    (a.score - b.score).abs() <= tol,
                    "query {qi} rank {rank}: score {} vs {}",
                    a.score,
                    b.score
                );
                if a.id != b.id {
                    let tied = w
                        .iter()
                        .any(|x| x.id == a.id && (x.score - b.score).abs() <= tol);
                    assert!(
                        tied,
                        "query {qi} rank {rank}: {} vs {} ({} vs {})",
                        a.id, b.id, a.score, b.score
                    );
                }
            }
        }
    }

    fn shrink(mut d: DeviceFlatIndex) -> DeviceFlatIndex {
        // Several row blocks and several query blocks on small data.
        d.row_block = 2 * SEGMENT;
        d.tile_elems = 7 * 2 * SEGMENT;
        d
    }

    fn check_metric(metric: Metric) {
        let (n, dim, nq) = (5_000, 24, 40);
        let rows = random_rows(n, dim, 1);
        let queries = random_rows(nq, dim, 2);
        let reference = flat(&rows, dim, metric);
        let qv: Vec<Vec<f32>> = queries.chunks_exact(dim).map(<[f32]>::to_vec).collect();
        let want = reference.search_batch(&qv, 10, None).unwrap();
        let dev = shrink(
            DeviceFlatIndex::from_flat(&reference, Storage::F32, &CandleDevice::Cpu).unwrap(),
        );
        assert_eq!(dev.len(), n);
        let got = dev.search_batch(&queries, 10).unwrap();
        assert_same(&got, &want, 1e-4);
        // The default blocking (one row block, one query block) agrees too.
        let plain =
            DeviceFlatIndex::from_flat(&reference, Storage::F32, &CandleDevice::Cpu).unwrap();
        assert_same(&plain.search_batch(&queries, 10).unwrap(), &want, 1e-4);
    }

    #[test]
    fn cosine_matches_flat_index() {
        check_metric(Metric::Cosine);
    }

    #[test]
    fn dot_matches_flat_index() {
        check_metric(Metric::Dot);
    }

    #[test]
    fn l2_matches_flat_index() {
        check_metric(Metric::L2);
    }

    #[test]
    fn f16_recall_at_10_is_at_least_0_99() {
        let (n, dim, nq) = (6_000, 64, 100);
        let rows = random_rows(n, dim, 3);
        let queries = random_rows(nq, dim, 4);
        let reference = flat(&rows, dim, Metric::Cosine);
        let qv: Vec<Vec<f32>> = queries.chunks_exact(dim).map(<[f32]>::to_vec).collect();
        let want = reference.search_batch(&qv, 10, None).unwrap();
        let dev = shrink(
            DeviceFlatIndex::from_flat(&reference, Storage::F16, &CandleDevice::Cpu).unwrap(),
        );
        assert_eq!(dev.storage(), Storage::F16);
        let got = dev.search_batch(&queries, 10).unwrap();
        let mut found = 0;
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.len(), 10);
            found += g.iter().filter(|h| w.iter().any(|x| x.id == h.id)).count();
            // Best first.
            assert!(g.windows(2).all(|p| p[0].score >= p[1].score));
        }
        let recall = found as f64 / (10 * nq) as f64;
        assert!(recall >= 0.99, "f16 recall@10 = {recall}");
    }

    #[test]
    fn exact_ties_come_in_row_order_like_flat_index() {
        let dim = 8;
        let mut rows = random_rows(50, dim, 5);
        // Rows 10..20 are one and the same vector.
        let same = rows[10 * dim..11 * dim].to_vec();
        for r in 10..20 {
            rows[r * dim..(r + 1) * dim].copy_from_slice(&same);
        }
        let reference = flat(&rows, dim, Metric::Dot);
        let want = reference.search(&same, 12, None).unwrap();
        let dev = DeviceFlatIndex::from_flat(&reference, Storage::F32, &CandleDevice::Cpu).unwrap();
        let got = dev.search_batch(&same, 12).unwrap();
        let ids = |h: &[Hit]| h.iter().map(|x| x.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&got[0][..10]), ids(&want[..10]));
        assert_eq!(
            ids(&got[0][..10]),
            (10..20).map(|r| format!("r{r}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn fewer_rows_than_k_returns_every_row_once() {
        let dim = 4;
        let rows = random_rows(5, dim, 6);
        let ids: Vec<String> = (0..5).map(|i| format!("id{i}")).collect();
        let dev = DeviceFlatIndex::from_rows(
            ids,
            &rows,
            dim,
            Metric::Cosine,
            Storage::F32,
            &CandleDevice::Cpu,
        )
        .unwrap();
        let got = dev.search_batch(&rows[..2 * dim], 10).unwrap();
        assert_eq!(got.len(), 2);
        for (qi, hits) in got.iter().enumerate() {
            let mut seen: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
            assert_eq!(hits[0].id, format!("id{qi}"), "a row is its own best match");
            assert!((hits[0].score - 1.0).abs() < 1e-5);
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 5);
        }
        assert!(dev.search_batch(&rows[..dim], 0).unwrap()[0].is_empty());
        assert!(dev.search_batch(&[], 3).unwrap().is_empty());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let dim = 4;
        let rows = random_rows(3, dim, 7);
        let ids = || (0..3).map(|i| format!("id{i}")).collect::<Vec<_>>();
        let make = |rows: &[f32], ids: Vec<String>| {
            DeviceFlatIndex::from_rows(
                ids,
                rows,
                dim,
                Metric::Cosine,
                Storage::F32,
                &CandleDevice::Cpu,
            )
        };
        let dev = make(&rows, ids()).unwrap();
        assert!(matches!(
            dev.search_batch(&[0.1; 5], 1),
            Err(RetrievalError::DimensionMismatch {
                expected: 4,
                got: 1
            })
        ));
        assert!(matches!(
            dev.search_batch(&[0.1, f32::NAN, 0.3, 0.4], 1),
            Err(RetrievalError::NonFinite { index: 1 })
        ));
        assert!(matches!(
            dev.search_batch(&[0.0; 4], 1),
            Err(RetrievalError::ZeroVector)
        ));
        // Capped at the 3 rows, not refused (see `huge_k_is_capped_or_refused`).
        assert_eq!(
            dev.search_batch(&rows[..dim], MAX_K + 1).unwrap()[0].len(),
            3
        );
        let mut nan_rows = rows.clone();
        nan_rows[5] = f32::INFINITY;
        assert!(matches!(
            make(&nan_rows, ids()),
            Err(RetrievalError::NonFinite { index: 1 })
        ));
        assert!(matches!(
            make(&[], Vec::new()),
            Err(RetrievalError::InvalidOption(_))
        ));
        assert!(matches!(
            make(&rows[..7], ids()),
            Err(RetrievalError::DimensionMismatch { .. })
        ));
        assert!(matches!(
            make(&rows, ids()[..2].to_vec()),
            Err(RetrievalError::InvalidOption(_))
        ));
        let dup = vec!["a".to_string(), "b".into(), "a".into()];
        assert!(matches!(
            make(&rows, dup),
            Err(RetrievalError::InvalidId(_))
        ));
        let empty = FlatIndex::new(FlatConfig::new(dim, Metric::Cosine)).unwrap();
        assert!(matches!(
            DeviceFlatIndex::from_flat(&empty, Storage::F32, &CandleDevice::Cpu),
            Err(RetrievalError::InvalidOption(_))
        ));
    }

    /// `k` is capped at the number of rows before the `MAX_K` limit is
    /// applied: any `k` on an index of at most `MAX_K` rows is fine, and a
    /// larger index refuses a `k` above it with an error, never an abort.
    #[test]
    fn huge_k_is_capped_or_refused() {
        let dim = 4;
        let rows = random_rows(5, dim, 11);
        let ids: Vec<String> = (0..5).map(|i| format!("id{i}")).collect();
        let dev = DeviceFlatIndex::from_rows(
            ids,
            &rows,
            dim,
            Metric::L2,
            Storage::F32,
            &CandleDevice::Cpu,
        )
        .unwrap();
        for k in [usize::MAX, 1 << 40, MAX_K + 1] {
            assert_eq!(dev.search_batch(&rows[..dim], k).unwrap()[0].len(), 5);
        }
        let big = random_rows(MAX_K + 10, dim, 12);
        let ids: Vec<String> = (0..MAX_K + 10).map(|i| format!("b{i}")).collect();
        let dev = DeviceFlatIndex::from_rows(
            ids,
            &big,
            dim,
            Metric::L2,
            Storage::F32,
            &CandleDevice::Cpu,
        )
        .unwrap();
        assert!(matches!(
            dev.search_batch(&big[..dim], usize::MAX),
            Err(RetrievalError::InvalidOption(_))
        ));
        assert_eq!(
            dev.search_batch(&big[..dim], MAX_K).unwrap()[0].len(),
            MAX_K
        );
    }

    /// A CUDA build's tests need GPU 0 (the device comes from the caller,
    /// so this test opens it as the facade would after its driver check):
    /// the GPU path must give the CPU path's results.
    #[cfg(feature = "cuda")]
    #[test]
    fn cuda_matches_the_cpu() {
        let gpu_device = std::panic::catch_unwind(|| CandleDevice::new_cuda(0))
            .map_err(|_| "cudarc panicked: no NVIDIA driver library".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
            .unwrap_or_else(|e| panic!("the `cuda` build's tests need a usable GPU 0: {e}"));
        let (n, dim) = (3_000, 32);
        let rows = random_rows(n, dim, 9);
        let queries = random_rows(20, dim, 10);
        let ids = || (0..n).map(|i| format!("id{i}")).collect::<Vec<_>>();
        let make = |storage, device: &CandleDevice| {
            DeviceFlatIndex::from_rows(ids(), &rows, dim, Metric::Cosine, storage, device)
        };
        let cpu = make(Storage::F32, &CandleDevice::Cpu).unwrap();
        let want = cpu.search_batch(&queries, 10).unwrap();
        let gpu = make(Storage::F32, &gpu_device).unwrap();
        assert_eq!(gpu.device_name(), "cuda:0");
        assert_same(&gpu.search_batch(&queries, 10).unwrap(), &want, 1e-4);
        let half = make(Storage::F16, &gpu_device).unwrap();
        assert_eq!(half.search_batch(&queries, 10).unwrap().len(), 20);
    }
}
