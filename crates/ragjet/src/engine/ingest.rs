//! Ingest and delete: documents in, chunks out, applied under the write
//! lock.

use std::collections::HashMap;
use std::time::Instant;

use ragjet_cache::Scope;
use ragjet_retrieval::{AnyIndex, Entry, HnswConfig, HnswIndex, Metric, VectorIndex};

use super::controls::{is_service_failure, settle, Call};
use super::persist::{self, DocEntry};
use super::{
    check_namespace, ensure_namespace, Document, Engine, IngestOptions, IngestProgress,
    IngestReport, IngestStage, State, DEFAULT_NAMESPACE, EMBEDDING_TENANT,
};
use crate::chunk::Chunk;
use crate::config::IndexKind;
use crate::control::RetryError;
use crate::error::{Error, Refusal, Result};
use crate::queue::Priority;

impl Engine {
    /// Ingests into the default namespace. See [`Engine::ingest_with`].
    pub fn ingest(&self, documents: Vec<Document>) -> Result<IngestReport> {
        self.ingest_with(documents, &IngestOptions::default())
    }

    /// Upserts `documents` into a namespace.
    ///
    /// A document that cannot be ingested (empty id or text, an id
    /// repeated later in the batch — the last occurrence wins —, a failing
    /// embedding) is listed in [`IngestReport::failed`] with its error, and
    /// the rest go in. A document whose text and metadata are unchanged is
    /// skipped without embedding anything. The call itself fails only when
    /// the namespace name is invalid or `[control]` refuses it (the
    /// namespace's rate limit, an open circuit breaker: [`Error::Overloaded`]
    /// with the [`Refusal`]).
    pub fn ingest_with(
        &self,
        documents: Vec<Document>,
        options: &IngestOptions<'_>,
    ) -> Result<IngestReport> {
        let start = Instant::now();
        let ns = options.namespace.unwrap_or(DEFAULT_NAMESPACE);
        check_namespace(ns)?;
        // `[control]`: the namespace's rate limit and the model's breaker;
        // a document failing for the model's sake counts against it.
        let permit = self.controls.admit(Call::Ingest, ns)?;
        let result = self.ingest_admitted(documents, options, ns, start);
        let failure = match &result {
            Err(e) => Some(e),
            Ok(r) => r
                .failed
                .iter()
                .map(|(_, e)| e)
                .find(|e| is_service_failure(e)),
        };
        settle(permit, failure);
        result
    }

    fn ingest_admitted(
        &self,
        documents: Vec<Document>,
        options: &IngestOptions<'_>,
        ns: &str,
        start: Instant,
    ) -> Result<IngestReport> {
        let span = ragjet_telemetry::spans::index_update(ns, "add", documents.len());
        let _entered = span.enter();
        let progress = |stage, done, total| {
            if let Some(p) = options.progress {
                p(IngestProgress { stage, done, total });
            }
        };
        let mut report = IngestReport::default();

        // Last occurrence of an id wins, as if the batch were upserted one
        // document at a time; earlier ones are reported.
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, d) in documents.iter().enumerate() {
            last.insert(d.id.as_str(), i);
        }
        let mut docs = Vec::with_capacity(last.len());
        for (i, d) in documents.iter().enumerate() {
            if last[d.id.as_str()] != i {
                report.failed.push((
                    d.id.clone(),
                    Error::invalid(format!(
                        "document id {:?} appears again later in this batch; the last occurrence \
                         is ingested",
                        d.id
                    )),
                ));
                continue;
            }
            if d.id.is_empty() {
                report
                    .failed
                    .push((String::new(), Error::invalid("document id is empty")));
                continue;
            }
            if d.text.trim().is_empty() {
                report.failed.push((
                    d.id.clone(),
                    Error::invalid(format!("document {:?} has no text", d.id)),
                ));
                continue;
            }
            docs.push(d);
        }

