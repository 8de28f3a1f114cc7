//! Approximate search on an `hnsw_rs` graph.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use std::sync::{Arc, Mutex};

use hnsw_rs::prelude::{AnnT, Hnsw, HnswIo};
use serde::{Deserialize, Serialize};

use crate::distance::{graph_distance, HnswCosine, HnswL2, Metric};
use crate::error::{corrupt, Result, RetrievalError};
use crate::filter::MetadataFilters;
use crate::graph::SearchGraph;
use crate::hnsw_dump;
use crate::index::{check_dim, check_filter, prepare_entries, prepare_query, VectorIndex};
use crate::metrics::{record_op, record_size, DEFAULT_NAMESPACE};
use crate::persist;
use crate::records::Records;
use crate::topk::TopK;
use crate::types::{Entry, Hit, Record};

/// hnsw_rs caps the number of layers at 16.
const MAX_LAYERS: usize = 16;
/// Most entries `capacity_hint` pre-allocates for in hnsw_rs (per-layer
/// tables of pointers); a larger hint is clamped, since the tables grow
/// anyway.
const CAPACITY_HINT_MAX: usize = 1 << 20;
/// Batches at least this large are inserted with `parallel_insert`.
const PARALLEL_INSERT_MIN: usize = 64;
const GRAPH_BASENAME: &str = "graph";
/// Filters passing at most this many rows are answered by exact search
/// over those rows instead of a graph walk.
const BRUTE_FORCE_MAX_ROWS: usize = 20_000;
/// Entries added since the last [`SearchGraph`] snapshot are searched
/// exactly until there are more than this many, or more than 1/64 of the
/// snapshot; then the snapshot is retaken (at the end of the `upsert`).
const PENDING_MIN: usize = 256;

/// Options of an [`HnswIndex`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HnswConfig {
    /// Vector dimension.
    pub dim: usize,
    /// [`Metric::Cosine`] or [`Metric::L2`]. Raw dot product is not
    /// supported: hnsw_rs needs non-negative distances, and graph search for
    /// maximum inner product is unreliable anyway; normalise and use cosine.
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
    /// Expected number of entries (an allocation hint, not a limit;
    /// pre-allocation stops at 2²⁰ entries).
    pub capacity_hint: usize,
}

impl HnswConfig {
    /// Largest `M`: hnsw_rs stores it in a byte (in its dump and in
    /// `get_max_nb_connection`), so 256 would read back as 0 links.
    pub const MAX_M: usize = 255;
    /// Largest `ef_construction`: hnsw_rs allocates candidate heaps of
    /// this size on every insert, so an absurd value (from a caller or a
    /// damaged saved config) would abort the process.
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
        }
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
        Ok(())
    }
}

