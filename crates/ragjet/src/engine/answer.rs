//! The query pipeline: cleaning → caches → embedding → search →
//! postprocessing → reranking → cache store.

use std::time::Instant;

use ragjet_cache::{CacheValue, RetrievalQuery, Scope};
use ragjet_retrieval::{
    alpha_fusion, bm25, mmr, AnyIndex, Hit, MetadataFilters, Metric, VectorIndex,
};
use ragjet_telemetry::metrics::{self as m, QueryStatus};
use ragjet_telemetry::{spans, Outcome};
use serde::{Deserialize, Serialize};

use super::{
    Answer, CacheOutcome, Engine, EngineHit, QueryOptions, SearchMode, StageTimings, State,
    DEFAULT_NAMESPACE,
};
use crate::error::{Error, Result};
use crate::query::SearchModeHint;
use crate::queue::Priority;

/// A result as the retrieval and semantic caches keep it: chunk ids and
/// scores, final order. Text, metadata and spans are read back from the
/// index, which the version in every key guarantees still holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct CachedHits {
    hits: Vec<(String, f32)>,
}

impl CacheValue for CachedHits {
    const KIND: &'static str = "ragjet.engine.hits";
    const VERSION: u32 = 1;
}

/// `top_k` when neither the caller nor the intent rules set one.
const DEFAULT_TOP_K: usize = 10;

/// Passages packed into a context at most.
const CONTEXT_MAX_PASSAGES: usize = 5;
/// A passage cut shorter than this many tokens is left out of a context
/// that already has two.
const CONTEXT_MIN_PIECE: usize = 16;

/// A query after cleaning and intent.
pub(crate) struct Prepared {
    /// What is embedded, cached on and reranked against.
    pub text: String,
    /// What BM25 searches (the text plus synonyms).
    pub keyword_text: String,
    pub top_k: usize,
    pub mode: SearchMode,
}

/// Finite and within `lo..=hi`, else an input error naming the option.
fn check_range(name: &str, v: f32, lo: f32, hi: f32) -> Result<()> {
    if v.is_finite() && (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{name} must be within {lo}..={hi}, got {v}"
        )))
    }
}

impl Engine {
    /// Cleaning, expansion and intent; the caller's `top_k` and mode win
    /// over the intent's.
    fn prepare_query(&self, text: &str, options: &QueryOptions) -> Result<Prepared> {
        let pq = self.processor.process(text)?;
        let plan = pq.intent.map(|(_, plan)| plan);
        let top_k = options
            .top_k
            .or(plan.map(|p| p.top_k))
            .unwrap_or(DEFAULT_TOP_K)
            .min(self.config.query.max_top_k);
        let mode = options.mode.unwrap_or(match plan.map(|p| p.mode) {
            Some(SearchModeHint::Keyword) if self.config.bm25.enabled => SearchMode::Keyword,
            Some(SearchModeHint::Hybrid { alpha }) if self.config.bm25.enabled => {
                SearchMode::Hybrid { alpha }
            }
            _ => SearchMode::Vector,
        });
        Ok(Prepared {
            text: pq.text,
            keyword_text: pq.keyword_text,
            top_k,
            mode,
        })
    }

