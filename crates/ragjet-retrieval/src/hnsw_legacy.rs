//! hnsw_rs, kept for two jobs: reading indexes saved by earlier ragjet
//! versions (their graph is hnsw_rs's dump), and building the reference
//! graph the crate's own builder is tested against (and the old format the
//! migration tests load).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use hnsw_rs::prelude::{AnnT, Hnsw, HnswIo};

use crate::distance::{HnswCosine, HnswL2, Metric};
use crate::graph::{FlatGraph, MAX_LEVEL};
use crate::hnsw_dump;

/// Base name of hnsw_rs's dump files (`graph.hnsw.graph`, `graph.hnsw.data`).
pub(crate) const BASENAME: &str = "graph";

/// An hnsw_rs graph with one of the crate's distances.
pub(crate) enum Legacy {
    Cosine(Hnsw<'static, f32, HnswCosine>),
    L2(Hnsw<'static, f32, HnswL2>),
}

macro_rules! with_legacy {
    ($g:expr, $h:ident => $body:expr) => {
        match $g {
            Legacy::Cosine($h) => $body,
            Legacy::L2($h) => $body,
        }
    };
}

impl Legacy {
    /// hnsw_rs's build of `rows` (slots `0..n`, prepared vectors), in
    /// parallel, as ragjet built graphs before it had its own builder.
    pub(crate) fn build(
        rows: &[f32],
        dim: usize,
        metric: Metric,
        m: usize,
        ef_construction: usize,
    ) -> Legacy {
        let n = rows.len() / dim;
        let mut items: Vec<(&[f32], usize)> = rows.chunks_exact(dim).zip(0..n).collect();
        // In the same shuffled order ragjet used with hnsw_rs (data order
        // costs any HNSW builder most of its recall).
        crate::graph::shuffle(&mut items);
        let layers = MAX_LEVEL + 1;
        let cap = n.max(1);
        let g = match metric {
            Metric::L2 => Legacy::L2(Hnsw::new(m, cap, layers, ef_construction, HnswL2)),
            _ => Legacy::Cosine(Hnsw::new(m, cap, layers, ef_construction, HnswCosine)),
        };
        with_legacy!(&g, h => h.parallel_insert_slice(&items));
        g
    }

    /// Writes hnsw_rs's dump files into `dir`.
    pub(crate) fn dump(&self, dir: &Path) -> Result<(), String> {
        let name =
            with_legacy!(self, h => h.file_dump(dir, BASENAME)).map_err(|e| e.to_string())?;
        if name != BASENAME {
            return Err(format!("hnsw_rs dumped under {name:?}"));
        }
        Ok(())
    }

    /// Copies the graph into the crate's layout.
    pub(crate) fn to_flat(
        &self,
        dim: usize,
        metric: Metric,
        m: usize,
        ef_construction: usize,
    ) -> Result<FlatGraph, String> {
        with_legacy!(self, h => FlatGraph::from_hnsw(h, dim, metric, m, ef_construction))
    }
}

/// Reads an old index's graph: [`hnsw_dump::validate`] checks both dump
/// files completely (hnsw_rs's loader asserts, exits and allocates on
/// malformed input), then hnsw_rs reloads them and the graph is copied
/// into the crate's layout. `dir` holds the files whose verified bytes are
/// `graph` and `data`.
pub(crate) fn load(
    dir: &Path,
    graph: &[u8],
    data: &[u8],
    expect: &hnsw_dump::Expect<'_>,
    metric: Metric,
    ef_construction: usize,
) -> Result<FlatGraph, String> {
    hnsw_dump::validate(graph, data, expect)?;
    // Validated files do not make hnsw_rs panic; should they have changed
    // on disk since (see `persist`), a panic is still an error here rather
    // than the caller's crash.
    let legacy = match catch_unwind(AssertUnwindSafe(|| reload(dir, metric))) {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return Err(format!("hnsw_rs reload failed: {e}")),
        Err(_) => return Err("hnsw_rs reload panicked on the graph files".into()),
    };
    let n = with_legacy!(&legacy, h => h.get_nb_point());
    if n != expect.points {
        return Err(format!("graph has {n} points, records {}", expect.points));
    }
    legacy.to_flat(expect.dim, metric, expect.m, ef_construction)
}

/// `std::any::type_name` of the distance an old graph of `metric` was
/// saved with (hnsw_rs checks it on reload).
pub(crate) fn dist_name(metric: Metric) -> &'static str {
    match metric {
        Metric::L2 => std::any::type_name::<HnswL2>(),
        _ => std::any::type_name::<HnswCosine>(),
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
fn reload(dir: &Path, metric: Metric) -> Result<Legacy, String> {
    let io = HnswIo::new(dir, BASENAME);
    let graph = match metric {
        Metric::L2 => io
            .load_hnsw_with_dist::<f32, HnswL2>(HnswL2)
            .map(|h| Legacy::L2(unborrow_l2(h))),
        _ => io
            .load_hnsw_with_dist::<f32, HnswCosine>(HnswCosine)
            .map(|h| Legacy::Cosine(unborrow_cosine(h))),
    };
    graph.map_err(|e| e.to_string())
}

/// See [`reload`] for why the loader's lifetime can be dropped.
fn unborrow_cosine(h: Hnsw<'_, f32, HnswCosine>) -> Hnsw<'static, f32, HnswCosine> {
    // SAFETY: the two types differ only in a lifetime (same layout), and
    // no value inside `h` borrows anything for it (see `reload`).
    unsafe { std::mem::transmute::<Hnsw<'_, f32, HnswCosine>, Hnsw<'static, f32, HnswCosine>>(h) }
}

/// See [`reload`] for why the loader's lifetime can be dropped.
fn unborrow_l2(h: Hnsw<'_, f32, HnswL2>) -> Hnsw<'static, f32, HnswL2> {
    // SAFETY: as in `unborrow_cosine`.
    unsafe { std::mem::transmute::<Hnsw<'_, f32, HnswL2>, Hnsw<'static, f32, HnswL2>>(h) }
}