enum Graph {
    Cosine(Hnsw<'static, f32, HnswCosine>),
    L2(Hnsw<'static, f32, HnswL2>),
}

macro_rules! with_graph {
    ($g:expr, $h:ident => $body:expr) => {
        match $g {
            Graph::Cosine($h) => $body,
            Graph::L2($h) => $body,
        }
    };
}

impl Graph {
    fn new(cfg: &HnswConfig) -> Graph {
        let cap = cfg.capacity_hint.clamp(1, CAPACITY_HINT_MAX);
        match cfg.metric {
            Metric::L2 => Graph::L2(Hnsw::new(
                cfg.m,
                cap,
                MAX_LAYERS,
                cfg.ef_construction,
                HnswL2,
            )),
            _ => Graph::Cosine(Hnsw::new(
                cfg.m,
                cap,
                MAX_LAYERS,
                cfg.ef_construction,
                HnswCosine,
            )),
        }
    }

    /// Inserts in a fixed pseudo-random order: HNSW graphs built in data
    /// order (a corpus sorted by topic, cluster centres first) lose their
    /// long-range links and with them most of their recall; faiss shuffles
    /// for the same reason. Measured on the 100k clustered benchmark set
    /// with hnswlib: recall@10 at ef 64 was 0.74 in data order, 0.97
    /// shuffled.
    fn insert(&self, items: &[(&[f32], usize)]) {
        let mut items = items.to_vec();
        shuffle(&mut items);
        with_graph!(self, h => {
            if items.len() >= PARALLEL_INSERT_MIN {
                h.parallel_insert_slice(&items);
            } else {
                for it in items {
                    h.insert_slice(it);
                }
            }
        })
    }

    fn nb_points(&self) -> usize {
        with_graph!(self, h => h.get_nb_point())
    }

    /// `Ok(None)` for an empty graph; `Err` for one this index could not
    /// have built (a damaged reload).
    fn snapshot(&self, cfg: &HnswConfig) -> std::result::Result<Option<Box<SearchGraph>>, String> {
        with_graph!(self, h => SearchGraph::from_hnsw(h, cfg.dim, cfg.metric))
            .map(|g| g.map(Box::new))
    }

    /// `(slot, vector)` of every point in the graph, tombstones included.
    fn points(&self) -> Vec<(usize, Vec<f32>)> {
        with_graph!(self, h => h
            .get_point_indexation()
            .into_iter()
            .map(|p| (p.get_origin_id(), p.get_v().to_vec()))
            .collect())
    }
}

/// Fisher–Yates with a fixed-seed SplitMix64: the same input always gives
/// the same graph.
fn shuffle<T>(items: &mut [T]) {
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ items.len() as u64;
    for i in (1..items.len()).rev() {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        items.swap(i, (z % (i as u64 + 1)) as usize);
    }
}

/// Approximate nearest-neighbour index on an HNSW graph.
///
/// Deletes and replaced entries become tombstones: they stay in the graph
/// (so its connectivity is intact) but never reach results.
///
/// hnsw_rs builds, extends and persists the graph; searches run on a flat
/// snapshot of it (see `graph.rs`), retaken after an `upsert` once enough
/// entries have been added since the last one. Entries added since the
/// snapshot are searched exactly and merged in.
///
/// Filtered search (and search with tombstones) evaluates the filter once
/// per slot into a mask, cached for the last filter until the next
/// mutation, then picks a strategy by how many rows pass: at most
/// 20,000 — exact search over just those rows (recall 1); otherwise the
/// filter is applied during the graph walk (rejected nodes are walked
/// through but never returned, and the walk goes on until `ef` accepted
/// ones are found), as hnswlib does. [`HnswIndex::compact`] rebuilds the
/// graph from the live entries when tombstones pile up.
pub struct HnswIndex {
    cfg: HnswConfig,
    graph: Graph,
    /// Snapshot of `graph` covering slots `0..snapshot.len()`.
    snapshot: Option<Box<SearchGraph>>,
    /// Vectors of the slots added since the snapshot, in slot order.
    pending: Vec<f32>,
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
    /// `(slots, their vectors)` when few enough rows pass for brute force.
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
        Ok(HnswIndex {
            graph: Graph::new(&cfg),
            snapshot: None,
            pending: Vec::new(),
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
        let mut points = self.graph.points();
        points.sort_by_key(|p| p.0);
        let mut records = Records::default();
        let mut live: Vec<(Vec<f32>, usize)> = Vec::with_capacity(self.records.live());
        for (slot, v) in points {
            if let Some(rec) = self.records.get(slot) {
                let new_slot = records.push(rec.clone()) as usize;
                live.push((v, new_slot));
            }
        }
        let graph = Graph::new(&self.cfg);
        let items: Vec<(&[f32], usize)> = live.iter().map(|(v, s)| (v.as_slice(), *s)).collect();
        graph.insert(&items);
        self.graph = graph;
        self.records = records;
        // The old snapshot numbers the old slots: drop it, with every live
        // vector pending (exact scan) until the new one is taken. Keeping it
        // served stale rows, e.g. after compacting everything away.
        self.snapshot = None;
        self.pending = live.into_iter().flat_map(|(v, _)| v).collect();
        self.retake_snapshot();
        removed
    }

    /// Snapshots the hnsw_rs graph for searching and empties `pending`.
    fn retake_snapshot(&mut self) {
        // A snapshot must cover every slot; a graph this index built always
        // gives one. Should it not, the current state (exact scan of what
        // the snapshot lacks) stays: slower, but complete.
        match self.graph.snapshot(&self.cfg) {
            Ok(Some(g)) if g.len() == self.records.capacity() => {
                self.snapshot = Some(g);
                self.pending.clear();
            }
            Ok(None) if self.records.capacity() == 0 => {
                self.snapshot = None;
                self.pending.clear();
            }
            _ => {}
        }
    }

    fn snapshot_len(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |g| g.len())
    }

    /// The stored (prepared) vector of a slot.
    fn row(&self, slot: usize) -> &[f32] {
        let d = self.cfg.dim;
        match &self.snapshot {
            Some(g) if slot < g.len() => g.vector(slot as u32),
            _ => {
                let i = slot - self.snapshot_len();
                &self.pending[i * d..(i + 1) * d]
            }
        }
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
                self.records.get(slot as usize).map(|r| Hit {
                    id: r.id.clone(),
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
                    .get(s)
                    .is_some_and(|r| filter.is_none_or(|f| f.matches(&r.metadata)))
            })
            .collect();
        let passing = mask.iter().filter(|b| **b).count();
        let subset = (passing > 0 && passing <= BRUTE_FORCE_MAX_ROWS).then(|| {
            let mut slots = Vec::with_capacity(passing);
            let mut vectors = Vec::with_capacity(passing * self.cfg.dim);
            for (slot, _) in mask.iter().enumerate().filter(|(_, pass)| **pass) {
                slots.push(slot as u32);
                vectors.extend_from_slice(self.row(slot));
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

    /// The graph walk over the snapshot, merged with an exact scan of the
    /// entries added since: the best `k` as `(distance, slot)`.
    fn walk(
        &self,
        q: &[f32],
        k: usize,
        ef: usize,
        accept: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<(f32, u32)> {
        let mut top = TopK::new(k);
        if let Some(g) = &self.snapshot {
            for (d, slot) in g.search(q, k, ef, accept) {
                top.push(-d, slot);
            }
        }
        let first = self.snapshot_len();
        for (i, v) in self.pending.chunks_exact(self.cfg.dim).enumerate() {
            let slot = (first + i) as u32;
            if accept.is_none_or(|f| f(slot)) {
                top.push(-graph_distance(self.cfg.metric, q, v), slot);
            }
        }
        top.into_sorted()
            .into_iter()
            .map(|c| (-c.score, c.slot))
            .collect()
    }

    /// Exact top-k over gathered rows, as `(distance, slot)` (same distance
    /// as the graph, so scores match a graph search's).
    fn brute_force(&self, q: &[f32], k: usize, slots: &[u32], vectors: &[f32]) -> Vec<(f32, u32)> {
        let mut top = TopK::new(k);
        for (i, v) in vectors.chunks_exact(self.cfg.dim).enumerate() {
            top.push(-graph_distance(self.cfg.metric, q, v), i as u32);
        }
        top.into_sorted()
            .into_iter()
            .map(|c| (-c.score, slots[c.slot as usize]))
            .collect()
    }

    pub(crate) fn write_to(&self, dir: &Path) -> Result<()> {
        let has_graph = self.graph.nb_points() > 0;
        let meta = HnswMeta {
            config: self.cfg.clone(),
            slots: self.records.capacity(),
            has_graph,
        };
        persist::write_json(&dir.join("hnsw.json"), &meta)?;
        persist::write_json(&dir.join("records.json"), &self.records.slots())?;
        if has_graph {
            let name = with_graph!(&self.graph, h => h.file_dump(dir, GRAPH_BASENAME))
                .map_err(|e| corrupt(dir, format!("hnsw_rs dump failed: {e}")))?;
            if name != GRAPH_BASENAME {
                return Err(corrupt(dir, format!("hnsw_rs dumped under {name:?}")));
            }
        }
        Ok(())
    }

    /// Reads a saved index. The graph is reloaded as dumped (hnsw_rs), never
    /// rebuilt, after [`hnsw_dump::validate`] has checked both dump files
    /// against the config and the records; the snapshot taken of it checks
    /// every point and link again.
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
        let graph = if meta.has_graph {
            let gname = format!("{GRAPH_BASENAME}.hnsw.graph");
            let dname = format!("{GRAPH_BASENAME}.hnsw.data");
            let gbytes = dir.read(&gname)?;
            let dbytes = dir.read(&dname)?;
            let metric = meta.config.metric;
            let expect = hnsw_dump::Expect {
                dim: meta.config.dim,
                m: meta.config.m,
                points: records.capacity(),
                dist_name: match metric {
                    Metric::L2 => std::any::type_name::<HnswL2>(),
                    _ => std::any::type_name::<HnswCosine>(),
                },
                max_ef: HnswConfig::MAX_EF_CONSTRUCTION,
            };
            hnsw_dump::validate(&gbytes, &dbytes, &expect)
                .map_err(|e| corrupt(dir.path(&gname), e))?;
            drop((gbytes, dbytes));
            // Validated files do not make hnsw_rs panic; should they have
            // changed on disk since (see `persist`), a panic is still an
            // error here rather than the caller's crash.
            let gdir = dir.dir();
            match catch_unwind(AssertUnwindSafe(|| load_graph(&gdir, metric))) {
                Ok(Ok(g)) => g,
                Ok(Err(e)) => return Err(corrupt(&gdir, format!("hnsw_rs reload failed: {e}"))),
                Err(_) => return Err(corrupt(&gdir, "hnsw_rs reload panicked on the graph files")),
            }
        } else {
            Graph::new(&meta.config)
        };
        if graph.nb_points() != records.capacity() {
            return Err(corrupt(
                dir.dir(),
                format!(
                    "graph has {} points, records {}",
                    graph.nb_points(),
                    records.capacity()
                ),
            ));
        }
        let snapshot = graph
            .snapshot(&meta.config)
            .map_err(|e| corrupt(dir.dir(), format!("graph: {e}")))?;
        Ok(HnswIndex {
            cfg: meta.config,
            graph,
            snapshot,
            pending: Vec::new(),
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

/// Reloads a validated dump with hnsw_rs, without leaking its loader.
///
/// hnsw_rs ties a reloaded graph's lifetime to the `HnswIo` that read it,
/// because with memory-mapping on, points borrow the loader's map. Here
/// nothing can borrow from it: `HnswIo::new` creates it with no map,
/// `load_hnsw_with_dist` takes it by shared reference and so cannot create
/// one, and every point is read into its own `Vec` (the borrowing
/// constructor is reached only with a map). The lifetime is therefore
/// nominal, and [`unborrow_cosine`] / [`unborrow_l2`] drop it; the loader
/// is freed when this function returns.
fn load_graph(dir: &Path, metric: Metric) -> std::result::Result<Graph, String> {
    let io = HnswIo::new(dir, GRAPH_BASENAME);
    let graph = match metric {
        Metric::L2 => io
            .load_hnsw_with_dist::<f32, HnswL2>(HnswL2)
            .map(|h| Graph::L2(unborrow_l2(h))),
        _ => io
            .load_hnsw_with_dist::<f32, HnswCosine>(HnswCosine)
            .map(|h| Graph::Cosine(unborrow_cosine(h))),
    };
    graph.map_err(|e| e.to_string())
}

/// See [`load_graph`] for why the loader's lifetime can be dropped.
fn unborrow_cosine(h: Hnsw<'_, f32, HnswCosine>) -> Hnsw<'static, f32, HnswCosine> {
    // SAFETY: the two types differ only in a lifetime (same layout), and
    // no value inside `h` borrows anything for it (see `load_graph`).
    unsafe { std::mem::transmute::<Hnsw<'_, f32, HnswCosine>, Hnsw<'static, f32, HnswCosine>>(h) }
}

/// See [`load_graph`] for why the loader's lifetime can be dropped.
fn unborrow_l2(h: Hnsw<'_, f32, HnswL2>) -> Hnsw<'static, f32, HnswL2> {
    // SAFETY: as in `unborrow_cosine`.
    unsafe { std::mem::transmute::<Hnsw<'_, f32, HnswL2>, Hnsw<'static, f32, HnswL2>>(h) }
}

#[derive(Serialize, Deserialize)]
struct HnswMeta {
    config: HnswConfig,
    slots: usize,
    has_graph: bool,
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
        let mut items: Vec<(Vec<f32>, usize)> = Vec::with_capacity(prepared.len());
        for (rec, v) in prepared {
            if let Some(old) = self.records.slot_of(&rec.id) {
                self.records.tombstone(old);
            }
            let slot = self.records.push(rec) as usize;
            items.push((v, slot));
        }
        let refs: Vec<(&[f32], usize)> = items.iter().map(|(v, s)| (v.as_slice(), *s)).collect();
        self.graph.insert(&refs);
        for (v, _) in &items {
            self.pending.extend_from_slice(v);
        }
        let pending = self.pending.len() / self.cfg.dim;
        if pending > PENDING_MIN.max(self.snapshot_len() / 64) {
            self.retake_snapshot();
        }
        record_op(&self.namespace, "add", items.len() as u64);
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

    fn get(&self, id: &str) -> Option<&Record> {
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