    /// Answers `text` with the best chunks of a namespace.
    ///
    /// Errors: [`Error::InvalidInput`] for an empty query, `top_k` or
    /// `rerank_top_n` of 0 or above `query.max_top_k`, a weight outside
    /// 0..=1 or NaN, an invalid filter, an unknown namespace;
    /// [`Error::Config`] for a keyword/hybrid query without BM25, reranking
    /// without a reranker, HyDE without a hook; [`Error::Overloaded`] when
    /// the model's queue refuses the query, or `[control]`'s rate limit
    /// or circuit breaker does (the [`Refusal`](crate::Refusal) says which).
    ///
    /// With `[control.experiment]` and a [`QueryOptions::user`], the
    /// user's variant's options replace the caller's and the answer names
    /// the variant; with `[control.routing]`, [`Answer::route`] holds the
    /// model chosen for the caller's LLM.
    pub fn query(&self, text: &str, options: &QueryOptions) -> Result<Answer> {
        let start = Instant::now();
        let ns = options.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE);
        let span = spans::query(ns, options.top_k.unwrap_or(0));
        // Rate limit and breaker first: a refused query costs nothing.
        let result = match self.controls.admit(super::controls::Call::Query, ns) {
            Ok(permit) => {
                let r = span.in_scope(|| self.answer_controlled(text, options, ns, start));
                super::controls::settle(permit, r.as_ref().err());
                r
            }
            Err(e) => Err(e),
        };
        let elapsed = start.elapsed();
        if let Ok(a) = &result {
            self.controls.record_variant(a, elapsed);
        }
        match &result {
            Ok(a) => {
                m::record_query(QueryStatus::Ok, elapsed);
                self.latency.record(elapsed, Outcome::Ok);
                spans::record_returned(&span, a.hits.len());
            }
            Err(e) => {
                m::record_query(QueryStatus::Error, elapsed);
                let outcome = if e.kind() == crate::ErrorKind::Overloaded {
                    Outcome::Unavailable
                } else {
                    Outcome::Error
                };
                self.latency.record(elapsed, outcome);
                spans::record_error(&span, &spans::error_kind(e), e);
            }
        }
        result
    }

    /// The answer under the experiment's variant, with the routing
    /// decision.
    fn answer_controlled(
        &self,
        text: &str,
        options: &QueryOptions,
        ns: &str,
        start: Instant,
    ) -> Result<Answer> {
        let variant = self.controls.variant(options)?;
        let options = match &variant {
            Some((_, v)) => std::borrow::Cow::Owned(v.apply(options)),
            None => std::borrow::Cow::Borrowed(options),
        };
        // Routed before the work, so a bad routing rule wastes none.
        let route =
            self.controls
                .route(text, || self.embedder.count_tokens(text).ok(), &options)?;
        let mut answer = self.answer(text, &options, ns, start)?;
        answer.route = route;
        answer.variant = variant.map(|(name, _)| name);
        Ok(answer)
    }

    fn check_options(&self, options: &QueryOptions) -> Result<()> {
        let max = self.config.query.max_top_k;
        for (name, v) in [
            ("top_k", options.top_k),
            ("rerank_top_n", options.rerank_top_n),
        ] {
            match v {
                Some(0) => return Err(Error::invalid(format!("{name} must be at least 1"))),
                Some(k) if k > max => {
                    return Err(Error::invalid(format!(
                        "{name} {k} is above query.max_top_k ({max})"
                    )))
                }
                _ => {}
            }
        }
        if let Some(SearchMode::Hybrid { alpha }) = options.mode {
            check_range("hybrid alpha", alpha, 0.0, 1.0)?;
        }
        if let Some(l) = options.mmr {
            check_range("mmr lambda", l, 0.0, 1.0)?;
        }
        if let Some(c) = options.similarity_cutoff {
            if !c.is_finite() {
                return Err(Error::invalid(format!(
                    "similarity_cutoff must be finite, got {c}"
                )));
            }
        }
        if options.context_tokens == Some(0) {
            return Err(Error::invalid("context_tokens must be at least 1"));
        }
        for k in options
            .required_keywords
            .iter()
            .chain(&options.excluded_keywords)
        {
            if bm25::tokenize(k).is_empty() {
                return Err(Error::invalid(format!("keyword {k:?} holds no word")));
            }
        }
        if let Some(f) = &options.filters {
            f.validate()
                .map_err(|e| Error::invalid(format!("invalid filter: {e}")))?;
        }
        if options.rerank_top_n.is_some() && !self.has_reranker() {
            return Err(Error::config(
                "rerank.model_dir",
                "the query asks for reranking but no reranker is configured",
            ));
        }
        if options.hyde == Some(true) && self.hyde.is_none() {
            return Err(Error::config(
                "hyde",
                "the query asks for HyDE but the engine has no HyDE hook (EngineBuilder::hyde)",
            ));
        }
        Ok(())
    }

    fn answer(
        &self,
        text: &str,
        options: &QueryOptions,
        ns: &str,
        start: Instant,
    ) -> Result<Answer> {
        let mut t = StageTimings::default();
        super::check_namespace(ns)?;
        self.check_options(options)?;

        let clock = Instant::now();
        let prep = self.prepare_query(text, options)?;
        t.clean = clock.elapsed();
        if matches!(prep.mode, SearchMode::Keyword | SearchMode::Hybrid { .. })
            && !self.config.bm25.enabled
        {
            return Err(Error::config(
                "bm25.enabled",
                "keyword and hybrid queries need the BM25 index",
            ));
        }

        let st = self.read();
        let index = st
            .store
            .namespace(ns)
            .map_err(|_| Error::invalid(format!("namespace {ns:?} does not exist")))?;
        let version = st.version_of(ns);
        let caching =
            !options.no_cache && (self.retrieval_cache.is_some() || self.semantic_cache.is_some());
        let mode_key = options_key(&prep, options, self.hyde.is_some());
        let rq = RetrievalQuery {
            query: &prep.text,
            namespace: ns,
            filters: options.filters.as_ref(),
            top_k: prep.top_k,
            mode: &mode_key,
            index_version: version,
        };
        let scope = Scope::tenant(format!("ragjet-engine/{:016x}", self.instance));
        let outcome = if caching {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Bypassed
        };

        // Retrieval cache: this exact query and options at this version.
        if caching {
            if let Some(rc) = &self.retrieval_cache {
                let clock = Instant::now();
                let cached: Option<CachedHits> = rc.get(&scope, &rq);
                t.cache += clock.elapsed();
                if let Some(c) = cached {
                    return self.finish(
                        &st,
                        ns,
                        c,
                        prep,
                        options,
                        CacheOutcome::RetrievalHit,
                        t,
                        start,
                    );
                }
            }
        }

        // Embedding (vector side, MMR, or the semantic cache's key).
        let semantic = self.semantic_cache.as_ref().filter(|_| caching);
        let needs_vector = !matches!(prep.mode, SearchMode::Keyword)
            || options.mmr.is_some()
            || semantic.is_some();
        let query_vector = if needs_vector {
            let clock = Instant::now();
            let passage = match (&self.hyde, options.hyde) {
                (Some(hook), None | Some(true)) => Some(hook.passage(&prep.text)?.text),
                _ => None,
            };
            let to_embed = passage.as_deref().unwrap_or(&prep.text);
            let v = self
                .embed_raw(&[to_embed], Priority::Interactive, &|_, _| {})?
                .pop()
                .unwrap_or_default();
            t.embed = clock.elapsed();
            Some(v)
        } else {
            None
        };

        // Semantic cache: a query this similar, same options, same version.
        let sem_scope = Scope {
            tenant: scope.tenant.clone(),
            user: Some(semantic_partition(
                ns,
                &mode_key,
                prep.top_k,
                options.filters.as_ref(),
            )),
            data_version: version,
        };
        if let (Some(sc), Some(v)) = (semantic, &query_vector) {
            let clock = Instant::now();
            let hit = sc.lookup(&sem_scope, v);
            t.cache += clock.elapsed();
            match hit {
                Ok(Some(h)) => {
                    let outcome = CacheOutcome::SemanticHit {
                        similarity: h.similarity,
                    };
                    return self.finish(&st, ns, h.value, prep, options, outcome, t, start);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "semantic cache lookup failed"),
            }
        }

        // Search.
        let clock = Instant::now();
        let n = index.len();
        let pool = options.mmr.is_some()
            || !options.required_keywords.is_empty()
            || !options.excluded_keywords.is_empty();
        let fetch_k = if pool {
            prep.top_k
                .saturating_mul(self.config.query.candidate_factor)
        } else {
            prep.top_k
        }
        .min(n)
        .max(1);
        let filter = options.filters.as_ref();
        let retrieval_span = spans::retrieval(ns, fetch_k);
        let mut hits = retrieval_span.in_scope(|| -> Result<Vec<Hit>> {
            Ok(match prep.mode {
                SearchMode::Vector => {
                    let v = query_vector.as_deref().unwrap_or_default();
                    index.search(v, fetch_k, filter)?
                }
                SearchMode::Keyword => {
                    self.keyword_hits(&st, ns, &prep.keyword_text, fetch_k, filter)?
                }
                SearchMode::Hybrid { alpha } => {
                    let v = query_vector.as_deref().unwrap_or_default();
                    let vector = index.search(v, fetch_k, filter)?;
                    let keyword =
                        self.keyword_hits(&st, ns, &prep.keyword_text, fetch_k, filter)?;
                    alpha_fusion(&vector, &keyword, alpha, fetch_k)?
                }
            })
        })?;
        spans::record_returned(&retrieval_span, hits.len());
        t.search = clock.elapsed();

        // Postprocessing: keyword rules, cutoff, MMR or truncation.
        let clock = Instant::now();
        if !options.required_keywords.is_empty() || !options.excluded_keywords.is_empty() {
            let required: Vec<Vec<String>> = options
                .required_keywords
                .iter()
                .map(|k| bm25::tokenize(k))
                .collect();
            let excluded: Vec<Vec<String>> = options
                .excluded_keywords
                .iter()
                .map(|k| bm25::tokenize(k))
                .collect();
            hits.retain(|h| {
                let Some(rec) = index.get(&h.id) else {
                    return false;
                };
                let words = bm25::tokenize(rec.text);
                required.iter().all(|k| contains_phrase(&words, k))
                    && !excluded.iter().any(|k| contains_phrase(&words, k))
            });
        }
        if let Some(c) = options.similarity_cutoff {
            hits.retain(|h| h.score >= c);
        }
        if let (Some(lambda), Some(q)) = (options.mmr, &query_vector) {
            let ids: Vec<&str> = hits.iter().map(|h| h.id.as_str()).collect();
            let texts: Vec<&str> = ids
                .iter()
                .map(|id| index.get(id).map_or("", |r| r.text))
                .collect();
            let vectors = chunk_vectors(self, index, &ids, &texts, Priority::Interactive)?;
            let order = mmr(q, &vectors, lambda, prep.top_k, Metric::Cosine)?;
            hits = order.into_iter().map(|i| hits[i].clone()).collect();
        } else {
            hits.truncate(prep.top_k);
        }
        t.postprocess = clock.elapsed();

        // Reranking.
        if let (Some(top_n), Some(reranker)) = (options.rerank_top_n, self.reranker()?) {
            let clock = Instant::now();
            let passages: Vec<&str> = hits
                .iter()
                .map(|h| index.get(&h.id).map_or("", |r| r.text))
                .collect();
            let rspan = spans::rerank(&self.reranker_name(), passages.len());
            let ranked =
                rspan.in_scope(|| self.rerank_passages(&reranker, &prep.text, &passages, top_n))?;
            hits = ranked
                .into_iter()
                .map(|(i, score)| Hit {
                    id: hits[i].id.clone(),
                    score,
                })
                .collect();
            t.rerank = clock.elapsed();
        }

        let result = CachedHits {
            hits: hits.into_iter().map(|h| (h.id, h.score)).collect(),
        };
        if caching {
            let clock = Instant::now();
            if let Some(rc) = &self.retrieval_cache {
                if let Err(e) = rc.put(&scope, &rq, &result) {
                    tracing::warn!(error = %e, "result not cached");
                }
            }
            if let (Some(sc), Some(v)) = (semantic, &query_vector) {
                if let Err(e) = sc.insert(&sem_scope, v, result.clone()) {
                    tracing::warn!(error = %e, "result not cached (semantic)");
                }
            }
            t.cache += clock.elapsed();
        }
        self.finish(&st, ns, result, prep, options, outcome, t, start)
    }

    /// BM25 hits passing `filter` (BM25 has no filter of its own, so with
    /// one every match is scored and the filter applied before the cut).
    fn keyword_hits(
        &self,
        st: &State,
        ns: &str,
        text: &str,
        k: usize,
        filter: Option<&MetadataFilters>,
    ) -> Result<Vec<Hit>> {
        let Some(b) = st.bm25.get(ns) else {
            return Ok(Vec::new());
        };
        let index = st.store.namespace(ns)?;
        let active = filter.filter(|f| !f.filters.is_empty());
        let Some(f) = active else {
            return Ok(b.search(text, k));
        };
        let mut hits = b.search(text, b.len());
        hits.retain(|h| index.get(&h.id).is_some_and(|r| f.matches(&r.metadata)));
        hits.truncate(k);
        Ok(hits)
    }

    /// Turns cached or computed ids and scores into hits and packs the
    /// context.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        st: &State,
        ns: &str,
        result: CachedHits,
        prep: Prepared,
        options: &QueryOptions,
        cache: CacheOutcome,
        mut t: StageTimings,
        start: Instant,
    ) -> Result<Answer> {
        let clock = Instant::now();
        let index = st.store.namespace(ns)?;
        let docs = st.docs.get(ns);
        let mut hits = Vec::with_capacity(result.hits.len());
        for (id, score) in result.hits {
            let Some(rec) = index.get(&id) else { continue };
            let doc_id = rec.ref_doc_id.unwrap_or_default().to_string();
            let span = id
                .get(doc_id.len() + 1..)
                .and_then(|i| i.parse::<usize>().ok())
                .and_then(|i| docs?.get(&doc_id)?.spans.get(i).copied())
                .map_or(0..0, |(a, b)| a..b);
            hits.push(EngineHit {
                chunk_id: id,
                doc_id,
                score,
                text: rec.text.to_string(),
                metadata: rec.metadata.to_metadata(),
                span,
            });
        }
        let context = match options.context_tokens {
            Some(budget) => Some(self.pack_context(&hits, budget)?),
            None => None,
        };
        t.postprocess += clock.elapsed();
        t.total = start.elapsed();
        Ok(Answer {
            hits,
            context,
            query: prep.text,
            top_k: prep.top_k,
            mode: prep.mode,
            timings: t,
            cache,
            route: None,
            variant: None,
        })
    }

    /// The best passages (up to five) within `budget` tokens: each passage
    /// gets at most half the budget when there are two or more, so at least
    /// two fit; a passage that does not fit whole is cut at a token
    /// boundary; passages are separated by a blank line.
    fn pack_context(&self, hits: &[EngineHit], budget: usize) -> Result<String> {
        let n = hits.len().min(CONTEXT_MAX_PASSAGES);
        let cap = if n >= 2 { (budget / 2).max(1) } else { budget };
        let mut used = 0;
        let mut parts: Vec<&str> = Vec::with_capacity(n);
        for h in &hits[..n] {
            let left = budget - used;
            if left == 0 {
                break;
            }
            let allow = cap.min(left);
            let tokens = self.embedder.count_tokens(&h.text)?;
            if tokens <= allow {
                parts.push(&h.text);
                used += tokens;
            } else {
                if allow < CONTEXT_MIN_PIECE && parts.len() >= 2 {
                    break;
                }
                let cut = self.embedder.truncate_to_tokens(&h.text, allow)?;
                if !cut.trim().is_empty() {
                    parts.push(cut);
                }
                used += allow;
            }
        }
        Ok(parts.join("\n\n"))
    }
}

