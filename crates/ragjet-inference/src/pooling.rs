//! Pooling of token states into one sentence vector, as sentence-transformers'
//! `Pooling` module does it.

use serde::Deserialize;

/// How token states are combined into one vector.
///
/// Several modes may be active at once (sentence-transformers concatenates
/// them, in the order of this enum's variants).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_inference::{Device, Embedder, EmbedderOptions, PoolingMode};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-cross-encoder");
/// let load = |pooling: Vec<PoolingMode>| {
///     Embedder::load_with(dir, EmbedderOptions { device: Device::Cpu, pooling: Some(pooling), ..Default::default() })
/// };
/// let mean = load(vec![PoolingMode::Mean])?;
/// let both = load(vec![PoolingMode::Cls, PoolingMode::Mean])?;
/// assert_eq!(mean.pooling(), [PoolingMode::Mean]);
/// // Several modes are concatenated, as sentence-transformers does.
/// assert_eq!(both.dim(), 2 * mean.dim());
/// let v = both.embed_one("pooled twice")?;
/// assert_eq!(v.len(), both.dim());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolingMode {
    /// The first token's state (`[CLS]`); BGE models use it.
    Cls,
    /// The element-wise maximum over the text's tokens.
    Max,
    /// The mean over the text's tokens; MiniLM and E5 models use it.
    Mean,
    /// The sum over the text's tokens divided by the square root of their count.
    MeanSqrtLen,
}

impl PoolingMode {
    /// Canonical order in which sentence-transformers concatenates modes.
    pub(crate) fn canonical_order(modes: &mut Vec<PoolingMode>) {
        modes.sort_by_key(|m| match m {
            PoolingMode::Cls => 0,
            PoolingMode::Max => 1,
            PoolingMode::Mean => 2,
            PoolingMode::MeanSqrtLen => 3,
        });
        modes.dedup();
    }
}

/// `1_Pooling/config.json` as sentence-transformers writes it.
#[derive(Debug, Deserialize, Default)]
pub(crate) struct PoolingConfigFile {
    #[serde(default)]
    pub pooling_mode_cls_token: bool,
    #[serde(default)]
    pub pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_max_tokens: bool,
    #[serde(default)]
    pub pooling_mode_mean_sqrt_len_tokens: bool,
    #[serde(default)]
    pub pooling_mode_weightedmean_tokens: bool,
    #[serde(default)]
    pub pooling_mode_lasttoken: bool,
    /// Newer sentence-transformers versions write a single mode name instead.
    #[serde(default)]
    pub pooling_mode: Option<String>,
}

impl PoolingConfigFile {
    /// The active modes, or the name of the first unsupported one.
    pub fn modes(&self) -> Result<Vec<PoolingMode>, String> {
        if self.pooling_mode_weightedmean_tokens {
            return Err("weighted-mean pooling".into());
        }
        if self.pooling_mode_lasttoken {
            return Err("last-token pooling".into());
        }
        let mut modes = Vec::new();
        if let Some(name) = &self.pooling_mode {
            modes.push(match name.as_str() {
                "cls" => PoolingMode::Cls,
                "mean" => PoolingMode::Mean,
                "max" => PoolingMode::Max,
                "mean_sqrt_len_tokens" => PoolingMode::MeanSqrtLen,
                other => return Err(format!("pooling mode {other:?}")),
            });
        }
        for (on, mode) in [
            (self.pooling_mode_cls_token, PoolingMode::Cls),
            (self.pooling_mode_max_tokens, PoolingMode::Max),
            (self.pooling_mode_mean_tokens, PoolingMode::Mean),
            (
                self.pooling_mode_mean_sqrt_len_tokens,
                PoolingMode::MeanSqrtLen,
            ),
        ] {
            if on {
                modes.push(mode);
            }
        }
        PoolingMode::canonical_order(&mut modes);
        if modes.is_empty() {
            return Err("a pooling config with no mode enabled".into());
        }
        Ok(modes)
    }
}