        // Unchanged documents cost nothing.
        let hashes: Vec<String> = docs
            .iter()
            .map(|d| persist::doc_hash(d, &self.chunker_config()))
            .collect();
        let mut changed = Vec::with_capacity(docs.len());
        {
            let st = self.read();
            let table = st.docs.get(ns);
            for (d, h) in docs.into_iter().zip(hashes) {
                if table
                    .and_then(|t| t.get(&d.id))
                    .is_some_and(|e| e.hash == h)
                {
                    report.ingested.push(d.id.clone());
                    report.unchanged += 1;
                } else {
                    changed.push((d, h));
                }
            }
        }

        // Chunking.
        let total_docs = changed.len();
        let mut prepared: Vec<Prepared<'_>> = Vec::with_capacity(changed.len());
        for (i, (d, hash)) in changed.into_iter().enumerate() {
            match self.chunker.chunk_with(&d.text, self.embedder.as_ref()) {
                Ok(chunks) if !chunks.is_empty() => prepared.push(Prepared {
                    doc: d,
                    hash,
                    chunks,
                    vectors: Vec::new(),
                }),
                Ok(_) => report.failed.push((
                    d.id.clone(),
                    Error::invalid(format!("document {:?} gave no chunk", d.id)),
                )),
                Err(e) => report.failed.push((d.id.clone(), e.into())),
            }
            progress(IngestStage::Chunking, i + 1, total_docs);
        }

        // Embedding: all chunks in one call; if it fails, document by
        // document, so one bad document fails alone.
        let texts: Vec<&str> = prepared
            .iter()
            .flat_map(|p| p.chunks.iter().map(|c| c.text.as_str()))
            .collect();
        let progress_embed = |done, total| progress(IngestStage::Embedding, done, total);
        match self.embed_cached(&texts, Priority::Bulk, &progress_embed) {
            Ok((vectors, computed)) => {
                report.embeddings_computed += computed;
                report.embeddings_cached += texts.len() - computed;
                let mut it = vectors.into_iter();
                for p in &mut prepared {
                    p.vectors = it.by_ref().take(p.chunks.len()).collect();
                }
            }
            Err(batch_err) => {
                tracing::warn!(error = %batch_err, "batch embedding failed; retrying document by document");
                let mut kept = Vec::with_capacity(prepared.len());
                for mut p in prepared {
                    let texts: Vec<&str> = p.chunks.iter().map(|c| c.text.as_str()).collect();
                    match self.embed_cached(&texts, Priority::Bulk, &progress_embed) {
                        Ok((vectors, computed)) => {
                            report.embeddings_computed += computed;
                            report.embeddings_cached += texts.len() - computed;
                            p.vectors = vectors;
                            kept.push(p);
                        }
                        Err(e) => report.failed.push((p.doc.id.clone(), e)),
                    }
                }
                prepared = kept;
            }
        }

        // Applying, under the write lock.
        if !prepared.is_empty() {
            let total = prepared.len();
            let mut st = self.write();
            ensure_namespace(&mut st, &self.config, self.model.dim, ns)?;
            let new_chunks: usize = prepared.iter().map(|p| p.chunks.len()).sum();
            self.maybe_switch_to_hnsw(&mut st, ns, new_chunks)?;
            let outcome = apply(&mut st, ns, prepared, self.config.bm25.enabled);
            for (id, chunks) in outcome.ok {
                report.ingested.push(id);
                report.chunks += chunks;
            }
            report.failed.extend(outcome.failed);
            if report.chunks > 0 {
                self.bump(&mut st, ns);
            }
            drop(st);
            progress(IngestStage::Indexing, total, total);
        }
        report.seconds = start.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Deletes a document of the default namespace; returns whether it
    /// existed.
    pub fn delete(&self, doc_id: &str) -> Result<bool> {
        self.delete_in(DEFAULT_NAMESPACE, doc_id)
    }

