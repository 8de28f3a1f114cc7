//! Compressed rows for the `int8` and `binary` storage of
//! [`crate::FlatIndex`] ([`Quantized`]: codes plus their full rows) and of
//! [`crate::HnswIndex`] (a [`CodeBook`], the codes alone — the graph holds
//! the full rows — walked through [`WalkQuery`]).
//!
//! A search scans the compressed codes (4× smaller for int8, 32× for
//! binary), keeps the best `depth` rows by approximate score, then rescores
//! those exactly from the full-precision rows, so every returned score is
//! the one an f32 index would return for that row. Recall is what the
//! approximate pass costs: a true top-k row missing from the `depth`
//! candidates is missed.
//!
//! Training: int8 keeps a per-dimension range `[lo, hi]` (255 steps),
//! binary a per-dimension threshold (the mean; a bit is `x > mean`, which
//! centres the data so sign bits carry information on offset data too).
//! Both are trained on the full rows present, and retrained — every code
//! rewritten from the full rows — whenever the row count reaches twice the
//! count of the last training (amortised O(1) re-encodes per added row).
//! Rows added in between are encoded with the current parameters, int8
//! values outside the range clamped: the rescore keeps scores exact, only
//! recall can drop if later data drifts far from the first rows. A reload
//! retrains on every saved row.
//!
//! The full-precision rows ([`FullRows`]) are in RAM by default. With a
//! rows directory (`FlatConfig::with_rows_dir`) they live in a file there,
//! mapped shared, and the resident memory is the codes: the scan reads
//! only the codes, the rescore touches `depth` rows per query (their pages
//! fault in from the page cache and stay reclaimable, not anonymous
//! memory), and after every pass that touches all rows (a batch of
//! upserts, training, a load) the map's pages are handed back
//! (`MADV_DONTNEED`; on a shared map the data stays in the file). The file
//! is created unlinked (`tempfile_in`): it is the index's private working
//! copy, never reopened by path, so no other process can truncate it under
//! the map, and it disappears with the index (or the process). Saves still
//! write the rows into the index's own files and loads check them as
//! before; the map is filled from what was verified.

use std::path::Path;

use memmap2::MmapMut;
use serde::{Deserialize, Serialize};

use crate::distance::{Fns, Metric};
use crate::records::grow;
use crate::topk::TopK;

/// Full-precision rows (`dim` f32 each, row-major) read by the exact
/// rescore and by training: in RAM, or in a mapped file (see the module
/// docs).
#[derive(Debug)]
pub(crate) enum FullRows {
    Ram(Vec<f32>),
    File(FileRows),
}

/// Rows in an unlinked file mapped shared: `rows` used of `cap`.
#[derive(Debug)]
pub(crate) struct FileRows {
    file: std::fs::File,
    /// `None` while the file is empty (a map cannot be empty).
    map: Option<MmapMut>,
    dim: usize,
    rows: usize,
    cap: usize,
}

impl Clone for FullRows {
    /// A clone holds its rows in RAM: a second file would need a fallible
    /// clone (and a directory the clone's owner may not expect).
    fn clone(&self) -> Self {
        FullRows::Ram(self.as_slice().to_vec())
    }
}

impl Default for FullRows {
    fn default() -> Self {
        FullRows::Ram(Vec::new())
    }
}

/// Extends `file` to `len` bytes with the blocks allocated now: a write
/// through the map to a hole of a sparse file on a full disk would be a
/// SIGBUS, where a failed allocation here is an error the batch returns.
fn allocate(file: &std::fs::File, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let len = libc::off_t::try_from(len).map_err(std::io::Error::other)?;
        // SAFETY: a plain syscall wrapper on an open descriptor; it
        // touches no memory of ours. (glibc emulates it by writing zeros
        // where the filesystem lacks fallocate.)
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(())
    }
    // Elsewhere (macOS has no posix_fallocate) the new range is written
    // with zeros, which allocates its blocks just the same.
    #[cfg(not(target_os = "linux"))]
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = file;
        let old = file.metadata()?.len();
        if len > old {
            file.seek(SeekFrom::Start(old))?;
            let zeros = vec![0u8; 1 << 16];
            let mut left = len - old;
            while left > 0 {
                let n = left.min(zeros.len() as u64) as usize;
                file.write_all(&zeros[..n])?;
                left -= n as u64;
            }
        }
        Ok(())
    }
}