/// Pools the first `len` rows of `states` (row-major, `hidden` columns) into
/// `out`, which holds `modes.len() * hidden` values.
///
/// Only the text's own tokens are read, so padding never leaks into the
/// result, whatever else shares the batch.
pub(crate) fn pool_into(
    states: &[f32],
    len: usize,
    hidden: usize,
    modes: &[PoolingMode],
    out: &mut [f32],
) {
    debug_assert_eq!(out.len(), modes.len() * hidden);
    if len == 0 {
        // No tokens, nothing to pool: a zero vector, as sentence-transformers'
        // mean pooling gives (its token count is clamped away from zero).
        out.fill(0.0);
        return;
    }
    let tokens = &states[..len * hidden];
    for (mode, dst) in modes.iter().zip(out.chunks_exact_mut(hidden)) {
        match mode {
            PoolingMode::Cls => dst.copy_from_slice(&tokens[..hidden]),
            PoolingMode::Max => {
                dst.copy_from_slice(&tokens[..hidden]);
                for row in tokens.chunks_exact(hidden).skip(1) {
                    for (d, &x) in dst.iter_mut().zip(row) {
                        *d = d.max(x);
                    }
                }
            }
            PoolingMode::Mean | PoolingMode::MeanSqrtLen => {
                dst.fill(0.0);
                for row in tokens.chunks_exact(hidden) {
                    for (d, &x) in dst.iter_mut().zip(row) {
                        *d += x;
                    }
                }
                let div = if *mode == PoolingMode::Mean {
                    len as f32
                } else {
                    (len as f32).sqrt()
                };
                dst.iter_mut().for_each(|d| *d /= div);
            }
        }
    }
}

/// Scales `v` to unit L2 norm; a zero vector stays zero (as torch's
/// `normalize` with its epsilon leaves it).
pub(crate) fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    // Three tokens of width 2, plus one padding row that must be ignored.
    const STATES: [f32; 8] = [1.0, -2.0, 3.0, 4.0, -5.0, 0.5, 99.0, 99.0];

    fn pool(modes: &[PoolingMode]) -> Vec<f32> {
        let mut out = vec![0.0; modes.len() * 2];
        pool_into(&STATES, 3, 2, modes, &mut out);
        out
    }

    #[test]
    fn each_mode_matches_hand_computation() {
        assert_eq!(pool(&[PoolingMode::Cls]), vec![1.0, -2.0]);
        assert_eq!(pool(&[PoolingMode::Max]), vec![3.0, 4.0]);
        assert_eq!(pool(&[PoolingMode::Mean]), vec![-1.0 / 3.0, 2.5 / 3.0]);
        let s = 3f32.sqrt();
        assert_eq!(pool(&[PoolingMode::MeanSqrtLen]), vec![-1.0 / s, 2.5 / s]);
    }

    #[test]
    fn modes_concatenate_in_canonical_order() {
        let cfg = PoolingConfigFile {
            pooling_mode_mean_tokens: true,
            pooling_mode_cls_token: true,
            ..Default::default()
        };
        let modes = cfg.modes().unwrap();
        assert_eq!(modes, vec![PoolingMode::Cls, PoolingMode::Mean]);
        assert_eq!(pool(&modes), vec![1.0, -2.0, -1.0 / 3.0, 2.5 / 3.0]);
    }

    #[test]
    fn unsupported_or_empty_configs_are_rejected() {
        let weighted = PoolingConfigFile {
            pooling_mode_weightedmean_tokens: true,
            ..Default::default()
        };
        assert!(weighted.modes().is_err());
        assert!(PoolingConfigFile::default().modes().is_err());
    }

    #[test]
    fn normalize_gives_unit_norm_and_keeps_zero() {
        let mut v = vec![3.0, 4.0];
        l2_normalize(&mut v);
        assert_eq!(v, vec![0.6, 0.8]);
        let mut z = vec![0.0, 0.0];
        l2_normalize(&mut z);
        assert_eq!(z, vec![0.0, 0.0]);
    }
}