    /// Deletes a document and all its chunks from `namespace`; returns
    /// whether it existed. Cached results that could contain it are never
    /// served again.
    pub fn delete_in(&self, namespace: &str, doc_id: &str) -> Result<bool> {
        check_namespace(namespace)?;
        let _span = ragjet_telemetry::spans::index_update(namespace, "delete", 1).entered();
        let mut st = self.write();
        let Some(entry) = st.docs.get_mut(namespace).and_then(|t| t.remove(doc_id)) else {
            return Ok(false);
        };
        let ids: Vec<String> = (0..entry.spans.len())
            .map(|i| chunk_id(doc_id, i))
            .collect();
        if let Ok(idx) = st.store.namespace_mut(namespace) {
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            idx.delete(&refs);
        }
        if let Some(b) = st.bm25.get_mut(namespace) {
            for id in &ids {
                b.delete(id);
            }
        }
        self.bump(&mut st, namespace);
        Ok(true)
    }

    /// Embeds chunk texts through the embedding cache; returns the vectors
    /// and how many were computed.
    pub(super) fn embed_cached(
        &self,
        texts: &[&str],
        priority: Priority,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<(Vec<Vec<f32>>, usize)> {
        if texts.is_empty() {
            return Ok((Vec::new(), 0));
        }
        match &self.embedding_cache {
            Some(cache) => {
                let computed = std::cell::Cell::new(0);
                let vectors = cache.get_or_compute_many(
                    &Scope::tenant(EMBEDDING_TENANT),
                    texts,
                    |missing: &[&str]| -> Result<Vec<Vec<f32>>> {
                        computed.set(missing.len());
                        self.embed_retrying(missing, priority, progress)
                    },
                )?;
                Ok((vectors, computed.get()))
            }
            None => Ok((self.embed_retrying(texts, priority, progress)?, texts.len())),
        }
    }

    /// Embeds; bulk (ingest) work whose model queue is full is retried
    /// with `[control.retry]`'s back-off. Queries are not: their deadline
    /// already says how long they may wait.
    fn embed_retrying(
        &self,
        texts: &[&str],
        priority: Priority,
        progress: &(dyn Fn(usize, usize) + Sync),
    ) -> Result<Vec<Vec<f32>>> {
        if priority != Priority::Bulk {
            return self.embed_raw(texts, priority, progress);
        }
        self.controls
            .retry
            .run(
                |e: &Error| matches!(e, Error::Overloaded(Refusal::QueueFull { .. })),
                |_| self.embed_raw(texts, priority, progress),
            )
            .map_err(RetryError::into_inner)
    }

    /// Moves a namespace from exact search to HNSW when `index.kind` is
    /// `auto` and this ingest takes it past `index.hnsw_threshold`.
    fn maybe_switch_to_hnsw(&self, st: &mut State, ns: &str, adding: usize) -> Result<()> {
        if self.config.index.kind != IndexKind::Auto {
            return Ok(());
        }
        let idx = st.store.namespace_mut(ns)?;
        let AnyIndex::Flat(flat) = &*idx else {
            return Ok(());
        };
        if flat.len() + adding <= self.config.index.hnsw_threshold {
            return Ok(());
        }
        let _span = ragjet_telemetry::spans::index_update(ns, "rebuild", flat.len()).entered();
        let mut entries = Vec::with_capacity(flat.len());
        for id in flat.ids_matching(None)? {
            if let (Some(rec), Some(v)) = (flat.get(&id), flat.vector(&id)) {
                entries.push(Entry {
                    id,
                    vector: v,
                    text: rec.text.to_string(),
                    metadata: rec.metadata.to_metadata(),
                    ref_doc_id: rec.ref_doc_id.map(str::to_string),
                });
            }
        }
        let mut hnsw = HnswIndex::new(self.hnsw_config((entries.len() + adding) * 2))?;
        hnsw.set_namespace(ns);
        hnsw.upsert(entries)?;
        tracing::info!(
            namespace = ns,
            chunks = hnsw.len(),
            "namespace moved to HNSW"
        );
        *idx = AnyIndex::Hnsw(hnsw);
        Ok(())
    }

    fn hnsw_config(&self, capacity: usize) -> HnswConfig {
        let c = &self.config.index;
        HnswConfig {
            m: c.hnsw_m,
            ef_construction: c.hnsw_ef_construction,
            ef_search: c.hnsw_ef_search,
            capacity_hint: capacity.max(1024),
            ..HnswConfig::new(self.model.dim, Metric::Cosine)
        }
    }
}

/// A document on its way into the index.
struct Prepared<'a> {
    doc: &'a Document,
    hash: String,
    chunks: Vec<Chunk>,
    vectors: Vec<Vec<f32>>,
}