impl FullRows {
    /// Rows in a new unlinked file in `dir`.
    pub(crate) fn in_file(dir: &Path, dim: usize) -> std::io::Result<Self> {
        Ok(FullRows::File(FileRows {
            file: tempfile::tempfile_in(dir)?,
            map: None,
            dim,
            rows: 0,
            cap: 0,
        }))
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        match self {
            FullRows::Ram(v) => v,
            FullRows::File(f) => match &f.map {
                // SAFETY: the map is page-aligned (so f32-aligned), spans
                // `cap · dim` f32s and `rows <= cap`; any bit pattern is an
                // f32; the file is unlinked and only this value writes it
                // (through `&mut self`), so nothing changes it while this
                // borrow lives.
                Some(m) => unsafe {
                    std::slice::from_raw_parts(m.as_ptr().cast::<f32>(), f.rows * f.dim)
                },
                None => &[],
            },
        }
    }

    fn as_mut_slice(&mut self) -> &mut [f32] {
        match self {
            FullRows::Ram(v) => v,
            FullRows::File(f) => match &mut f.map {
                // SAFETY: as in `as_slice`, and `&mut self` makes this the
                // only borrow.
                Some(m) => unsafe {
                    std::slice::from_raw_parts_mut(m.as_mut_ptr().cast::<f32>(), f.rows * f.dim)
                },
                None => &mut [],
            },
        }
    }

    /// Makes room for `rows` more rows (the file grows by at least an
    /// eighth, as RAM rows do), so the pushes that follow cannot fail.
    pub(crate) fn reserve(&mut self, rows: usize, dim: usize) -> std::io::Result<()> {
        match self {
            FullRows::Ram(v) => grow(v, rows * dim),
            FullRows::File(f) => {
                let need = f.rows + rows;
                if need > f.cap {
                    let cap = need.max(f.cap + f.cap / 8);
                    let bytes = cap
                        .checked_mul(f.dim * 4)
                        .ok_or_else(|| std::io::Error::other("rows file size overflows"))?;
                    // Unmap before the file changes size.
                    f.map = None;
                    allocate(&f.file, bytes as u64)?;
                    // SAFETY: the file is unlinked and private to this
                    // value (see `as_slice`); it is not resized while
                    // mapped (the map was dropped above).
                    f.map = Some(unsafe { MmapMut::map_mut(&f.file)? });
                    f.cap = cap;
                }
            }
        }
        Ok(())
    }

    /// Appends a row.
    pub(crate) fn push(&mut self, v: &[f32]) -> std::io::Result<()> {
        self.reserve(1, v.len())?;
        match self {
            FullRows::Ram(data) => data.extend_from_slice(v),
            FullRows::File(f) => {
                f.rows += 1;
                let n = self.as_slice().len();
                self.as_mut_slice()[n - v.len()..].copy_from_slice(v);
            }
        }
        Ok(())
    }

    /// Drops the rows past `rows`.
    fn truncate(&mut self, rows: usize, dim: usize) {
        match self {
            FullRows::Ram(v) => v.truncate(rows * dim),
            FullRows::File(f) => f.rows = f.rows.min(rows),
        }
    }

    /// Replaces the rows with `rows`, at most as many as now (a
    /// compaction keeping the live ones): cannot fail, a file keeps its
    /// blocks. Extra rows beyond the current count are dropped.
    pub(crate) fn replace_fewer(&mut self, rows: Vec<f32>) {
        match self {
            FullRows::Ram(v) => *v = rows,
            FullRows::File(f) => {
                let n = (rows.len() / f.dim.max(1)).min(f.rows);
                f.rows = n;
                let dst = self.as_mut_slice();
                let len = dst.len();
                dst.copy_from_slice(&rows[..len]);
                self.release();
            }
        }
    }

    /// `rows` (checked, `dim` each) held where `self` (empty) keeps rows:
    /// the `Vec` itself for RAM, a copy for a file (the `Vec` is then
    /// dropped).
    pub(crate) fn fill(self, rows: Vec<f32>, dim: usize) -> std::io::Result<Self> {
        Ok(match self {
            FullRows::Ram(_) => FullRows::Ram(rows),
            mut file => {
                file.reserve(rows.len() / dim.max(1), dim)?;
                for row in rows.chunks_exact(dim) {
                    file.push(row)?;
                }
                file.release();
                file
            }
        })
    }

