//! Namespaces: several independent collections in one store.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::distance::Metric;
use crate::error::{corrupt, Result, RetrievalError};
use crate::filter::MetadataFilters;
use crate::flat::{FlatConfig, FlatIndex};
use crate::hnsw::{HnswConfig, HnswIndex};
use crate::index::VectorIndex;
use crate::metrics::record_op;
use crate::persist;
use crate::types::{Entry, Hit, RecordRef};

/// Which index a namespace uses.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexSpec {
    /// Exact search.
    Flat(FlatConfig),
    /// HNSW graph.
    Hnsw(HnswConfig),
}

/// Either index kind, behind the common trait.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{AnyIndex, Entry, IndexSpec, HnswConfig, Metric, VectorIndex};
///
/// let mut index = AnyIndex::new(IndexSpec::Hnsw(HnswConfig::new(3, Metric::L2)))?;
/// index.upsert(vec![Entry::new("p", vec![0.0, 0.0, 1.0])])?;
/// let dir = tempfile::tempdir()?;
/// index.save(dir.path())?;
/// // The saved manifest names the kind, so loading needs no spec.
/// let loaded = AnyIndex::load(dir.path())?;
/// assert!(matches!(loaded, AnyIndex::Hnsw(_)));
/// assert_eq!(loaded.search(&[0.0, 0.0, 1.0], 1, None)?[0].id, "p");
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub enum AnyIndex {
    /// Exact search.
    Flat(FlatIndex),
    /// HNSW graph.
    Hnsw(HnswIndex),
}

impl AnyIndex {
    /// An empty index of the given kind.
    pub fn new(spec: IndexSpec) -> Result<Self> {
        Ok(match spec {
            IndexSpec::Flat(c) => AnyIndex::Flat(FlatIndex::new(c)?),
            IndexSpec::Hnsw(c) => AnyIndex::Hnsw(HnswIndex::new(c)?),
        })
    }

    fn inner(&self) -> &dyn VectorIndex {
        match self {
            AnyIndex::Flat(i) => i,
            AnyIndex::Hnsw(i) => i,
        }
    }

    fn inner_mut(&mut self) -> &mut dyn VectorIndex {
        match self {
            AnyIndex::Flat(i) => i,
            AnyIndex::Hnsw(i) => i,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            AnyIndex::Flat(_) => "flat",
            AnyIndex::Hnsw(_) => "hnsw",
        }
    }

    fn write_to(&self, dir: &Path) -> Result<()> {
        match self {
            AnyIndex::Flat(i) => i.write_to(dir),
            AnyIndex::Hnsw(i) => i.write_to(dir),
        }
    }

    fn read_from(kind: &str, dir: &persist::View<'_>) -> Result<Self> {
        match kind {
            "flat" => Ok(AnyIndex::Flat(FlatIndex::read_from(dir)?)),
            "hnsw" => Ok(AnyIndex::Hnsw(HnswIndex::read_from(dir)?)),
            other => Err(corrupt(dir.dir(), format!("unknown index kind {other:?}"))),
        }
    }

    /// Loads a single saved index of either kind.
    pub fn load(dir: &Path) -> Result<Self> {
        let gen = persist::open_verified(dir)?;
        Self::read_from(gen.kind(), &gen.root())
    }
}

impl VectorIndex for AnyIndex {
    fn dim(&self) -> usize {
        self.inner().dim()
    }
    fn metric(&self) -> Metric {
        self.inner().metric()
    }
    fn len(&self) -> usize {
        self.inner().len()
    }
    fn upsert(&mut self, entries: Vec<Entry>) -> Result<()> {
        self.inner_mut().upsert(entries)
    }
    fn delete(&mut self, ids: &[&str]) -> usize {
        self.inner_mut().delete(ids)
    }
    fn delete_ref_doc(&mut self, ref_doc_id: &str) -> usize {
        self.inner_mut().delete_ref_doc(ref_doc_id)
    }
    fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&MetadataFilters>,
    ) -> Result<Vec<Hit>> {
        self.inner().search(query, k, filter)
    }
    fn search_batch(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        filter: Option<&MetadataFilters>,
    ) -> Result<Vec<Vec<Hit>>> {
        self.inner().search_batch(queries, k, filter)
    }
    fn get(&self, id: &str) -> Option<RecordRef<'_>> {
        self.inner().get(id)
    }
    fn ids_matching(&self, filter: Option<&MetadataFilters>) -> Result<Vec<String>> {
        self.inner().ids_matching(filter)
    }
    fn save(&self, dir: &Path) -> Result<()> {
        self.inner().save(dir)
    }
    fn namespace(&self) -> &str {
        self.inner().namespace()
    }
    fn set_namespace(&mut self, namespace: &str) {
        self.inner_mut().set_namespace(namespace)
    }
}