/// Vectors of chunks: the exact index's own rows, else (HNSW keeps none
/// reachable) the embedding cache, computing what it lacks.
pub(crate) fn chunk_vectors(
    engine: &Engine,
    index: &AnyIndex,
    ids: &[&str],
    texts: &[&str],
    priority: Priority,
) -> Result<Vec<Vec<f32>>> {
    if let AnyIndex::Flat(f) = index {
        if let Some(v) = ids
            .iter()
            .map(|id| f.vector(id))
            .collect::<Option<Vec<_>>>()
        {
            return Ok(v);
        }
    }
    Ok(engine.embed_cached(texts, priority, &|_, _| {})?.0)
}

/// Whether the word sequence `phrase` occurs in `words`.
fn contains_phrase(words: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && words.windows(phrase.len()).any(|w| w == phrase)
}

/// Everything but the query text, top-k, namespace, filter and version that
/// changes a result, as one stable string for the retrieval-cache key and
/// the semantic cache's partition. (The keyword text is a function of the
/// query text under the engine's fixed synonyms, so the text covers it.)
fn options_key(prep: &Prepared, o: &QueryOptions, hyde_on: bool) -> String {
    let bits = |v: Option<f32>| v.map_or("-".to_string(), |x| format!("{:08x}", x.to_bits()));
    let words = |ks: &[String]| {
        let mut v: Vec<String> = ks.iter().map(|k| bm25::tokenize(k).join(" ")).collect();
        v.sort();
        v.dedup();
        v.join("\u{1f}")
    };
    format!(
        "{};mmr={};rerank={};cutoff={};req={};exc={};hyde={}",
        prep.mode.key(),
        bits(o.mmr),
        o.rerank_top_n.map_or("-".to_string(), |n| n.to_string()),
        bits(o.similarity_cutoff),
        words(&o.required_keywords),
        words(&o.excluded_keywords),
        o.hyde.unwrap_or(true) && hyde_on,
    )
}

/// The semantic cache's partition for one set of options: a paraphrase may
/// share results only with queries that asked for the same thing.
fn semantic_partition(
    ns: &str,
    mode_key: &str,
    top_k: usize,
    filters: Option<&MetadataFilters>,
) -> String {
    let mut h = blake3::Hasher::new();
    for part in [ns.as_bytes(), mode_key.as_bytes()] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.update(&(top_k as u64).to_le_bytes());
    let f = filters
        .filter(|f| !f.filters.is_empty())
        .map(MetadataFilters::canonical_key)
        .unwrap_or_default();
    h.update(&(f.len() as u64).to_le_bytes());
    h.update(&f);
    h.finalize().to_hex().to_string()
}