    /// Hands the map's pages back to the kernel after a pass over every
    /// row, so they are not counted resident; the data stays in the file.
    pub(crate) fn release(&self) {
        #[cfg(unix)]
        if let FullRows::File(FileRows { map: Some(m), .. }) = self {
            // SAFETY: on a shared file map MADV_DONTNEED only drops this
            // process's page-table entries; the next read faults the same
            // bytes back from the page cache or the file. Failure only
            // leaves pages resident.
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }
}

/// Which compression; the per-kind state lives in [`Codes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Kind {
    Int8,
    Binary,
}

#[derive(Debug, Clone)]
enum Codes {
    /// `x̂ᵢ = lo[i] + step[i]·c` for code `c` in 0..=255; `norms2` holds
    /// ‖x̂‖² per row for L2.
    Int8 {
        lo: Vec<f32>,
        step: Vec<f32>,
        codes: Vec<u8>,
        norms2: Vec<f32>,
    },
    /// One bit per dimension (`x > mid[i]`), `words` u64 per row.
    Binary {
        mid: Vec<f32>,
        words: usize,
        bits: Vec<u64>,
    },
}

/// The compressed codes of a row set and the parameters they were made
/// with, without the rows: [`Quantized`] pairs it with its [`FullRows`],
/// [`crate::HnswIndex`] with the rows its graph holds.
#[derive(Debug, Clone)]
pub(crate) struct CodeBook {
    dim: usize,
    metric: Metric,
    codes: Codes,
    /// Rows present at the last training (0: never trained).
    trained_on: usize,
}

impl CodeBook {
    /// No codes yet, untrained.
    pub(crate) fn new(kind: Kind, dim: usize, metric: Metric) -> Self {
        let codes = match kind {
            Kind::Int8 => Codes::Int8 {
                lo: vec![0.0; dim],
                step: vec![0.0; dim],
                codes: Vec::new(),
                norms2: Vec::new(),
            },
            Kind::Binary => Codes::Binary {
                mid: vec![0.0; dim],
                words: dim.div_ceil(64),
                bits: Vec::new(),
            },
        };
        CodeBook {
            dim,
            metric,
            codes,
            trained_on: 0,
        }
    }

    /// Codes trained once on every row of `full` (`dim` f32 each).
    pub(crate) fn trained(kind: Kind, dim: usize, metric: Metric, full: &[f32]) -> Self {
        let mut book = CodeBook::new(kind, dim, metric);
        book.retrain(full);
        book
    }

    /// Makes room for `rows` more codes.
    pub(crate) fn reserve(&mut self, rows: usize) {
        match &mut self.codes {
            Codes::Int8 { codes, norms2, .. } => {
                grow(codes, rows * self.dim);
                grow(norms2, rows);
            }
            Codes::Binary { words, bits, .. } => grow(bits, rows * *words),
        }
    }

    /// Bytes of the compressed codes and their parameters: what a scan
    /// reads, and what stays resident once the full rows are file-backed.
    pub(crate) fn code_bytes(&self) -> usize {
        match &self.codes {
            Codes::Int8 {
                lo,
                step,
                codes,
                norms2,
            } => codes.len() + 4 * (lo.len() + step.len() + norms2.len()),
            Codes::Binary { mid, bits, .. } => 8 * bits.len() + 4 * mid.len(),
        }
    }

    /// Appends the code of `v` as a new last row.
    pub(crate) fn push(&mut self, v: &[f32]) {
        append_code(&mut self.codes, self.dim, v);
    }

    /// Writes the code of `v` at `slot` (and for int8 its ‖x̂‖²).
    pub(crate) fn set(&mut self, slot: usize, v: &[f32]) {
        encode_into(&mut self.codes, self.dim, slot, v);
    }

    /// Moves the last row's code into `slot` and drops the last.
    fn swap_remove(&mut self, slot: usize, last: usize) {
        fn mv<T: Copy>(v: &mut Vec<T>, s: usize, last: usize, w: usize) {
            if s != last {
                v.copy_within(last * w..(last + 1) * w, s * w);
            }
            v.truncate(last * w);
        }
        match &mut self.codes {
            Codes::Int8 { codes, norms2, .. } => {
                mv(codes, slot, last, self.dim);
                mv(norms2, slot, last, 1);
            }
            Codes::Binary { words, bits, .. } => mv(bits, slot, last, *words),
        }
    }

    /// Retrains on `full` (the rows the codes stand for) when they have
    /// doubled since the last training (or on the first rows); called once
    /// per upsert batch.
    pub(crate) fn maybe_retrain(&mut self, full: &[f32]) {
        let n = full.len() / self.dim;
        if n > 0 && n >= 2 * self.trained_on {
            self.retrain(full);
        }
    }

