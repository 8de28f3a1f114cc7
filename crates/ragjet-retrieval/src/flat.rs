//! Exact (brute-force) search over contiguous vector storage.

use std::ops::Range;
use std::path::Path;

use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::distance::{self, Metric};
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

/// Queries handled together by the batched path: each row is loaded once
/// and scored against this many queries while it sits in L1.
const QUERY_BLOCK: usize = 8;

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
        let d = self.cfg.dim;
        let metric = self.cfg.metric;
        match &self.vectors {
            Vectors::F32(v) => {
                for r in rows {
                    if self.passes(r, filter) {
                        top.push(metric.score(q, &v[r * d..(r + 1) * d]), r as u32);
                    }
                }
            }
            Vectors::F16(v) => {
                let mut buf = vec![0.0f32; d];
                for r in rows {
                    if self.passes(r, filter) {
                        distance::widen_f16(&v[r * d..(r + 1) * d], &mut buf);
                        top.push(metric.score(q, &buf), r as u32);
                    }
                }
            }
        }
        top
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

    /// One block of queries against every row: the row is widened (f16)
    /// and filtered once, then scored against each query of the block.
    fn scan_block(&self, qs: &[Vec<f32>], k: usize, filter: Option<&MetadataFilters>) -> Vec<TopK> {
        let mut tops: Vec<TopK> = qs.iter().map(|_| TopK::new(k)).collect();
        let d = self.cfg.dim;
        let metric = self.cfg.metric;
        let n = self.records.capacity();
        let mut buf = vec![0.0f32; d];
        for r in 0..n {
            if !self.passes(r, filter) {
                continue;
            }
            let row: &[f32] = match &self.vectors {
                Vectors::F32(v) => &v[r * d..(r + 1) * d],
                Vectors::F16(v) => {
                    distance::widen_f16(&v[r * d..(r + 1) * d], &mut buf);
                    &buf
                }
            };
            for (q, top) in qs.iter().zip(tops.iter_mut()) {
                top.push(metric.score(q, row), r as u32);
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

    pub(crate) fn read_from(dir: &Path) -> Result<Self> {
        let meta: FlatMeta = persist::read_json(&dir.join("flat.json"))?;
        check_dim(meta.config.dim)?;
        let slots: Vec<Option<Record>> = persist::read_json(&dir.join("records.json"))?;
        let rpath = dir.join("records.json");
        if slots.len() != meta.rows || slots.iter().any(|s| s.is_none()) {
            return Err(corrupt(&rpath, "record count does not match the vectors"));
        }
        let records = Records::from_slots(slots).map_err(|e| corrupt(&rpath, e))?;
        let vpath = dir.join("vectors.bin");
        let bytes = persist::read_file(&vpath)?;
        let expected = meta
            .rows
            .checked_mul(meta.config.dim)
            .ok_or_else(|| corrupt(&vpath, "size overflow"))?;
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
        let (gen, manifest) = persist::open_verified(dir)?;
        if manifest.kind != "flat" {
            return Err(corrupt(
                dir,
                format!("holds a {:?} index, not a flat one", manifest.kind),
            ));
        }
        let idx = Self::read_from(&gen)?;
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
        if k == 0 || self.is_empty() {
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
        if k == 0 || self.is_empty() {
            return Ok(vec![Vec::new(); qs.len()]);
        }
        if qs.len() < 2 * QUERY_BLOCK {
            return Ok(qs
                .iter()
                .map(|q| self.to_hits(self.search_prepared(q, k, filter)))
                .collect());
        }
        let tops: Vec<TopK> = qs
            .par_chunks(QUERY_BLOCK)
            .flat_map_iter(|block| self.scan_block(block, k, filter))
            .collect();
        Ok(tops.into_iter().map(|t| self.to_hits(t)).collect())
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
