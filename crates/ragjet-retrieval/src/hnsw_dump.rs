//! A complete check of hnsw_rs's dump files (`graph.hnsw.graph`,
//! `graph.hnsw.data`) before hnsw_rs's loader reads them.
//!
//! hnsw_rs 0.3's loader trusts its input: it `assert!`s and `unwrap`s on
//! malformed bytes, calls `process::exit(1)` on some, allocates vectors of
//! lengths read from the file, indexes its layers with neighbour ids read
//! from the file, and reinterprets each point's bytes as `dimension` f32
//! values whatever their stored length. A file that is truncated, bit-flipped
//! or crafted (with its checksums recomputed) could therefore abort the
//! process or read out of bounds. This module parses the same format (v4,
//! full mode, as hnsw_rs 0.3.5 writes it) from the verified bytes and checks
//! every field against the index's own metadata and against the rest of the
//! dump; only files it accepts are handed to hnsw_rs.
//!
//! Layout (native-endian, `usize` = 8 bytes), from hnsw_rs's `hnswio.rs`:
//!
//! ```text
//! graph: description  magic u32 (v4), dumpmode u8 (1 = full), max_nb_connection u8,
//!                     level_scale f64, nb_layer u8 (16), ef usize, nb_point usize,
//!                     dimension usize, distname (len usize, bytes), t_name (len, bytes)
//!        layers       nb_layer u8, then per layer: magic u32, nb_points usize,
//!                     per point: magic u32, origin_id usize, layer u8, rank i32,
//!                       per each of the 16 layers: count usize,
//!                         per neighbour: d_id usize, layer u8, rank i32, distance f32
//!        entry point  origin_id usize, layer u8, rank i32
//! data:  magic u32, dimension usize,
//!        per point (same order): magic u32, origin_id u64, byte length u64, values
//! ```

use std::mem::size_of;

/// The checks' view of the index that owns the dump.
pub(crate) struct Expect<'a> {
    /// Vector dimension.
    pub dim: usize,
    /// `M` of the index config.
    pub m: usize,
    /// Number of slots of the index (points in the graph).
    pub points: usize,
    /// `std::any::type_name` of the distance the graph is loaded with
    /// (hnsw_rs's `load_hnsw_with_dist` requires the exact name).
    pub dist_name: &'a str,
    /// Largest `ef` (ef_construction) accepted: hnsw_rs allocates heaps of
    /// that size on every later insert.
    pub max_ef: usize,
}

const MAGIC_DESCR_V4: u32 = 0x002a_6779;
const MAGIC_LAYER: u32 = 0x000a_676f;
const MAGIC_POINT: u32 = 0x000a_678f;
const MAGIC_DATA: u32 = 0xa67f_0000;
/// hnsw_rs's `NB_LAYER_MAX`: every point carries this many neighbour lists.
const LAYERS: usize = 16;
/// Longest name hnsw_rs reads (distance and type names).
const MAX_NAME: usize = 256;
/// Bytes of one neighbour in full mode: d_id, layer, rank, distance.
const NEIGHBOUR_BYTES: usize = size_of::<usize>() + 1 + 4 + 4;

/// A cursor over a byte slice; every read is bounds-checked.
struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Reader { what, bytes, at: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "{} file truncated: {n} bytes wanted at offset {}, {} left",
                self.what,
                self.at,
                self.remaining()
            ));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.array::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_ne_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_ne_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_ne_bytes(self.array()?))
    }

    fn usize(&mut self) -> Result<usize, String> {
        Ok(usize::from_ne_bytes(self.array()?))
    }

    fn f32(&mut self) -> Result<f32, String> {
        Ok(f32::from_ne_bytes(self.array()?))
    }

    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_ne_bytes(self.array()?))
    }

    fn magic(&mut self, want: u32, name: &str) -> Result<(), String> {
        let got = self.u32()?;
        if got != want {
            return Err(format!(
                "{} file: bad {name} magic {got:#x} at offset {}",
                self.what,
                self.at - 4
            ));
        }
        Ok(())
    }

    fn name(&mut self) -> Result<&'a [u8], String> {
        let len = self.usize()?;
        if len > MAX_NAME {
            return Err(format!("{} file: name of {len} bytes", self.what));
        }
        self.take(len)
    }

    fn end(&self) -> Result<(), String> {
        if self.remaining() != 0 {
            return Err(format!(
                "{} file: {} unexpected bytes at the end",
                self.what,
                self.remaining()
            ));
        }
        Ok(())
    }
}

/// A neighbour reference as dumped: its data id and its place (layer,
/// rank in layer).
struct Link {
    d_id: usize,
    layer: u8,
    rank: i32,
}