    /// Trains the parameters on `full` and rewrites every code from it.
    pub(crate) fn retrain(&mut self, full: &[f32]) {
        let d = self.dim;
        let n = full.len() / d;
        match &mut self.codes {
            Codes::Int8 { lo, step, .. } => {
                let mut hi = vec![f32::NEG_INFINITY; d];
                lo.iter_mut().for_each(|x| *x = f32::INFINITY);
                for row in full.chunks_exact(d) {
                    for i in 0..d {
                        lo[i] = lo[i].min(row[i]);
                        hi[i] = hi[i].max(row[i]);
                    }
                }
                for i in 0..d {
                    if n == 0 {
                        lo[i] = 0.0;
                    }
                    step[i] = if n == 0 { 0.0 } else { (hi[i] - lo[i]) / 255.0 };
                }
            }
            Codes::Binary { mid, .. } => {
                let mut sum = vec![0.0f64; d];
                for row in full.chunks_exact(d) {
                    sum.iter_mut().zip(row).for_each(|(s, x)| *s += *x as f64);
                }
                for i in 0..d {
                    mid[i] = if n == 0 {
                        0.0
                    } else {
                        (sum[i] / n as f64) as f32
                    };
                }
            }
        }
        match &mut self.codes {
            Codes::Int8 { codes, norms2, .. } => {
                codes.clear();
                norms2.clear();
            }
            Codes::Binary { bits, .. } => bits.clear(),
        }
        for row in full.chunks_exact(d) {
            append_code(&mut self.codes, d, row);
        }
        self.trained_on = n;
    }

    /// The best `depth` rows of `rows` (that `passes`) by approximate score.
    pub(crate) fn candidates(
        &self,
        q: &[f32],
        rows: std::ops::Range<usize>,
        depth: usize,
        passes: impl Fn(usize) -> bool,
    ) -> TopK {
        let mut top = TopK::new(depth);
        match &self.codes {
            Codes::Int8 {
                lo,
                step,
                codes,
                norms2,
            } => {
                let walk = self.int8_query(q, lo, step, codes, norms2);
                for r in rows {
                    let s = -walk.distance(r);
                    if top.worst_score().is_none_or(|w| s > w) && passes(r) {
                        top.push(s, r as u32);
                    }
                }
            }
            Codes::Binary { mid, words, bits } => {
                let w = *words;
                let mut qb = vec![0u64; w];
                pack_bits(q, mid, &mut qb);
                return binary_candidates(&qb, bits, rows, depth, passes);
            }
        }
        top
    }

    /// The query side of a graph walk on the codes (see [`WalkQuery`]).
    pub(crate) fn walk_query(&self, q: &[f32]) -> WalkQuery<'_> {
        match &self.codes {
            Codes::Int8 {
                lo,
                step,
                codes,
                norms2,
            } => WalkQuery::Int8(self.int8_query(q, lo, step, codes, norms2)),
            Codes::Binary { mid, words, bits } => {
                let mut qb = vec![0u64; *words];
                pack_bits(q, mid, &mut qb);
                WalkQuery::Binary(BinaryQuery {
                    fns: Fns::get(),
                    qb,
                    bits,
                })
            }
        }
    }

    /// The int8 query over these codes (`lo` … `norms2`: the fields of
    /// [`Codes::Int8`]).
    fn int8_query<'a>(
        &self,
        q: &[f32],
        lo: &[f32],
        step: &[f32],
        codes: &'a [u8],
        norms2: &'a [f32],
    ) -> Int8Query<'a> {
        let d = self.dim;
        // q·x̂ = q·lo + Σ (q ⊙ step)ᵢ·cᵢ. The scaled query is rounded to
        // i16 so the sum is an integer kernel (16-bit lanes, twice f32's
        // per register); its rounding only moves approximate scores, which
        // the rescore replaces.
        let scaled: Vec<f32> = q.iter().zip(step).map(|(a, s)| a * s).collect();
        let bias: f32 = q.iter().zip(lo).map(|(a, l)| a * l).sum();
        let qmax = int8_query_max(d);
        let m = scaled.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let qs = if m > 0.0 { qmax / m } else { 0.0 };
        let qi: Vec<i16> = scaled.iter().map(|x| (x * qs).round() as i16).collect();
        let inv = if qs > 0.0 { 1.0 / qs } else { 0.0 };
        Int8Query {
            fns: Fns::get(),
            dim: d,
            qi,
            bias,
            inv,
            l2: self.metric == Metric::L2,
            codes,
            norms2,
        }
    }
}

