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

use std::arch::asm;
use std::arch::x86_64::{__cpuid, __cpuid_count, _xgetbv};
use std::sync::OnceLock;

/// Rows of one tile, and bf16 pairs (words) per tile row.
pub(crate) const TILE: usize = 16;
/// Columns of a weight panel (two tiles), as packed by `linear.rs`.
const PANEL: usize = 32;

/// Whether the CPU has AMX-TILE and AMX-BF16, the OS saves the tile state,
/// this process may use it, and `RAGJET_AMX` does not say `off`.
pub(crate) fn available() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        if std::env::var("RAGJET_AMX").is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
            return false;
        }
        // SAFETY: cpuid exists on every x86-64 CPU; xgetbv only runs once
        // cpuid says the OS enabled it (OSXSAVE); the syscall only asks
        // for a permission and touches no memory of ours.
        unsafe {
            let leaf7 = __cpuid_count(7, 0);
            let (tile, bf16) = (leaf7.edx & (1 << 24) != 0, leaf7.edx & (1 << 22) != 0);
            let osxsave = __cpuid(1).ecx & (1 << 27) != 0;
            if !(tile && bf16 && osxsave) {
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
    let mut sums = Sums([0.0; 2 * TILE * PANEL]);
    asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly));
    for j0 in (0..n).step_by(PANEL) {
        let width = (n - j0).min(PANEL);
        let panel = b.as_ptr().add(j0 / PANEL * depth * PANEL);
        for i0 in (0..m).step_by(2 * TILE) {
            let rows = (m - i0).min(2 * TILE);
            block(
                a.as_ptr().add(i0 * depth),
                depth,
                panel,
                &mut sums,
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

/// Two row tiles × one panel of f32 sums.
#[repr(C, align(64))]
struct Sums([f32; 2 * TILE * PANEL]);

/// Sums over the whole depth for 16 (or, with `two`, 32) rows of `a` and
/// the 32 columns of `panel`, stored into `sums` (rows 32 values apart).
///
/// # Safety
/// The tile configuration is loaded; `a` has `depth` words a row for the
/// rows read; `panel` has `depth` rows of 32 words.
#[inline]
unsafe fn block(a: *const u32, depth: usize, panel: *const u32, sums: &mut Sums, two: bool) {
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
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
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
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                a0 = in(reg) a0,
                b0 = in(reg) b0,
                b1 = in(reg) b0.add(TILE),
                sa = in(reg) a_stride,
                sb = in(reg) b_stride,
                options(nostack, readonly)
            );
        }
    }
    let out = sums.0.as_mut_ptr();
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
