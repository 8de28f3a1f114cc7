//! Approximate search on an HNSW graph that ragjet builds and searches in
//! one flat layout (`graph.rs`); hnsw_rs only reads old saves
//! (`hnsw_legacy.rs`).

use std::path::{Path, PathBuf};

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::distance::{graph_distance, Metric};
use crate::error::{corrupt, Result, RetrievalError};
use crate::filter::MetadataFilters;
use crate::flat::{check_rows_dir, full_rows, kind_of, rescore_depth, rows_io_err};
use crate::graph::{self, FlatGraph};
use crate::hnsw_dump;
use crate::hnsw_legacy::{self, Legacy};
use crate::index::{check_dim, check_filter, prepare_entries, prepare_query, VectorIndex};
use crate::metrics::{record_op, record_size, DEFAULT_NAMESPACE};
use crate::persist;
use crate::quantized::{CodeBook, WalkQuery};
use crate::records::Records;
use crate::topk::TopK;
use crate::types::{Entry, Hit, Record, RecordRef};
use crate::Storage;

/// Most entries `capacity_hint` pre-allocates per-slot tables for; a
/// larger hint is clamped, since the tables grow anyway.
const CAPACITY_HINT_MAX: usize = 1 << 20;
/// Filters passing at most this many rows are answered by exact search
/// over those rows instead of a graph walk.
const BRUTE_FORCE_MAX_ROWS: usize = 20_000;
/// Saved graph files of the crate's own layout.
const GRAPH_FILE: &str = "graph.bin";
const VECTORS_FILE: &str = "vectors.bin";

/// Options of an [`HnswIndex`].
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{HnswConfig, HnswIndex, Metric, Storage};
///
/// // More links and a wider build list for higher recall, at a slower build.
/// let cfg = HnswConfig { m: 32, ef_construction: 400, ..HnswConfig::new(384, Metric::Cosine) };
/// let mut index = HnswIndex::new(cfg)?;
/// index.set_ef_search(128)?; // trade speed for recall at query time, no rebuild
/// assert_eq!(index.config().ef_search, 128);
/// // Walk on one byte per component; the best 8·k candidates are rescored
/// // exactly from the f32 rows (kept in a mapped file with `with_rows_dir`).
/// let int8 = HnswConfig::new(384, Metric::Cosine).with_storage(Storage::Int8).with_rescore(8);
/// assert!(HnswIndex::new(int8).is_ok());
/// assert!(HnswIndex::new(HnswConfig::new(384, Metric::Cosine).with_storage(Storage::F16)).is_err());
/// // Graph search for raw inner products is unreliable, so it is refused.
/// assert!(HnswIndex::new(HnswConfig::new(384, Metric::Dot)).is_err());
/// assert!(HnswIndex::new(HnswConfig { m: HnswConfig::MAX_M + 1, ..HnswConfig::new(8, Metric::L2) }).is_err());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HnswConfig {
    /// Vector dimension.
    pub dim: usize,
    /// [`Metric::Cosine`] or [`Metric::L2`]. Raw dot product is not
    /// supported: graph search for maximum inner product is unreliable
    /// (and indexes saved in hnsw_rs's format need non-negative distances);
    /// normalise and use cosine.
    pub metric: Metric,
    /// Links per node (`M`), 2..=[`HnswConfig::MAX_M`]. Higher: better recall, more memory,
    /// slower build.
    pub m: usize,
    /// Candidate list size while building (`ef_construction`),
    /// 1..=[`HnswConfig::MAX_EF_CONSTRUCTION`].
    pub ef_construction: usize,
    /// Candidate list size while searching (`ef`), at least 1; raised to
    /// `k` when smaller and capped at the number of entries in the graph
    /// (a larger list could not fill), so any value is safe.
    pub ef_search: usize,
    /// Expected number of entries (an allocation hint for the per-slot
    /// tables, not a limit; pre-allocation stops at 2²⁰ entries; rows and
    /// links grow with the data, so a generous hint costs little).
    pub capacity_hint: usize,
    /// What a search walks the graph on. [`Storage::F32`] (the default):
    /// the rows. [`Storage::Int8`] / [`Storage::Binary`]: compressed codes
    /// of the rows (as [`crate::FlatIndex`]'s), the walk keeping
    /// `max(ef, rescore · k)` candidates that are then rescored exactly from
    /// the f32 rows, so scores are exact and only recall depends on the
    /// codes. The graph itself is always built on the f32 rows.
    /// [`Storage::F16`] is refused (`Unsupported`): it would halve the rows
    /// but round every score, which int8 with a rows directory beats on
    /// both counts.
    #[serde(default)]
    pub storage: Storage,
    /// Int8 and binary storage: candidates rescored exactly per requested
    /// result; 0 means [`Storage::default_rescore`]. Ignored by f32.
    #[serde(default)]
    pub rescore: usize,
    /// Int8 and binary storage: a directory for the f32 rows (the graph's
    /// build and the rescore read them), as
    /// [`crate::FlatConfig::rows_dir`]: they live in an unlinked mapped
    /// file there, so the resident memory is the links, the codes and the
    /// records. f32 storage refuses it (`InvalidOption`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_dir: Option<PathBuf>,
}