/// Named, isolated collections (tenants, departments). Every operation names
/// its namespace and touches only that namespace's index, so a query can
/// never return another namespace's entries.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{Entry, FlatConfig, HnswConfig, IndexSpec, Metric, VectorIndex, VectorStore};
///
/// let mut store = VectorStore::new();
/// store.create_namespace("small", IndexSpec::Flat(FlatConfig::new(2, Metric::Cosine)))?;
/// store.create_namespace("large", IndexSpec::Hnsw(HnswConfig::new(2, Metric::Cosine)))?;
/// store.upsert("small", vec![Entry::new("x", vec![1.0, 0.0])])?;
/// store.upsert("large", vec![Entry::new("y", vec![1.0, 0.0])])?;
/// // Namespaces are isolated: each search sees only its own entries.
/// assert_eq!(store.search("small", &[1.0, 0.0], 5, None)?[0].id, "x");
/// assert_eq!(store.search("large", &[1.0, 0.0], 5, None)?[0].id, "y");
/// assert!(store.search("missing", &[1.0, 0.0], 5, None).is_err());
///
/// let dir = tempfile::tempdir()?;
/// store.save(dir.path())?;
/// let loaded = VectorStore::load(dir.path())?;
/// let mut names = loaded.namespaces();
/// names.sort();
/// assert_eq!(names, ["large", "small"]);
/// assert_eq!(loaded.namespace("small")?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct VectorStore {
    namespaces: BTreeMap<String, AnyIndex>,
}

#[derive(Serialize, Deserialize)]
struct StoreMeta {
    /// Namespace names in the order of their `ns-<i>` subdirectories.
    namespaces: Vec<(String, String)>,
}

impl VectorStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a namespace; fails if it exists or the name is empty.
    pub fn create_namespace(&mut self, name: &str, spec: IndexSpec) -> Result<&mut AnyIndex> {
        if name.is_empty() {
            return Err(RetrievalError::InvalidOption(
                "namespace name is empty".into(),
            ));
        }
        if self.namespaces.contains_key(name) {
            return Err(RetrievalError::NamespaceExists(name.to_string()));
        }
        let mut idx = AnyIndex::new(spec)?;
        idx.set_namespace(name);
        Ok(self.namespaces.entry(name.to_string()).or_insert(idx))
    }

    /// Removes a namespace and everything in it; returns whether it existed.
    pub fn drop_namespace(&mut self, name: &str) -> bool {
        let existed = self.namespaces.remove(name).is_some();
        if existed {
            crate::metrics::record_size(name, 0);
        }
        existed
    }

    /// Namespace names, sorted.
    pub fn namespaces(&self) -> Vec<&str> {
        self.namespaces.keys().map(String::as_str).collect()
    }

    /// The index of a namespace.
    pub fn namespace(&self, name: &str) -> Result<&AnyIndex> {
        self.namespaces
            .get(name)
            .ok_or_else(|| RetrievalError::NamespaceNotFound(name.to_string()))
    }

    /// The index of a namespace, mutable.
    pub fn namespace_mut(&mut self, name: &str) -> Result<&mut AnyIndex> {
        self.namespaces
            .get_mut(name)
            .ok_or_else(|| RetrievalError::NamespaceNotFound(name.to_string()))
    }

    /// Upserts into one namespace.
    pub fn upsert(&mut self, namespace: &str, entries: Vec<Entry>) -> Result<()> {
        self.namespace_mut(namespace)?.upsert(entries)
    }

    /// Searches one namespace.
    pub fn search(
        &self,
        namespace: &str,
        query: &[f32],
        k: usize,
        filter: Option<&MetadataFilters>,
    ) -> Result<Vec<Hit>> {
        self.namespace(namespace)?.search(query, k, filter)
    }

    /// Saves every namespace as one atomic generation under `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let _span = tracing::info_span!("index.save", namespace = "*").entered();
        persist::save_atomic(dir, "store", |tmp| {
            let mut names = Vec::new();
            for (i, (name, idx)) in self.namespaces.iter().enumerate() {
                let sub = tmp.join(format!("ns-{i}"));
                std::fs::create_dir(&sub).map_err(crate::error::io_err(&sub))?;
                idx.write_to(&sub)?;
                names.push((name.clone(), idx.kind().to_string()));
            }
            persist::write_json(&tmp.join("store.json"), &StoreMeta { namespaces: names })
        })?;
        for name in self.namespaces.keys() {
            record_op(name, "save", 1);
        }
        Ok(())
    }

    /// Loads a store saved with [`VectorStore::save`].
    pub fn load(dir: &Path) -> Result<Self> {
        let gen = persist::open_verified(dir)?;
        if gen.kind() != "store" {
            return Err(corrupt(
                dir,
                format!("holds a {:?}, not a store", gen.kind()),
            ));
        }
        let root = gen.root();
        let meta: StoreMeta = root.read_json("store.json")?;
        let mut store = VectorStore::new();
        for (i, (name, kind)) in meta.namespaces.into_iter().enumerate() {
            if name.is_empty() || store.namespaces.contains_key(&name) {
                return Err(corrupt(
                    root.path("store.json"),
                    format!("namespace {name:?} is empty or appears twice"),
                ));
            }
            let mut idx = AnyIndex::read_from(&kind, &root.sub(&format!("ns-{i}")))?;
            idx.set_namespace(&name);
            record_op(&name, "load", 1);
            store.namespaces.insert(name, idx);
        }
        Ok(store)
    }
}