struct Applied {
    ok: Vec<(String, usize)>,
    failed: Vec<(String, Error)>,
}

fn chunk_id(doc_id: &str, index: usize) -> String {
    format!("{doc_id}#{index}")
}

fn entries_of(p: &Prepared<'_>) -> Vec<Entry> {
    p.chunks
        .iter()
        .zip(&p.vectors)
        .enumerate()
        .map(|(i, (c, v))| Entry {
            id: chunk_id(&p.doc.id, i),
            vector: v.clone(),
            text: c.text.clone(),
            metadata: p.doc.metadata.clone(),
            ref_doc_id: Some(p.doc.id.clone()),
        })
        .collect()
}

/// Writes prepared documents into a namespace: one upsert for all (the
/// index checks every entry before applying any), or, if that is refused,
/// one per document so a bad one fails alone. A document's chunks beyond
/// its new count are deleted after its new ones are in, so a failure
/// leaves the old version whole.
fn apply(st: &mut State, ns: &str, prepared: Vec<Prepared<'_>>, bm25_on: bool) -> Applied {
    let mut out = Applied {
        ok: Vec::new(),
        failed: Vec::new(),
    };
    let Ok(idx) = st.store.namespace_mut(ns) else {
        return out;
    };
    let all: Vec<Entry> = prepared.iter().flat_map(entries_of).collect();
    let mut written = vec![false; prepared.len()];
    if idx.upsert(all).is_ok() {
        written.iter_mut().for_each(|w| *w = true);
    } else {
        for (i, p) in prepared.iter().enumerate() {
            match idx.upsert(entries_of(p)) {
                Ok(()) => written[i] = true,
                Err(e) => out.failed.push((p.doc.id.clone(), e.into())),
            }
        }
    }
    let table = st.docs.entry(ns.to_string()).or_default();
    let mut bm25 = if bm25_on { st.bm25.get_mut(ns) } else { None };
    for (p, ok) in prepared.into_iter().zip(written) {
        if !ok {
            continue;
        }
        let old_len = table.get(&p.doc.id).map_or(0, |e| e.spans.len());
        let stale: Vec<String> = (p.chunks.len()..old_len)
            .map(|i| chunk_id(&p.doc.id, i))
            .collect();
        if !stale.is_empty() {
            let refs: Vec<&str> = stale.iter().map(String::as_str).collect();
            idx.delete(&refs);
        }
        if let Some(b) = bm25.as_deref_mut() {
            for id in &stale {
                b.delete(id);
            }
            for (i, c) in p.chunks.iter().enumerate() {
                // Ids are non-empty by construction; nothing else can fail.
                if let Err(e) = b.upsert(&chunk_id(&p.doc.id, i), &c.text) {
                    tracing::warn!(error = %e, "chunk not added to BM25");
                }
            }
        }
        let n = p.chunks.len();
        table.insert(
            p.doc.id.clone(),
            DocEntry {
                hash: p.hash,
                spans: p
                    .chunks
                    .iter()
                    .map(|c| (c.span.start, c.span.end))
                    .collect(),
            },
        );
        out.ok.push((p.doc.id.clone(), n));
    }
    out
}