impl HnswConfig {
    /// Largest `M`: hnsw_rs stores it in a byte (in its dump and in
    /// `get_max_nb_connection`), so 256 would read back as 0 links from an
    /// old save; new graphs keep the same bound.
    pub const MAX_M: usize = 255;
    /// Largest `ef_construction`: the builder's candidate heaps grow to
    /// this size, so an absurd value (from a caller or a damaged saved
    /// config) would abort the process.
    pub const MAX_EF_CONSTRUCTION: usize = 1 << 16;

    /// M = 16, ef_construction = 200, ef_search = 64.
    pub fn new(dim: usize, metric: Metric) -> Self {
        HnswConfig {
            dim,
            metric,
            m: 16,
            ef_construction: 200,
            ef_search: 64,
            capacity_hint: 10_000,
            storage: Storage::F32,
            rescore: 0,
            rows_dir: None,
        }
    }

    /// Sets the storage the search walks on (see [`HnswConfig::storage`]).
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Keeps the f32 rows of int8 / binary storage in a mapped file in
    /// `dir` (see [`HnswConfig::rows_dir`]).
    pub fn with_rows_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.rows_dir = Some(dir.into());
        self
    }

    /// Sets the rescoring depth per requested result (int8 and binary).
    pub fn with_rescore(mut self, rescore: usize) -> Self {
        self.rescore = rescore;
        self
    }

    fn quantized(&self) -> bool {
        matches!(self.storage, Storage::Int8 | Storage::Binary)
    }

    /// Empty codes for int8 / binary storage, `None` for f32.
    fn new_codes(&self) -> Option<Box<CodeBook>> {
        self.quantized()
            .then(|| Box::new(CodeBook::new(kind_of(self.storage), self.dim, self.metric)))
    }

    /// Codes trained on a graph's rows (a load or a compaction).
    fn trained_codes(&self, graph: &FlatGraph) -> Option<Box<CodeBook>> {
        self.quantized().then(|| {
            let book =
                CodeBook::trained(kind_of(self.storage), self.dim, self.metric, graph.rows());
            graph.release_rows();
            Box::new(book)
        })
    }

    /// With a rows directory, moves `graph`'s rows into a new file there
    /// (a new index, or a load's verified rows); without one they stay in
    /// RAM.
    fn place_rows(&self, graph: &mut FlatGraph) -> Result<()> {
        if let Some(dir) = self.rows_dir.as_deref() {
            let full = full_rows(Some(dir), self.dim)?;
            graph.move_rows(full).map_err(|e| self.rows_err(e))?;
        }
        Ok(())
    }

    fn rows_err(&self, e: std::io::Error) -> RetrievalError {
        rows_io_err(self.rows_dir.as_deref(), e)
    }

    fn validate(&self) -> Result<()> {
        check_dim(self.dim)?;
        if self.metric == Metric::Dot {
            return Err(RetrievalError::Unsupported(
                "HNSW with the raw dot-product metric; normalise vectors and use cosine".into(),
            ));
        }
        if !(2..=Self::MAX_M).contains(&self.m) {
            return Err(RetrievalError::InvalidOption(format!(
                "M must be in 2..={}, got {}",
                Self::MAX_M,
                self.m
            )));
        }
        if self.ef_construction == 0 || self.ef_search == 0 {
            return Err(RetrievalError::InvalidOption(
                "ef values must be at least 1".into(),
            ));
        }
        if self.ef_construction > Self::MAX_EF_CONSTRUCTION {
            return Err(RetrievalError::InvalidOption(format!(
                "ef_construction must be at most {}, got {}",
                Self::MAX_EF_CONSTRUCTION,
                self.ef_construction
            )));
        }
        if self.storage == Storage::F16 {
            return Err(RetrievalError::Unsupported(
                "f16 storage for HNSW; use int8 (exact scores, a quarter of the scanned bytes)"
                    .into(),
            ));
        }
        check_rows_dir(self.storage, self.rows_dir.as_deref())
    }
}