/// Checks both files completely; `Err` says what is wrong. On `Ok`,
/// hnsw_rs 0.3.5's loader reads them without panicking, exiting or reading
/// out of bounds, and the graph it builds has exactly `points` points with
/// ids `0..points`, neighbours among them, and finite vectors of `dim`.
pub(crate) fn validate(graph: &[u8], data: &[u8], e: &Expect<'_>) -> Result<(), String> {
    if size_of::<usize>() != 8 {
        return Err("hnsw_rs dumps are read on 64-bit targets only".into());
    }
    let mut g = Reader::new("graph", graph);
    let mut d = Reader::new("data", data);

    // Description.
    g.magic(MAGIC_DESCR_V4, "description (format v4)")?;
    if g.u8()? != 1 {
        return Err("graph dump is not in full mode".into());
    }
    let m = g.u8()? as usize;
    if m != e.m {
        return Err(format!("graph has M = {m}, the index {}", e.m));
    }
    let level_scale = g.f64()?;
    if !(level_scale.is_finite() && level_scale > 0.0) {
        return Err(format!("level scale {level_scale}"));
    }
    if g.u8()? as usize != LAYERS {
        return Err("graph does not have 16 layer slots".into());
    }
    let ef = g.usize()?;
    if ef == 0 || ef > e.max_ef {
        return Err(format!("ef_construction {ef} out of 1..={}", e.max_ef));
    }
    let nb_point = g.usize()?;
    if nb_point == 0 || nb_point != e.points {
        return Err(format!(
            "graph has {nb_point} points, the index {}",
            e.points
        ));
    }
    if g.usize()? != e.dim {
        return Err(format!("graph dimension is not the index's {}", e.dim));
    }
    if g.name()? != e.dist_name.as_bytes() {
        return Err(format!("graph distance is not {}", e.dist_name));
    }
    if g.name()? != b"f32" {
        return Err("graph values are not f32".into());
    }

    // Data header.
    d.magic(MAGIC_DATA, "data header")?;
    if d.usize()? != e.dim {
        return Err(format!("data dimension is not the index's {}", e.dim));
    }
    let value_bytes = e.dim * size_of::<f32>();

    // Layers and points. Nothing below allocates more than one entry per
    // byte already read.
    let nb_layer = g.u8()? as usize;
    if nb_layer > LAYERS {
        return Err(format!("{nb_layer} layers"));
    }
    let mut seen = vec![false; nb_point];
    let mut loaded = 0usize;
    // Per layer: the origin id of each rank.
    let mut layers: Vec<Vec<usize>> = Vec::with_capacity(nb_layer);
    // Every neighbour reference, with the point that holds it, checked
    // once all layers are known.
    let mut links: Vec<(usize, Link)> = Vec::new();
    for l in 0..nb_layer {
        g.magic(MAGIC_LAYER, "layer")?;
        let count = g.usize()?;
        if count > nb_point - loaded {
            return Err(format!(
                "layer {l} holds {count} points, more than the graph"
            ));
        }
        let mut origins = Vec::with_capacity(count);
        for r in 0..count {
            g.magic(MAGIC_POINT, "point")?;
            let origin = g.usize()?;
            if origin >= nb_point || std::mem::replace(&mut seen[origin], true) {
                return Err(format!("point id {origin} out of range or repeated"));
            }
            let (layer, rank) = (g.u8()?, g.i32()?);
            if layer as usize != l || usize::try_from(rank).ok() != Some(r) {
                return Err(format!("point {origin} is misplaced"));
            }
            // hnsw_rs's reverse updates can leave links on layers above a
            // point's level, to points of a lower level: harmless (hnsw_rs
            // resolves them by place, the copy into the flat layout reads a
            // point's own levels only), so only their targets are checked.
            for _ in 0..LAYERS {
                let n = g.usize()?;
                if n > g.remaining() / NEIGHBOUR_BYTES {
                    return Err(format!(
                        "point {origin}: {n} neighbours, more than the file"
                    ));
                }
                for _ in 0..n {
                    let link = Link {
                        d_id: g.usize()?,
                        layer: g.u8()?,
                        rank: g.i32()?,
                    };
                    let dist = g.f32()?;
                    // hnsw_rs sorts neighbours and panics on NaN.
                    if !(dist.is_finite() && dist >= 0.0) {
                        return Err(format!("point {origin}: neighbour distance {dist}"));
                    }
                    links.push((origin, link));
                }
            }

            // The point's vector, in the data file.
            d.magic(MAGIC_DATA, "data point")?;
            if d.u64()? != origin as u64 {
                return Err(format!("data file out of step at point {origin}"));
            }
            if d.u64()? != value_bytes as u64 {
                return Err(format!("point {origin}: vector length is not {}", e.dim));
            }
            let values = d.take(value_bytes)?;
            if values
                .chunks_exact(4)
                .any(|c| !f32::from_ne_bytes([c[0], c[1], c[2], c[3]]).is_finite())
            {
                return Err(format!("point {origin}: non-finite vector component"));
            }
            origins.push(origin);
        }
        loaded += count;
        layers.push(origins);
    }
    if loaded != nb_point {
        return Err(format!("graph lists {loaded} points, header {nb_point}"));
    }

    // Every neighbour names an existing point, by place and by id alike.
    let resolve = |layer: u8, rank: i32| -> Option<usize> {
        let rank = usize::try_from(rank).ok()?;
        layers.get(layer as usize)?.get(rank).copied()
    };
    for (origin, link) in &links {
        if resolve(link.layer, link.rank) != Some(link.d_id) {
            return Err(format!(
                "point {origin}: neighbour {} is not in the graph",
                link.d_id
            ));
        }
    }

    // Entry point.
    let (origin, layer, rank) = (g.usize()?, g.u8()?, g.i32()?);
    if resolve(layer, rank) != Some(origin) {
        return Err(format!("entry point {origin} is not in the graph"));
    }
    g.end()?;
    d.end()
}
