//! bf16 products on Intel AMX tiles, for the encoder's dense layers.
//!
//! Why: on Xeons since Sapphire Rapids one `tdpbf16ps` multiplies a
//! 16 × 32 by a 32 × 16 tile of bf16 pairs (8,192 multiply-adds into
//! f32), an order of magnitude more per cycle than `vdpbf16ps`, and the
//! weight panels that `linear.rs` packs for `vdpbf16ps` (32 columns of
//! bf16 pairs, a pair per word) are already the operand layout AMX reads:
//! two 16-column tiles per panel. Only the kernel and a zero padding of
//! the inner dimension to whole tiles differ. Sums are f32 of bf16
//! products, like the AVX-512 BF16 path, so the vectors match it to f32
//! rounding (checked against an f64 product in `linear.rs`'s tests).
//!
//! Linux asks a process to request the tiles' 8 KB register state before
//! its first use (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`available`] does
//! that once. Stable Rust has no AMX intrinsics, so the instructions are
//! written as `asm!`; nothing else in the process uses the tile registers.
//! `RAGJET_AMX=off` turns the path off (to compare, or on a kernel that
//! misbehaves).
//!
//! The int8 products (`linear.rs`'s `Products::Int8`) run on `tdpbusd`
//! (AMX-INT8, its own CPUID bit) the same way: u8 inputs × int8 weights in
//! groups of four, 16 × 64-byte tiles, twice the multiply-adds of
//! `tdpbf16ps` per instruction. Their weight panels are the `vpdpbusd`
//! ones with the inner dimension padded to whole tiles (16 words of four
//! weights); the i32 sums are exact, and the finish repeats the f32
//! operations of the other int8 paths, so the vectors are bit-identical
//! to theirs (tested in `linear.rs`).

use std::arch::asm;
use std::arch::x86_64::*;
use std::sync::OnceLock;

use crate::linear::avx512::PanelColumns;
use crate::linear::{ColumnsRef, RowQuant};

/// Rows of one tile, and bf16 pairs (words) per tile row.
pub(crate) const TILE: usize = 16;
/// Columns of a weight panel (two tiles), as packed by `linear.rs`.
const PANEL: usize = 32;

/// Whether the CPU has AMX-TILE and AMX-BF16, the OS saves the tile state,
/// this process may use it, and `RAGJET_AMX` does not say `off`.
pub(crate) fn available() -> bool {
    tiles_usable() && leaf7_edx() & (1 << 22) != 0
}

/// The same for AMX-INT8 (`tdpbusd`), which has a CPUID bit of its own.
pub(crate) fn int8_available() -> bool {
    tiles_usable() && leaf7_edx() & (1 << 25) != 0
}

/// CPUID.(EAX=7, ECX=0):EDX, where the AMX feature bits are (22 BF16, 24
/// TILE, 25 INT8).
fn leaf7_edx() -> u32 {
    __cpuid_count(7, 0).edx
}

/// Whether the CPU has AMX-TILE, the OS saves the tile state, this process
/// may use it, and `RAGJET_AMX` does not say `off`: what every AMX kind
/// needs besides its own CPUID bit. Asked once.
fn tiles_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        if std::env::var("RAGJET_AMX").is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
            return false;
        }
        // SAFETY: cpuid exists on every x86-64 CPU; xgetbv only runs once
        // cpuid says the OS enabled it (OSXSAVE); the syscall only asks
        // for a permission and touches no memory of ours.
        unsafe {
            let tile = leaf7_edx() & (1 << 24) != 0;
            let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
            if !(tile && osxsave) {
                return false;
            }
            // XCR0 bits 17 and 18: the OS manages XTILECFG and XTILEDATA.
            if xcr0() & (0b11 << 17) != 0b11 << 17 {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            ) == 0
        }
    })
}

#[target_feature(enable = "xsave")]
unsafe fn xcr0() -> u64 {
    _xgetbv(0)
}

/// The tile configuration every call loads: eight tiles of 16 rows × 64
/// bytes (tmm0–3 sums, tmm4–5 input rows, tmm6–7 weight columns).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

const CONFIG: TileConfig = {
    let mut c = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [0; 16],
        rows: [0; 16],
    };
    let mut t = 0;
    while t < 8 {
        c.bytes_per_row[t] = 64;
        c.rows[t] = TILE as u8;
        t += 1;
    }
    c
};