/// Approximate nearest-neighbour index on an HNSW graph.
///
/// Deletes and replaced entries become tombstones: they stay in the graph
/// (so its connectivity is intact) but never reach results.
///
/// The graph is built, extended, searched and saved in one flat layout
/// (see `graph.rs`): an `upsert` links its entries in (in parallel from 64
/// entries), so every entry is in the graph as soon as `upsert` returns.
///
/// Filtered search (and search with tombstones) evaluates the filter once
/// per slot into a mask, cached for the last filter until the next
/// mutation, then picks a strategy by how many rows pass: at most
/// 20,000 — exact search over just those rows (recall 1); otherwise the
/// filter is applied during the graph walk (rejected nodes are walked
/// through but never returned, and the walk goes on until `ef` accepted
/// ones are found), as hnswlib does. [`HnswIndex::compact`] rebuilds the
/// graph from the live entries when tombstones pile up.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{Entry, FlatConfig, FlatIndex, HnswConfig, HnswIndex, Metric, VectorIndex};
///
/// // 500 deterministic pseudo-random 16-d vectors.
/// let mut seed = 42u64;
/// let mut next = move || {
///     seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
///     (seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5
/// };
/// let entries: Vec<Entry> = (0..500)
///     .map(|i| Entry::new(format!("v{i}"), (0..16).map(|_| next()).collect()))
///     .collect();
/// let mut hnsw = HnswIndex::new(HnswConfig::new(16, Metric::Cosine))?;
/// let mut exact = FlatIndex::new(FlatConfig::new(16, Metric::Cosine))?;
/// hnsw.upsert(entries.clone())?;
/// exact.upsert(entries)?;
///
/// // Approximate search finds (nearly) what exact search finds.
/// let query: Vec<f32> = (0..16).map(|_| next()).collect();
/// let truth: Vec<String> = exact.search(&query, 10, None)?.into_iter().map(|h| h.id).collect();
/// let found = hnsw.search_with_ef(&query, 10, 200, None)?;
/// let recall = found.iter().filter(|h| truth.contains(&h.id)).count();
/// assert!(recall >= 9, "recall@10 = {recall}/10");
///
/// // Deletes leave tombstones until `compact` rebuilds the graph.
/// let ids: Vec<String> = (0..100).map(|i| format!("v{i}")).collect();
/// let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
/// assert_eq!(hnsw.delete(&ids), 100);
/// assert_eq!(hnsw.tombstones(), 100);
/// assert_eq!(hnsw.compact(), 100);
/// assert_eq!((hnsw.len(), hnsw.tombstones()), (400, 0));
///
/// let dir = tempfile::tempdir()?;
/// hnsw.save(dir.path())?;
/// let loaded = HnswIndex::load(dir.path())?;
/// assert_eq!(loaded.search(&query, 10, None)?.len(), 10);
/// # Ok(()) }
/// ```
pub struct HnswIndex {
    cfg: HnswConfig,
    /// Boxed: the graph's tables would make `AnyIndex` twice the size of
    /// its flat variant.
    graph: Box<FlatGraph>,
    /// Int8 / binary storage: the codes of the graph's rows, slot order.
    codes: Option<Box<CodeBook>>,
    records: Records,
    namespace: String,
    /// Bumped by every mutation; invalidates `selection_cache`.
    generation: u64,
    selection_cache: Mutex<Option<Arc<Selection>>>,
}

