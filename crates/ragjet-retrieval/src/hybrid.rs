//! Fusion of vector and keyword results, and MMR diversification.

use std::collections::HashMap;

use crate::distance::Metric;
use crate::error::{Result, RetrievalError};
use crate::types::Hit;

fn sort_hits(mut hits: Vec<Hit>, top_k: usize) -> Vec<Hit> {
    hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    hits.truncate(top_k);
    hits
}

/// Reciprocal-rank fusion: each list contributes `1 / (k_rrf + rank)` (rank
/// from 1) to every id it holds; `k_rrf` is usually 60. Ties are broken by id.
///
/// # Examples
///
/// ```
/// use ragjet_retrieval::{reciprocal_rank_fusion, Hit};
///
/// let hit = |id: &str, score| Hit { id: id.into(), score };
/// let vector = [hit("a", 0.9), hit("b", 0.8), hit("c", 0.7)];
/// let keyword = [hit("c", 12.0), hit("a", 9.0)];
/// // Ranks, not scores, are fused: the two lists' scales never need to agree.
/// let fused = reciprocal_rank_fusion(&[&vector, &keyword], 60.0, 2);
/// assert_eq!(fused.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
/// assert!((fused[0].score - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-6);
/// ```
pub fn reciprocal_rank_fusion(lists: &[&[Hit]], k_rrf: f32, top_k: usize) -> Vec<Hit> {
    let mut acc: HashMap<&str, f32> = HashMap::new();
    for list in lists {
        for (rank, h) in list.iter().enumerate() {
            *acc.entry(h.id.as_str()).or_default() += 1.0 / (k_rrf + rank as f32 + 1.0);
        }
    }
    let hits = acc
        .into_iter()
        .map(|(id, score)| Hit {
            id: id.to_string(),
            score,
        })
        .collect();
    sort_hits(hits, top_k)
}

/// Min-max normalisation to [0, 1]; a list whose scores are all equal maps
/// to 1.0 (every member is "the best" of that list).
fn min_max(hits: &[Hit]) -> HashMap<&str, f32> {
    let lo = hits.iter().map(|h| h.score).fold(f32::INFINITY, f32::min);
    let hi = hits
        .iter()
        .map(|h| h.score)
        .fold(f32::NEG_INFINITY, f32::max);
    hits.iter()
        .map(|h| {
            let s = if hi > lo {
                (h.score - lo) / (hi - lo)
            } else {
                1.0
            };
            (h.id.as_str(), s)
        })
        .collect()
}

/// Alpha-weighted fusion of min-max-normalised scores, as LlamaIndex's
/// hybrid mode defines it: `alpha * vector + (1 − alpha) * keyword`, an id
/// missing from a list scoring 0 there. `alpha = 1` is vector search only
/// and `alpha = 0` keyword search only: a list with weight 0 contributes no
/// ids at all.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{alpha_fusion, Hit};
///
/// let hit = |id: &str, score| Hit { id: id.into(), score };
/// let vector = [hit("a", 0.9), hit("b", 0.5)];
/// let keyword = [hit("b", 20.0), hit("c", 10.0)];
/// // 70 % vector, 30 % keyword, each list min-max normalised first.
/// let fused = alpha_fusion(&vector, &keyword, 0.7, 3)?;
/// assert_eq!(fused[0].id, "a"); // 0.7 · 1.0
/// assert!((fused[0].score - 0.7).abs() < 1e-6);
/// assert_eq!(fused[1].id, "b"); // 0.7 · 0.0 + 0.3 · 1.0
/// // alpha = 1 is vector search alone: keyword-only ids do not appear.
/// assert!(alpha_fusion(&vector, &keyword, 1.0, 3)?.iter().all(|h| h.id != "c"));
/// assert!(alpha_fusion(&vector, &keyword, 1.5, 3).is_err());
/// # Ok(()) }
/// ```
pub fn alpha_fusion(vector: &[Hit], keyword: &[Hit], alpha: f32, top_k: usize) -> Result<Vec<Hit>> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(RetrievalError::InvalidOption(format!(
            "alpha must be in [0, 1], got {alpha}"
        )));
    }
    let v = min_max(vector);
    let kw = min_max(keyword);
    let mut acc: HashMap<&str, f32> = HashMap::new();
    if alpha > 0.0 {
        for (id, s) in &v {
            *acc.entry(id).or_default() += alpha * s;
        }
    }
    if alpha < 1.0 {
        for (id, s) in &kw {
            *acc.entry(id).or_default() += (1.0 - alpha) * s;
        }
    }
    let hits = acc
        .into_iter()
        .map(|(id, score)| Hit {
            id: id.to_string(),
            score,
        })
        .collect();
    Ok(sort_hits(hits, top_k))
}

/// Maximal marginal relevance: picks up to `k` candidates, each step taking
/// the one maximising `lambda * sim(query, c) − (1 − lambda) * max sim(c, chosen)`.
/// `lambda = 1` is plain relevance order, lower values favour diversity.
/// Returns indexes into `candidates`, in selection order (ties: lower index).
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{mmr, Metric};
///
/// let query = [1.0, 0.0];
/// let candidates = vec![vec![1.0, 0.0], vec![0.99, 0.01], vec![0.7, 0.7]];
/// // Pure relevance keeps the near-duplicate second...
/// assert_eq!(mmr(&query, &candidates, 1.0, 2, Metric::Dot)?, [0, 1]);
/// // ...while a diversity-leaning lambda prefers the different third passage.
/// assert_eq!(mmr(&query, &candidates, 0.3, 2, Metric::Dot)?, [0, 2]);
/// # Ok(()) }
/// ```
pub fn mmr(
    query: &[f32],
    candidates: &[Vec<f32>],
    lambda: f32,
    k: usize,
    metric: Metric,
) -> Result<Vec<usize>> {
    if !(0.0..=1.0).contains(&lambda) {
        return Err(RetrievalError::InvalidOption(format!(
            "lambda must be in [0, 1], got {lambda}"
        )));
    }
    let dim = query.len();
    let mut q = query.to_vec();
    metric.prepare(&mut q, dim)?;
    let mut cs = Vec::with_capacity(candidates.len());
    for c in candidates {
        let mut c = c.clone();
        metric.prepare(&mut c, dim)?;
        cs.push(c);
    }
    let relevance: Vec<f32> = cs.iter().map(|c| metric.score(&q, c)).collect();
    let mut max_sim = vec![f32::NEG_INFINITY; cs.len()];
    let mut chosen = vec![false; cs.len()];
    let mut out = Vec::with_capacity(k.min(cs.len()));
    while out.len() < k.min(cs.len()) {
        let mut best: Option<(usize, f32)> = None;
        for i in 0..cs.len() {
            if chosen[i] {
                continue;
            }
            let penalty = if out.is_empty() { 0.0 } else { max_sim[i] };
            let s = lambda * relevance[i] - (1.0 - lambda) * penalty;
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        let Some((pick, _)) = best else { break };
        chosen[pick] = true;
        out.push(pick);
        for i in 0..cs.len() {
            if !chosen[i] {
                max_sim[i] = max_sim[i].max(metric.score(&cs[i], &cs[pick]));
            }
        }
    }
    Ok(out)
}