/// A query prepared against a [`CodeBook`], giving the approximate
/// distance (smaller is closer) of any row: what an HNSW search walks on
/// for int8 and binary storage. Two types, not one with a match per row,
/// so the walk is compiled once per kind.
pub(crate) enum WalkQuery<'a> {
    Int8(Int8Query<'a>),
    Binary(BinaryQuery<'a>),
}

/// Int8: `−q·x̂` (dot, cosine) or `‖x̂‖² − 2q·x̂` (L2, `‖q − x̂‖²` less the
/// per-query constant `‖q‖²`).
pub(crate) struct Int8Query<'a> {
    fns: &'static Fns,
    dim: usize,
    qi: Vec<i16>,
    bias: f32,
    inv: f32,
    l2: bool,
    codes: &'a [u8],
    norms2: &'a [f32],
}

impl Int8Query<'_> {
    #[inline]
    pub(crate) fn distance(&self, r: usize) -> f32 {
        let d = self.dim;
        let dp = self.bias
            + (self.fns.dot_u8)(&self.qi, &self.codes[r * d..(r + 1) * d]) as f32 * self.inv;
        if self.l2 {
            self.norms2[r] - 2.0 * dp
        } else {
            -dp
        }
    }

    #[inline]
    pub(crate) fn code(&self, r: usize) -> &[u8] {
        &self.codes[r * self.dim..(r + 1) * self.dim]
    }
}

/// Binary: the Hamming distance to the packed query.
pub(crate) struct BinaryQuery<'a> {
    fns: &'static Fns,
    qb: Vec<u64>,
    bits: &'a [u64],
}

impl BinaryQuery<'_> {
    #[inline]
    pub(crate) fn distance(&self, r: usize) -> f32 {
        (self.fns.hamming)(&self.qb, self.code(r)) as f32
    }

    #[inline]
    pub(crate) fn code(&self, r: usize) -> &[u64] {
        let w = self.qb.len();
        &self.bits[r * w..(r + 1) * w]
    }
}

/// Compressed codes plus the full rows they were made from.
#[derive(Debug, Clone)]
pub(crate) struct Quantized {
    dim: usize,
    full: FullRows,
    book: CodeBook,
}

impl Quantized {
    /// An empty store keeping its full rows in `full` (empty).
    pub(crate) fn new(kind: Kind, dim: usize, metric: Metric, full: FullRows) -> Self {
        Quantized {
            dim,
            full,
            book: CodeBook::new(kind, dim, metric),
        }
    }

    /// Builds from saved full rows (already checked), training once on
    /// all; `full` (empty) is where they go (see [`FullRows::fill`]).
    pub(crate) fn from_rows(
        kind: Kind,
        dim: usize,
        metric: Metric,
        rows: Vec<f32>,
        full: FullRows,
    ) -> std::io::Result<Self> {
        let full = full.fill(rows, dim)?;
        let book = CodeBook::trained(kind, dim, metric, full.as_slice());
        full.release();
        Ok(Quantized { dim, full, book })
    }

    pub(crate) fn rows(&self) -> usize {
        self.full.as_slice().len() / self.dim
    }

    /// Makes room for `rows` more rows (codes and full rows), so that a
    /// batch either fails here, before any change, or not at all.
    pub(crate) fn reserve(&mut self, rows: usize) -> std::io::Result<()> {
        self.full.reserve(rows, self.dim)?;
        self.book.reserve(rows);
        Ok(())
    }

    /// Hands the file-backed rows' pages back (see the module docs); the
    /// caller's pass over the rows is over.
    pub(crate) fn release(&self) {
        self.full.release();
    }

    pub(crate) fn full(&self) -> &FullRows {
        &self.full
    }

    pub(crate) fn row(&self, r: usize) -> &[f32] {
        &self.full.as_slice()[r * self.dim..(r + 1) * self.dim]
    }

    /// See [`CodeBook::code_bytes`].
    pub(crate) fn code_bytes(&self) -> usize {
        self.book.code_bytes()
    }

    /// Appends a row; fails only when a rows file cannot grow (after a
    /// [`Quantized::reserve`] for the batch, never).
    pub(crate) fn push(&mut self, v: &[f32]) -> std::io::Result<()> {
        self.full.push(v)?;
        self.book.push(v);
        Ok(())
    }

    pub(crate) fn set(&mut self, slot: usize, v: &[f32]) {
        let d = self.dim;
        self.full.as_mut_slice()[slot * d..(slot + 1) * d].copy_from_slice(v);
        self.book.set(slot, v);
    }