/// A filter's evaluation over every slot (see [`HnswIndex::selection`]).
struct Selection {
    /// [`MetadataFilters::canonical_key`] of the filter (`None`: no filter).
    key: Option<Vec<u8>>,
    generation: u64,
    mask: Vec<bool>,
    passing: usize,
    /// `(slots, their vectors)` when few enough rows pass for brute force;
    /// the vectors are not gathered for int8 / binary storage (the rows
    /// are read where they are, maybe a file, not copied into RAM).
    subset: Option<(Vec<u32>, Vec<f32>)>,
}

impl std::fmt::Debug for HnswIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HnswIndex")
            .field("cfg", &self.cfg)
            .field("live", &self.records.live())
            .field("tombstones", &self.tombstones())
            .finish()
    }
}

impl HnswIndex {
    /// An empty index.
    pub fn new(cfg: HnswConfig) -> Result<Self> {
        cfg.validate()?;
        let mut graph = new_graph(&cfg);
        cfg.place_rows(&mut graph)?;
        Ok(HnswIndex {
            graph,
            codes: cfg.new_codes(),
            cfg,
            records: Records::default(),
            namespace: DEFAULT_NAMESPACE.to_string(),
            generation: 0,
            selection_cache: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HnswConfig {
        &self.cfg
    }

    /// Sets the search-time candidate list size (at least 1; capped at the
    /// number of entries when searching, so a huge value costs no more
    /// than an exhaustive walk).
    pub fn set_ef_search(&mut self, ef: usize) -> Result<()> {
        if ef == 0 {
            return Err(RetrievalError::InvalidOption(
                "ef_search must be at least 1".into(),
            ));
        }
        self.cfg.ef_search = ef;
        Ok(())
    }

    /// The stored (prepared: normalised for cosine) vector of a live
    /// entry, as [`crate::FlatIndex::vector`] gives it (for MMR over
    /// search results).
    pub fn vector(&self, id: &str) -> Option<Vec<f32>> {
        let slot = self.records.slot_of(id)? as usize;
        Some(self.row(slot).to_vec())
    }

    /// Bytes of vector data, split as (walked, rescore) as
    /// [`crate::FlatIndex::vector_bytes`] splits them: the f32 rows (f32
    /// storage) or the codes with their parameters, and the f32 rows kept
    /// for the rescore (0 for f32; in a mapped file with a rows
    /// directory, so not resident). The graph's links are not counted.
    pub fn vector_bytes(&self) -> (usize, usize) {
        let rows = 4 * self.graph.rows().len();
        match &self.codes {
            None => (rows, 0),
            Some(book) => (book.code_bytes(), rows),
        }
    }

    /// Number of deleted or replaced entries still in the graph.
    pub fn tombstones(&self) -> usize {
        self.records.capacity() - self.records.live()
    }

    /// Rebuilds the graph from the live entries, dropping tombstones.
    /// Returns how many tombstones were removed.
    pub fn compact(&mut self) -> usize {
        let _span = tracing::info_span!("index.compact", namespace = %self.namespace).entered();
        let removed = self.tombstones();
        if removed == 0 {
            return 0;
        }
        self.generation += 1;
        // The records move to the new table (no second copy of every id
        // and metadata map at the peak).
        let old = std::mem::take(&mut self.records);
        let mut records = Records::default();
        records.reserve(old.live());
        let mut live: Vec<f32> = Vec::with_capacity(old.live() * self.cfg.dim);
        for (slot, rec) in old.into_live() {
            records.push(rec);
            live.extend_from_slice(self.graph.vector(slot));
        }
        // The old rows' storage (RAM or the rows file) takes the live rows
        // in place: fewer rows, so a file needs no new blocks.
        let mut rows = self.graph.take_rows();
        rows.replace_fewer(live);
        let mut graph = new_graph(&self.cfg);
        graph.insert_rows(rows);
        self.codes = self.cfg.trained_codes(&graph);
        self.graph = graph;
        self.records = records;
        removed
    }

    /// The stored (prepared) vector of a slot.
    fn row(&self, slot: usize) -> &[f32] {
        self.graph.vector(slot as u32)
    }

    /// Search with an explicit `ef` (overrides the configured one). `k` and
    /// `ef` are capped as [`VectorIndex::search`] and
    /// [`HnswConfig::ef_search`] say.
    pub fn search_with_ef(
        &self,
        query: &[f32],
        k: usize,
        ef: usize,
        filter: Option<&MetadataFilters>,
    ) -> Result<Vec<Hit>> {
        let _span =
            tracing::debug_span!("index.search", namespace = %self.namespace, k, ef).entered();
        check_filter(filter)?;
        let q = prepare_query(query, self.cfg.dim, self.cfg.metric)?;
        record_op(&self.namespace, "search", 1);
        // Both size allocations (the top-k heap, the walk's candidate
        // lists), so neither may exceed what the index holds.
        let k = k.min(self.len());
        if k == 0 {
            return Ok(Vec::new());
        }
        // Int8 / binary: the walk keeps the rescore depth's candidates.
        let ef = match &self.codes {
            None => ef,
            Some(_) => ef.max(rescore_depth(self.cfg.storage, self.cfg.rescore, k)),
        };
        let ef = ef.max(k).min(self.records.capacity());
        // An `ef` covering every slot asks for an exhaustive walk: below the
        // brute-force cut-off, the exact scan of the selection path is as
        // cheap and also reaches rows the graph might not connect.
        let exhaustive = ef >= self.records.capacity();
        let found = if filter.is_none() && self.tombstones() == 0 && !exhaustive {
            self.walk(&q, k, ef, None)
        } else {
            let sel = self.selection(filter);
            if sel.passing == 0 {
                return Ok(Vec::new());
            }
            match &sel.subset {
                // Few rows pass: exact search over just those rows (their
                // vectors were gathered when the selection was cached).
                Some((slots, vectors)) => self.brute_force(&q, k, slots, vectors),
                None => {
                    let mask = &sel.mask;
                    self.walk(&q, k, ef, Some(&|s: u32| mask[s as usize]))
                }
            }
        };
        let metric = self.cfg.metric;
        let mut hits: Vec<Hit> = found
            .into_iter()
            .filter_map(|(distance, slot)| {
                self.records.id(slot as usize).map(|id| Hit {
                    id: id.to_string(),
                    score: match metric {
                        Metric::L2 => -distance,
                        _ => 1.0 - distance,
                    },
                })
            })
            .collect();
        hits.truncate(k);
        Ok(hits)
    }

    /// The graph walk: on the f32 rows, or on the codes keeping `ef`
    /// candidates, rescored exactly (the f32 walk's distances) and cut to
    /// `k`.
    fn walk(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<(f32, u32)> {
        let Some(book) = &self.codes else {
            return self.graph.search(q, k, ef, accept);
        };
        let cands = match book.walk_query(q) {
            WalkQuery::Int8(w) => self.graph.search_by(&w, ef, ef, accept),
            WalkQuery::Binary(w) => self.graph.search_by(&w, ef, ef, accept),
        };
        let mut top = TopK::new(k);
        for (_, slot) in cands {
            top.push(-self.graph.exact_distance(q, slot), slot);
        }
        top.into_sorted()
            .into_iter()
            .map(|c| (-c.score, c.slot))
            .collect()
    }

    /// The rows a filter (and the tombstone check) lets through, cached for
    /// the last filter seen until the next mutation: evaluating metadata
    /// for every row costs more than a graph walk, and callers (tenants,
    /// departments) repeat the same filter. A new filter pays one pass.
    fn selection(&self, filter: Option<&MetadataFilters>) -> Arc<Selection> {
        // The canonical encoding, not the JSON form: JSON writes ±inf and
        // NaN as `null`, which would give `x < inf` the mask of `x < NaN`.
        let key = filter.map(MetadataFilters::canonical_key);
        let mut cache = self
            .selection_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.as_ref() {
            if c.key == key && c.generation == self.generation {
                return Arc::clone(c);
            }
        }
        let records = &self.records;
        let mask: Vec<bool> = (0..records.capacity())
            .map(|s| {
                records
                    .metadata(s)
                    .is_some_and(|m| filter.is_none_or(|f| f.matches(&m)))
            })
            .collect();
        let passing = mask.iter().filter(|b| **b).count();
        let gather = self.codes.is_none();
        let subset = (passing > 0 && passing <= BRUTE_FORCE_MAX_ROWS).then(|| {
            let mut slots = Vec::with_capacity(passing);
            let mut vectors = Vec::with_capacity(if gather { passing * self.cfg.dim } else { 0 });
            for (slot, _) in mask.iter().enumerate().filter(|(_, pass)| **pass) {
                slots.push(slot as u32);
                if gather {
                    vectors.extend_from_slice(self.row(slot));
                }
            }
            (slots, vectors)
        });
        let sel = Arc::new(Selection {
            key,
            generation: self.generation,
            mask,
            passing,
            subset,
        });
        *cache = Some(Arc::clone(&sel));
        sel
    }

    /// Exact top-k over gathered rows (or, when none were gathered, the
    /// rows of `slots` where they are), as `(distance, slot)` (same
    /// distance as the graph, so scores match a graph search's).
    fn brute_force(&self, q: &[f32], k: usize, slots: &[u32], vectors: &[f32]) -> Vec<(f32, u32)> {
        let mut top = TopK::new(k);
        if vectors.is_empty() {
            for (i, &slot) in slots.iter().enumerate() {
                top.push(-self.graph.exact_distance(q, slot), i as u32);
            }
        }
        for (i, v) in vectors.chunks_exact(self.cfg.dim).enumerate() {
            top.push(-graph_distance(self.cfg.metric, q, v), i as u32);
        }
        top.into_sorted()
            .into_iter()
            .map(|c| (-c.score, slots[c.slot as usize]))
            .collect()
    }

    pub(crate) fn write_to(&self, dir: &Path) -> Result<()> {
        let has_graph = self.graph.len() > 0;
        let meta = HnswMeta {
            config: self.cfg.clone(),
            slots: self.records.capacity(),
            has_graph,
            graph_format: GraphFormat::Flat,
        };
        persist::write_json(&dir.join("hnsw.json"), &meta)?;
        persist::write_json(&dir.join("records.json"), &self.records.slots())?;
        if has_graph {
            let (graph, vectors) = self.graph.encode();
            self.graph.release_rows();
            persist::write_file(&dir.join(GRAPH_FILE), &graph)?;
            persist::write_file(&dir.join(VECTORS_FILE), &vectors)?;
        }
        Ok(())
    }

    /// Saves in the format of ragjet before its own HNSW builder (hnsw_rs's
    /// dump, graph rebuilt by hnsw_rs from this index's rows), as earlier
    /// versions wrote it. For tests of the migration path (the loader must
    /// keep reading such saves) and comparisons with hnsw_rs; not part of
    /// the supported API.
    #[doc(hidden)]
    pub fn save_as_hnsw_rs(&self, dir: &Path) -> Result<()> {
        persist::save_atomic(dir, "hnsw", |tmp| {
            let has_graph = self.graph.len() > 0;
            let meta = HnswMeta {
                config: self.cfg.clone(),
                slots: self.records.capacity(),
                has_graph,
                graph_format: GraphFormat::HnswRs,
            };
            persist::write_json(&tmp.join("hnsw.json"), &meta)?;
            persist::write_json(&tmp.join("records.json"), &self.records.slots())?;
            if has_graph {
                let rows: Vec<f32> = (0..self.graph.len() as u32)
                    .flat_map(|s| self.graph.vector(s).iter().copied())
                    .collect();
                Legacy::build(
                    &rows,
                    self.cfg.dim,
                    self.cfg.metric,
                    self.cfg.m,
                    self.cfg.ef_construction,
                )
                .dump(tmp)
                .map_err(|e| corrupt(tmp, format!("hnsw_rs dump failed: {e}")))?;
            }
            Ok(())
        })
    }

    /// Reads a saved index: the graph is reloaded as saved, never rebuilt.
    /// The crate's own layout is checked field by field as it is read
    /// ([`FlatGraph::decode`]); a save of an earlier version (hnsw_rs's
    /// dump, recognised by the absence of `graph_format` in `hnsw.json`) is
    /// checked by [`hnsw_dump::validate`], reloaded by hnsw_rs and copied
    /// into the flat layout.
    pub(crate) fn read_from(dir: &persist::View<'_>) -> Result<Self> {
        let mpath = dir.path("hnsw.json");
        let meta: HnswMeta = dir.read_json("hnsw.json")?;
        meta.config.validate().map_err(|e| corrupt(&mpath, e))?;
        let rpath = dir.path("records.json");
        let slots: Vec<Option<Record>> = dir.read_json("records.json")?;
        if slots.len() != meta.slots {
            return Err(corrupt(&rpath, "record count does not match the graph"));
        }
        let records = Records::from_slots(slots).map_err(|e| corrupt(&rpath, e))?;
        let cfg = meta.config;
        let mut graph = if !meta.has_graph {
            if records.capacity() != 0 {
                return Err(corrupt(
                    dir.dir(),
                    format!("graph has 0 points, records {}", records.capacity()),
                ));
            }
            new_graph(&cfg)
        } else {
            match meta.graph_format {
                GraphFormat::Flat => {
                    let gbytes = dir.read(GRAPH_FILE)?;
                    let vbytes = dir.read(VECTORS_FILE)?;
                    let expect = graph::Expect {
                        dim: cfg.dim,
                        m: cfg.m,
                        points: records.capacity(),
                        metric: cfg.metric,
                        ef_construction: cfg.ef_construction,
                    };
                    FlatGraph::decode(&gbytes, &vbytes, &expect)
                        .map(Box::new)
                        .map_err(|e| corrupt(dir.path(GRAPH_FILE), e))?
                }
                GraphFormat::HnswRs => {
                    let gname = format!("{}.hnsw.graph", hnsw_legacy::BASENAME);
                    let dname = format!("{}.hnsw.data", hnsw_legacy::BASENAME);
                    let gbytes = dir.read(&gname)?;
                    let dbytes = dir.read(&dname)?;
                    let expect = hnsw_dump::Expect {
                        dim: cfg.dim,
                        m: cfg.m,
                        points: records.capacity(),
                        dist_name: hnsw_legacy::dist_name(cfg.metric),
                        max_ef: HnswConfig::MAX_EF_CONSTRUCTION,
                    };
                    hnsw_legacy::load(
                        &dir.dir(),
                        &gbytes,
                        &dbytes,
                        &expect,
                        cfg.metric,
                        cfg.ef_construction,
                    )
                    .map(Box::new)
                    .map_err(|e| corrupt(dir.path(&gname), e))?
                }
            }
        };
        if graph.len() != records.capacity() {
            return Err(corrupt(
                dir.dir(),
                format!(
                    "graph has {} points, records {}",
                    graph.len(),
                    records.capacity()
                ),
            ));
        }
        // Int8 / binary: the rows move to their file (if any) and the codes
        // are trained on every saved row, as a flat index's are.
        cfg.place_rows(&mut graph)?;
        Ok(HnswIndex {
            codes: cfg.trained_codes(&graph),
            cfg,
            graph,
            records,
            namespace: DEFAULT_NAMESPACE.to_string(),
            generation: 0,
            selection_cache: Mutex::new(None),
        })
    }

    /// Loads an index saved with [`VectorIndex::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let _span = tracing::info_span!("index.load", kind = "hnsw").entered();
        let gen = persist::open_verified(dir)?;
        if gen.kind() != "hnsw" {
            return Err(corrupt(
                dir,
                format!("holds a {:?} index, not an HNSW one", gen.kind()),
            ));
        }
        let idx = Self::read_from(&gen.root())?;
        record_op(&idx.namespace, "load", 1);
        record_size(&idx.namespace, idx.len());
        Ok(idx)
    }
}

fn new_graph(cfg: &HnswConfig) -> Box<FlatGraph> {
    let mut g = FlatGraph::new(cfg.dim, cfg.metric, cfg.m, cfg.ef_construction);
    g.reserve_slots(cfg.capacity_hint.min(CAPACITY_HINT_MAX));
    Box::new(g)
}

/// How `hnsw.json`'s graph is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum GraphFormat {
    /// hnsw_rs's dump (`graph.hnsw.graph`, `graph.hnsw.data`): every save
    /// before ragjet built its own graphs, which wrote no `graph_format`.
    #[default]
    HnswRs,
    /// The crate's layout (`graph.bin`, `vectors.bin`).
    Flat,
}

impl GraphFormat {
    fn is_hnsw_rs(&self) -> bool {
        *self == GraphFormat::HnswRs
    }
}

#[derive(Serialize, Deserialize)]
struct HnswMeta {
    config: HnswConfig,
    slots: usize,
    has_graph: bool,
    #[serde(default, skip_serializing_if = "GraphFormat::is_hnsw_rs")]
    graph_format: GraphFormat,
}

impl VectorIndex for HnswIndex {
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
        self.generation += 1;
        let added = prepared.len();
        // A rows file that cannot grow fails the batch here, before
        // anything changed.
        self.graph
            .reserve_rows(added)
            .map_err(|e| self.cfg.rows_err(e))?;
        let mut rows: Vec<f32> = Vec::with_capacity(added * self.cfg.dim);
        self.records.reserve(added);
        for (rec, v) in prepared {
            if let Some(old) = self.records.slot_of(&rec.id) {
                self.records.tombstone(old);
            }
            self.records.push(rec);
            rows.extend_from_slice(&v);
        }
        if let Some(book) = &mut self.codes {
            book.reserve(added);
            for row in rows.chunks_exact(self.cfg.dim) {
                book.push(row);
            }
        }
        self.graph.insert(rows).map_err(|e| self.cfg.rows_err(e))?;
        if let Some(book) = &mut self.codes {
            book.maybe_retrain(self.graph.rows());
            self.graph.release_rows();
        }
        record_op(&self.namespace, "add", added as u64);
        record_size(&self.namespace, self.len());
        Ok(())
    }

    fn delete(&mut self, ids: &[&str]) -> usize {
        self.generation += 1;
        let mut removed = 0;
        for id in ids {
            if let Some(slot) = self.records.slot_of(id) {
                self.records.tombstone(slot);
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
        self.search_with_ef(query, k, self.cfg.ef_search, filter)
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
        persist::save_atomic(dir, "hnsw", |tmp| self.write_to(tmp))?;
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