/// `c[m × n] = a · b` in f32, `c`'s rows `ldc` apart.
///
/// `a` is row-major bf16 pairs, `depth` words a row, with rows from `m` up
/// to the next multiple of 16 present and zero; `b` is `n.div_ceil(32)`
/// panels of `depth` rows × 32 words (zero past `n`); `depth` is a multiple
/// of 16 (both padded with zeros past the real inner dimension).
///
/// # Safety
/// [`available`] returned true; `c` points at `m` rows of `n` writable
/// values, `ldc` apart. (`a` and `b` are checked here.)
pub(crate) unsafe fn bf16_tiles(
    m: usize,
    n: usize,
    depth: usize,
    a: &[u32],
    b: &[u32],
    c: *mut f32,
    ldc: usize,
) {
    assert!(depth.is_multiple_of(TILE), "depth in whole tiles");
    assert!(a.len() >= m.next_multiple_of(TILE) * depth, "tile rows");
    assert!(b.len() >= n.div_ceil(PANEL) * depth * PANEL, "tile panels");
    if m == 0 || n == 0 || depth == 0 {
        return;
    }
    let mut sums = Sums([0.0f32; 2 * TILE * PANEL]);
    asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
    for j0 in (0..n).step_by(PANEL) {
        let width = (n - j0).min(PANEL);
        let panel = b.as_ptr().add(j0 / PANEL * depth * PANEL);
        for i0 in (0..m).step_by(2 * TILE) {
            let rows = (m - i0).min(2 * TILE);
            bf16_block(
                a.as_ptr().add(i0 * depth),
                depth,
                panel,
                sums.0.as_mut_ptr().cast(),
                rows > TILE,
            );
            for r in 0..rows {
                std::ptr::copy_nonoverlapping(
                    sums.0.as_ptr().add(r * PANEL),
                    c.add((i0 + r) * ldc + j0),
                    width,
                );
            }
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// int8 products on `tdpbusd`: `c[m × n] = a · b`, scaled back to f32.
///
/// `a` is row-major words of four u8 inputs, `depth` words a row, rows
/// from `m` up to the next multiple of 16 present (their values are never
/// stored), row `r` quantized as `rows[r]` says; `b` is `n.div_ceil(32)`
/// panels of `depth` rows × 32 words of four int8 weights (zero past `n`
/// and past the real inner dimension, so that whatever the padding of `a`
/// holds adds nothing); `scale` and `sum` are the columns' scales and sums
/// of int8 weights, whole panels of them, `outlier` the weights of the
/// layer's outlier channel if it has one; `depth` is a multiple of 16.
/// Each output is `(Σ − zero · sum) as f32 · (row scale · column scale)`
/// plus `outlier value · weight`, the operations of `linear.rs`'s
/// `vpdpbusd` tiles and emulation in their order: the i32 sums are exact,
/// so every path gives the same bits.
///
/// # Safety
/// [`int8_available`] returned true and the CPU has AVX-512F; `c` points at
/// `m` rows of `n` writable values, `ldc` apart. (The slices are checked
/// here.)
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
pub(crate) unsafe fn int8_tiles(
    m: usize,
    n: usize,
    depth: usize,
    a: &[u32],
    rows: &[RowQuant],
    b: &[u32],
    columns: ColumnsRef<'_>,
    c: *mut f32,
    ldc: usize,
) {
    let panels = n.div_ceil(PANEL);
    assert!(depth.is_multiple_of(TILE), "depth in whole tiles");
    assert!(
        a.len() >= m.next_multiple_of(TILE) * depth && rows.len() >= m,
        "tile rows"
    );
    assert!(b.len() >= panels * depth * PANEL, "tile panels");
    assert!(columns.cover(panels * PANEL), "tile columns");
    if m == 0 || n == 0 || depth == 0 {
        return;
    }
    // Two buffers of sums: a block's sums are finished while the tile unit
    // works on the next block, rather than the finish waiting for each
    // block's tile stores (which stalled it, measured).
    let mut sums = [
        Sums([0i32; 2 * TILE * PANEL]),
        Sums([0i32; 2 * TILE * PANEL]),
    ];
    let mut pending: Option<Block> = None;
    asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
    for j0 in (0..n).step_by(PANEL) {
        let panel = b.as_ptr().add(j0 / PANEL * depth * PANEL);
        for i0 in (0..m).step_by(2 * TILE) {
            let block = Block {
                i0,
                j0,
                rows: (m - i0).min(2 * TILE),
                buffer: pending.map_or(0, |p| p.buffer ^ 1),
            };
            int8_block(
                a.as_ptr().add(i0 * depth),
                depth,
                panel,
                sums[block.buffer].0.as_mut_ptr().cast(),
                block.rows > TILE,
            );
            if let Some(p) = pending {
                finish_int8(&sums[p.buffer], p, n, rows, columns, c, ldc);
            }
            pending = Some(block);
        }
    }
    if let Some(p) = pending {
        finish_int8(&sums[p.buffer], p, n, rows, columns, c, ldc);
    }
    asm!("tilerelease", options(nostack, nomem));
}

/// One block of [`int8_tiles`]: rows `i0..i0 + rows` × the panel at `j0`,
/// its sums in buffer `buffer`.
#[derive(Clone, Copy)]
struct Block {
    i0: usize,
    j0: usize,
    rows: usize,
    buffer: usize,
}

/// `(Σ − zero · sum) as f32 · (row scale · column scale)` for `block`'s sums,
/// stored into `c`.
///
/// # Safety
/// As for [`int8_tiles`], whose checks cover the block.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn finish_int8(
    sums: &Sums<i32>,
    block: Block,
    n: usize,
    row_quants: &[RowQuant],
    columns: ColumnsRef<'_>,
    c: *mut f32,
    ldc: usize,
) {
    let Block { i0, j0, rows, .. } = block;
    let width = (n - j0).min(PANEL);
    let mask = if width >= PANEL {
        u32::MAX
    } else {
        (1u32 << width) - 1
    };
    let masks = [mask as __mmask16, (mask >> 16) as __mmask16];
    let columns = PanelColumns::load(columns, j0);
    for r in 0..rows {
        let rq = row_quants[i0 + r];
        let out = c.add((i0 + r) * ldc + j0);
        for (half, &mask) in masks.iter().enumerate() {
            let acc = _mm512_load_si512(sums.0.as_ptr().add(r * PANEL + half * TILE).cast());
            let y = columns.finish(acc, half, rq);
            // A fully masked store touches no memory: the pointer of an
            // absent second half is never dereferenced.
            _mm512_mask_storeu_ps(out.wrapping_add(half * TILE), mask, y);
        }
    }
}

/// Two row tiles × one panel of 4-byte sums (f32 for bf16, i32 for int8).
#[repr(C, align(64))]
struct Sums<T>([T; 2 * TILE * PANEL]);

/// Defines `$name`: sums over the whole depth for 16 (or, with `two`, 32)
/// rows of `a` and the 32 columns of `panel` with the tile instruction
/// `$op` (`tdpbf16ps` or `tdpbusd`, which read the same 16 × 64-byte
/// operand tiles), stored at `out` (rows 32 values apart).
macro_rules! tile_block {
    ($name:ident, $op:literal) => {
        /// # Safety
        /// The tile configuration is loaded and the CPU has the instruction;
        /// `a` has `depth` words a row for the rows read; `panel` has
        /// `depth` rows of 32 words; `out` has room for the rows × 32
        /// 4-byte sums.
        #[inline]
        unsafe fn $name(a: *const u32, depth: usize, panel: *const u32, out: *mut u32, two: bool) {
            let (a_stride, b_stride) = (depth * 4, PANEL * 4);
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            for s in (0..depth).step_by(TILE) {
                let (a0, b0) = (a.add(s), panel.add(s * PANEL));
                if two {
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        concat!($op, " tmm0, tmm4, tmm6"),
                        concat!($op, " tmm1, tmm4, tmm7"),
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        concat!($op, " tmm2, tmm5, tmm6"),
                        concat!($op, " tmm3, tmm5, tmm7"),
                        a0 = in(reg) a0,
                        a1 = in(reg) a0.add(TILE * depth),
                        b0 = in(reg) b0,
                        b1 = in(reg) b0.add(TILE),
                        sa = in(reg) a_stride,
                        sb = in(reg) b_stride,
                        options(nostack, readonly)
                    );
                } else {
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        concat!($op, " tmm0, tmm4, tmm6"),
                        concat!($op, " tmm1, tmm4, tmm7"),
                        a0 = in(reg) a0,
                        b0 = in(reg) b0,
                        b1 = in(reg) b0.add(TILE),
                        sa = in(reg) a_stride,
                        sb = in(reg) b_stride,
                        options(nostack, readonly)
                    );
                }
            }
            let stride = PANEL * 4;
            asm!(
                "tilestored [{c0} + {s}*1], tmm0",
                "tilestored [{c1} + {s}*1], tmm1",
                c0 = in(reg) out,
                c1 = in(reg) out.add(TILE),
                s = in(reg) stride,
                options(nostack)
            );
            if two {
                asm!(
                    "tilestored [{c0} + {s}*1], tmm2",
                    "tilestored [{c1} + {s}*1], tmm3",
                    c0 = in(reg) out.add(TILE * PANEL),
                    c1 = in(reg) out.add(TILE * PANEL + TILE),
                    s = in(reg) stride,
                    options(nostack)
                );
            }
        }
    };
}

tile_block!(bf16_block, "tdpbf16ps");
tile_block!(int8_block, "tdpbusd");