    /// Moves the last row into `slot` and drops the last, as the f32 rows do.
    pub(crate) fn swap_remove(&mut self, slot: usize) {
        let d = self.dim;
        let last = self.rows() - 1;
        if slot != last {
            self.full
                .as_mut_slice()
                .copy_within(last * d..(last + 1) * d, slot * d);
        }
        self.full.truncate(last, d);
        self.book.swap_remove(slot, last);
    }

    /// See [`CodeBook::maybe_retrain`].
    pub(crate) fn maybe_retrain(&mut self) {
        self.book.maybe_retrain(self.full.as_slice());
    }

    /// See [`CodeBook::candidates`].
    pub(crate) fn candidates(
        &self,
        q: &[f32],
        rows: std::ops::Range<usize>,
        depth: usize,
        passes: impl Fn(usize) -> bool,
    ) -> TopK {
        self.book.candidates(q, rows, depth, passes)
    }
}

/// The `depth` rows of `rows` (that `passes`) nearest to the packed query
/// `qb` in Hamming distance, ties to the lower row — exactly the set a
/// [`TopK`] fed every passing row in order keeps, scored `−distance`.
///
/// Distances are small integers (0..=64·words), so rather than a heap
/// update per improving row (which dominated the scan: about `depth ·
/// ln(rows / depth)` sift-downs of a `depth`-sized heap) the block kernel
/// writes every distance, a histogram gives the cut-off distance `t`
/// (fewer than `depth` rows below it, at least `depth` up to it), and one
/// pass keeps the rows below `t` plus the first rows at `t` in row order.
/// `passes` runs only on those rows; when it rejects enough of them that
/// fewer than `depth` remain, the rows beyond `t` that pass are selected
/// from. Pushing the kept rows into the (not yet full) [`TopK`] costs O(1)
/// on average: they arrive in row order, not sorted, so a new entry
/// rarely sifts up.
fn binary_candidates(
    qb: &[u64],
    bits: &[u64],
    rows: std::ops::Range<usize>,
    depth: usize,
    passes: impl Fn(usize) -> bool,
) -> TopK {
    let w = qb.len();
    let mut top = TopK::new(depth);
    let rows = rows.start..rows.end.min(bits.len() / w.max(1));
    if depth == 0 || rows.is_empty() || w == 0 {
        return top;
    }
    let mut dist = vec![0u32; rows.len()];
    crate::distance::hamming_rows(qb, &bits[rows.start * w..rows.end * w], &mut dist);
    let mut hist = vec![0u32; 64 * w + 1];
    for &d in &dist {
        hist[d as usize] += 1;
    }
    // Smallest `t` with at least `depth` rows at distance <= t (the last
    // bin when there are fewer rows); `cum` ends as their count.
    let mut t = hist.len() - 1;
    let mut cum = 0usize;
    for (i, &h) in hist.iter().enumerate() {
        cum += h as usize;
        if cum >= depth {
            t = i;
            break;
        }
    }
    // Keys `distance << 32 | row`: their order is the TopK's (lower
    // distance, then lower row, is better).
    let key = |d: u32, r: usize| (d as u64) << 32 | r as u64;
    let mut kept: Vec<u64> = Vec::with_capacity(depth.min(rows.len()));
    let mut ties: Vec<u64> = Vec::new();
    let t = t as u32;
    // The rows at or below `t` (about `depth` of them) first, without a
    // branch per row: an unpredictable `d <= t` test cost more than the
    // Hamming distances.
    let mut near = vec![0u32; cum + 1];
    let (mut m, last) = (0, cum);
    for (i, &d) in dist.iter().enumerate() {
        near[m.min(last)] = i as u32;
        m += (d <= t) as usize;
    }
    for &i in &near[..m] {
        let (d, r) = (dist[i as usize], rows.start + i as usize);
        if d < t {
            if passes(r) {
                kept.push(key(d, r));
            }
        } else if d == t && ties.len() < depth && passes(r) {
            ties.push(key(d, r));
        }
    }
    let room = depth - kept.len().min(depth);
    kept.extend(ties.iter().take(room));
    if kept.len() < depth {
        // The filter rejected rows up to `t`: select from those beyond.
        let need = depth - kept.len();
        let mut rest: Vec<u64> = dist
            .iter()
            .enumerate()
            .filter(|&(i, &d)| d > t && passes(rows.start + i))
            .map(|(i, &d)| key(d, rows.start + i))
            .collect();
        if rest.len() > need {
            rest.select_nth_unstable(need - 1);
            rest.truncate(need);
        }
        kept.extend(rest);
    }
    for k in kept {
        top.push(-((k >> 32) as f32), k as u32);
    }
    top
}

/// Appends the code of `v` as a new last row.
fn append_code(store: &mut Codes, dim: usize, v: &[f32]) {
    let slot = match store {
        Codes::Int8 { codes, norms2, .. } => {
            codes.resize(codes.len() + dim, 0);
            norms2.push(0.0);
            norms2.len() - 1
        }
        Codes::Binary { words, bits, .. } => {
            bits.resize(bits.len() + *words, 0);
            bits.len() / *words - 1
        }
    };
    encode_into(store, dim, slot, v);
}

/// Writes the code of `v` at `slot` (and for int8 its ‖x̂‖²).
fn encode_into(store: &mut Codes, d: usize, slot: usize, v: &[f32]) {
    match store {
        Codes::Int8 {
            lo,
            step,
            codes,
            norms2,
        } => {
            let mut n2 = 0.0f32;
            for (i, (c, x)) in codes[slot * d..(slot + 1) * d]
                .iter_mut()
                .zip(v)
                .enumerate()
            {
                *c = if step[i] > 0.0 {
                    ((x - lo[i]) / step[i]).round().clamp(0.0, 255.0) as u8
                } else {
                    0
                };
                let xh = lo[i] + step[i] * *c as f32;
                n2 += xh * xh;
            }
            norms2[slot] = n2;
        }
        Codes::Binary { mid, words, bits } => {
            let w = *words;
            pack_bits(v, mid, &mut bits[slot * w..(slot + 1) * w]);
        }
    }
}

/// Largest |component| of the i16 query: 2¹⁴ − 1, lowered so that
/// `dim · 255 · max` fits an i32 and the integer sum cannot overflow
/// (full scale up to 513 dimensions, coarser beyond; past 8.4M dimensions
/// the sum may wrap, which costs recall, never exactness or safety).
fn int8_query_max(dim: usize) -> f32 {
    let limit = i32::MAX as usize / (255 * dim.max(1));
    limit.clamp(1, 16_383) as f32
}

/// Bit `i` of `out` is `v[i] > mid[i]`, little-endian within each word.
fn pack_bits(v: &[f32], mid: &[f32], out: &mut [u64]) {
    out.iter_mut().for_each(|w| *w = 0);
    for (i, (x, m)) in v.iter().zip(mid).enumerate() {
        if x > m {
            out[i / 64] |= 1 << (i % 64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Int8 codes decode to within half a step of the row, per dimension,
    /// for rows inside the trained range; binary bits follow the means.
    #[test]
    fn codes_decode_close_to_the_rows() {
        let d = 70;
        let mut next = crate::testutil::uniform(3);
        let rows: Vec<f32> = (0..50 * d).map(|_| next()).collect();
        let q = Quantized::from_rows(
            Kind::Int8,
            d,
            Metric::Dot,
            rows.clone(),
            FullRows::default(),
        )
        .unwrap();
        let Codes::Int8 {
            lo, step, codes, ..
        } = &q.book.codes
        else {
            panic!("int8 codes expected")
        };
        for (j, x) in rows.iter().enumerate() {
            let i = j % d;
            let xh = lo[i] + step[i] * codes[j] as f32;
            assert!((xh - x).abs() <= step[i] * 0.5 + 1e-6, "dim {i}");
        }
        let b = Quantized::from_rows(
            Kind::Binary,
            d,
            Metric::Dot,
            rows.clone(),
            FullRows::default(),
        )
        .unwrap();
        let Codes::Binary { mid, words, bits } = &b.book.codes else {
            panic!("binary codes expected")
        };
        assert_eq!(*words, 2);
        for (j, x) in rows.iter().enumerate() {
            let (r, i) = (j / d, j % d);
            let bit = bits[r * words + i / 64] >> (i % 64) & 1 == 1;
            assert_eq!(bit, *x > mid[i]);
        }
    }

    /// After pushes, in-place updates and swap deletes every row's code is
    /// still the code of its full row under the current parameters (a
    /// stale code would only lower recall, which the rescore hides).
    #[test]
    fn codes_follow_updates_and_swap_deletes() {
        let d = 70;
        let mut next = crate::testutil::uniform(5);
        for kind in [Kind::Int8, Kind::Binary] {
            let mut q = Quantized::new(kind, d, Metric::L2, FullRows::default());
            for _ in 0..40 {
                let v: Vec<f32> = (0..d).map(|_| next()).collect();
                q.push(&v).unwrap();
            }
            q.maybe_retrain();
            for step in 0..30 {
                let v: Vec<f32> = (0..d).map(|_| next()).collect();
                match step % 3 {
                    0 => q.set(step % q.rows(), &v),
                    1 => q.swap_remove((step * 7) % q.rows()),
                    _ => q.push(&v).unwrap(),
                }
            }
            let mut fresh = q.clone();
            let full = fresh.full.as_slice().to_vec();
            for (r, row) in full.chunks_exact(d).enumerate() {
                fresh.book.set(r, row);
            }
            match (&q.book.codes, &fresh.book.codes) {
                (
                    Codes::Int8 {
                        codes: a,
                        norms2: na,
                        ..
                    },
                    Codes::Int8 {
                        codes: b,
                        norms2: nb,
                        ..
                    },
                ) => {
                    assert_eq!(a, b);
                    assert_eq!(na, nb);
                    assert_eq!(a.len(), q.rows() * d);
                }
                (Codes::Binary { bits: a, .. }, Codes::Binary { bits: b, .. }) => {
                    assert_eq!(a, b);
                    assert_eq!(a.len(), q.rows() * 2);
                }
                _ => panic!("kinds differ"),
            }
        }
    }

    /// The histogram selection keeps exactly the rows, and scores, that a
    /// [`TopK`] fed every passing row of the range keeps (the scan before
    /// it): few dimensions (7: distances 0..=7, ties everywhere) and
    /// several words, depths below, at and beyond the range, sub-ranges,
    /// and filters that reject the cut-off's rows (the fallback past `t`)
    /// or everything.
    #[test]
    fn binary_selection_equals_a_topk_over_every_row() {
        let mut next = crate::testutil::uniform(11);
        let n = 300;
        let filters: [&dyn Fn(usize) -> bool; 4] =
            [&|_| true, &|r| r % 3 != 0, &|r| r % 7 == 0, &|_| false];
        for d in [7, 64, 70, 384] {
            let rows: Vec<f32> = (0..n * d).map(|_| next()).collect();
            let q = Quantized::from_rows(Kind::Binary, d, Metric::Dot, rows, FullRows::default())
                .unwrap();
            let Codes::Binary { mid, words, bits } = &q.book.codes else {
                panic!("binary codes expected")
            };
            for _ in 0..3 {
                let query: Vec<f32> = (0..d).map(|_| next()).collect();
                let mut qb = vec![0u64; *words];
                pack_bits(&query, mid, &mut qb);
                for depth in [0, 1, 5, 37, 200, 299, 300, 301, 1000] {
                    for range in [0..n, 13..250, 250..250, 299..300] {
                        for passes in filters {
                            let mut want = TopK::new(depth);
                            for r in range.clone().filter(|&r| passes(r)) {
                                let row = &bits[r * words..(r + 1) * words];
                                let h: u32 =
                                    qb.iter().zip(row).map(|(a, b)| (a ^ b).count_ones()).sum();
                                want.push(-(h as f32), r as u32);
                            }
                            let got = q.candidates(&query, range.clone(), depth, passes);
                            let key = |t: TopK| -> Vec<(u32, u32)> {
                                t.into_sorted()
                                    .iter()
                                    .map(|c| (c.score.to_bits(), c.slot))
                                    .collect()
                            };
                            assert_eq!(key(got), key(want), "d={d} depth={depth} {range:?}");
                        }
                    }
                }
            }
        }
    }

    /// Retraining happens when the rows double, not on every batch.
    #[test]
    fn retrains_when_rows_double() {
        let d = 8;
        let mut q = Quantized::new(Kind::Int8, d, Metric::Dot, FullRows::default());
        q.push(&[1.0; 8]).unwrap();
        q.maybe_retrain();
        assert_eq!(q.book.trained_on, 1);
        q.push(&[2.0; 8]).unwrap();
        q.push(&[3.0; 8]).unwrap();
        q.maybe_retrain();
        assert_eq!(q.book.trained_on, 3);
        q.push(&[0.0; 8]).unwrap();
        q.maybe_retrain();
        assert_eq!(q.book.trained_on, 3, "4 rows < 2 × 3");
        // Out-of-range rows clamp to the trained range meanwhile.
        let Codes::Int8 { codes, .. } = &q.book.codes else {
            panic!()
        };
        assert_eq!(&codes[3 * d..], &[0u8; 8]);
    }
}
