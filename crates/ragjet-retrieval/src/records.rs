//! Id bookkeeping shared by both indexes: external string ids ↔ internal
//! slots, per-slot text and metadata, and the `ref_doc_id` → slots map.
//!
//! Memory, which matters because an index holds millions of entries whose
//! rows may be a few dozen bytes (binary codes): a slot costs 16 bytes plus
//! its id's bytes when it has no text, metadata or source document. Ids
//! live back to back in one arena (no allocation, header or capacity slack
//! per id); text, metadata and `ref_doc_id` sit in one boxed [`Extras`]
//! only for the slots that have any. The id → slot table holds `u32` slots,
//! found by hashing the id and comparing it with the arena's (5 bytes per
//! bucket, against 33 for a `HashMap<String, u32>` plus a second heap copy
//! of every id), and the `ref_doc_id` map holds slots, not id copies.
//! Measured per entry in `tests/memory.rs`.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::types::{store_metadata, Metadata, MetadataRef, Record, RecordRef, StoredMetadata};

/// What a slot keeps besides its id, boxed so that a slot without any of
/// it costs one null pointer.
#[derive(Debug, Clone)]
struct Extras {
    text: String,
    metadata: StoredMetadata,
    ref_doc_id: Option<String>,
}

/// Marks a tombstone in [`Records::id_at`].
const DEAD: u64 = u64::MAX;

/// Slot table. A slot is the internal id (row in the flat index, data id in
/// the HNSW graph); a tombstone keeps its place with no id.
///
/// Invariant: `by_id` holds exactly the live slots, each under the hash of
/// its id; `by_ref[r]` exactly the live slots whose `ref_doc_id` is `r`
/// (never empty); `dead_bytes` counts the arena bytes no live slot points
/// at.
#[derive(Debug, Default, Clone)]
pub(crate) struct Records {
    /// Ids, each as a LEB128 length and its UTF-8 bytes.
    ids: Vec<u8>,
    /// Per slot, where its id starts in `ids` (`DEAD` for a tombstone).
    id_at: Vec<u64>,
    extras: Vec<Option<Box<Extras>>>,
    dead_bytes: usize,
    by_id: HashTable<u32>,
    /// Randomly seeded SipHash, as `HashMap`'s: ids come from users, so a
    /// fixed hash would let crafted ids degrade every lookup.
    hasher: std::collections::hash_map::RandomState,
    by_ref: HashMap<String, Vec<u32>>,
    live: usize,
}

/// The id stored at `at` in the arena, and the bytes it takes there.
fn id_in(ids: &[u8], at: u64) -> (&str, usize) {
    let mut at = at as usize;
    let (mut len, mut shift, start) = (0usize, 0, at);
    loop {
        let b = ids[at];
        at += 1;
        len |= usize::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
        shift += 7;
    }
    let bytes = &ids[at..at + len];
    // SAFETY: the arena receives only whole `&str`s (`append_id`), and
    // `at` is the start of one of them.
    let id = unsafe { std::str::from_utf8_unchecked(bytes) };
    (id, at + len - start)
}

/// Appends `id` to the arena; returns where it starts.
fn append_id(ids: &mut Vec<u8>, id: &str) -> u64 {
    let at = ids.len() as u64;
    let mut len = id.len();
    grow(ids, 10 + len);
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            ids.push(b);
            break;
        }
        ids.push(b | 0x80);
    }
    ids.extend_from_slice(id.as_bytes());
    at
}

/// The id of a live slot (`""` for a tombstone, which the table never
/// holds).
fn id_of<'a>(ids: &'a [u8], id_at: &[u64], slot: u32) -> &'a str {
    match id_at[slot as usize] {
        DEAD => "",
        at => id_in(ids, at).0,
    }
}

/// Reserves room for `additional` more items, growing by at least an
/// eighth: doubling (what `Vec::reserve` does) leaves up to half of a
/// large table unused after an index grows in batches, while an eighth
/// bounds the slack to 12.5 % and still amortises the copies (each element
/// is copied about eight times over the index's growth, against its
/// per-entry build cost of thousands of distance computations).
pub(crate) fn grow<T>(v: &mut Vec<T>, additional: usize) {
    if v.capacity() - v.len() < additional {
        v.reserve_exact(additional.max(v.len() / 8));
    }
}

impl Records {
    /// Rebuilds the table from saved slots; a duplicate or empty id, or
    /// more slots than a `u32` numbers, is an error.
    pub(crate) fn from_slots(slots: Vec<Option<Record>>) -> Result<Self, String> {
        if u32::try_from(slots.len()).is_err() {
            return Err(format!("{} slots: at most 2^32 - 1", slots.len()));
        }
        let mut r = Records::default();
        r.reserve(slots.len());
        for rec in slots {
            match rec {
                Some(rec) => {
                    if rec.id.is_empty() {
                        return Err("empty id".into());
                    }
                    if r.slot_of(&rec.id).is_some() {
                        return Err(format!("duplicate id {:?}", rec.id));
                    }
                    r.push(rec);
                }
                None => {
                    r.id_at.push(DEAD);
                    r.extras.push(None);
                }
            }
        }
        Ok(r)
    }

    /// The slots in order, serialised as a list of `Record | null` (the
    /// saved `records.json`).
    pub(crate) fn slots(&self) -> impl Serialize + '_ {
        SlotList(self)
    }

    /// The records of the live slots in slot order, giving up the table.
    pub(crate) fn into_live(self) -> impl Iterator<Item = (u32, Record)> {
        let Records {
            ids, id_at, extras, ..
        } = self;
        id_at
            .into_iter()
            .zip(extras)
            .enumerate()
            .filter(|(_, (at, _))| *at != DEAD)
            .map(move |(slot, (at, extras))| {
                let id = id_in(&ids, at).0.to_string();
                let rec = match extras {
                    Some(e) => Record {
                        id,
                        text: e.text,
                        metadata: e
                            .metadata
                            .into_vec()
                            .into_iter()
                            .map(|(k, v)| (k.into_string(), v))
                            .collect(),
                        ref_doc_id: e.ref_doc_id,
                    },
                    None => Record {
                        id,
                        text: String::new(),
                        metadata: Metadata::new(),
                        ref_doc_id: None,
                    },
                };
                (slot as u32, rec)
            })
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    pub(crate) fn capacity(&self) -> usize {
        self.id_at.len()
    }

    /// Makes room for `additional` more slots (see [`grow`]).
    pub(crate) fn reserve(&mut self, additional: usize) {
        grow(&mut self.id_at, additional);
        grow(&mut self.extras, additional);
    }

    pub(crate) fn slot_of(&self, id: &str) -> Option<u32> {
        let (ids, id_at) = (&self.ids, &self.id_at);
        self.by_id
            .find(self.hasher.hash_one(id), |&s| id_of(ids, id_at, s) == id)
            .copied()
    }

    /// The id of a live slot.
    #[inline]
    pub(crate) fn id(&self, slot: usize) -> Option<&str> {
        match *self.id_at.get(slot)? {
            DEAD => None,
            at => Some(id_in(&self.ids, at).0),
        }
    }

    /// The metadata of a live slot (empty when it has none). Called per
    /// row by filtered scans: liveness is the slot's offset, the id is not
    /// decoded.
    #[inline]
    pub(crate) fn metadata(&self, slot: usize) -> Option<MetadataRef<'_>> {
        if *self.id_at.get(slot)? == DEAD {
            return None;
        }
        Some(
            self.extras[slot]
                .as_ref()
                .map_or(MetadataRef::EMPTY, |e| MetadataRef(&e.metadata)),
        )
    }

    pub(crate) fn get(&self, slot: usize) -> Option<RecordRef<'_>> {
        let id = self.id(slot)?;
        Some(match &self.extras[slot] {
            Some(e) => RecordRef {
                id,
                text: &e.text,
                metadata: MetadataRef(&e.metadata),
                ref_doc_id: e.ref_doc_id.as_deref(),
            },
            None => RecordRef {
                id,
                text: "",
                metadata: MetadataRef::EMPTY,
                ref_doc_id: None,
            },
        })
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<RecordRef<'_>> {
        self.slot_of(id).and_then(|s| self.get(s as usize))
    }

    /// Ids of live entries passing `filter`, in slot order.
    pub(crate) fn ids_matching(
        &self,
        filter: Option<&crate::filter::MetadataFilters>,
    ) -> Vec<String> {
        (0..self.capacity())
            .filter_map(|s| {
                let r = self.get(s)?;
                filter
                    .is_none_or(|f| f.matches(&r.metadata))
                    .then(|| r.id.to_string())
            })
            .collect()
    }

    /// Ids of the live entries of a source document, sorted.
    pub(crate) fn ids_of_ref(&self, ref_doc_id: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .by_ref
            .get(ref_doc_id)
            .map(|slots| {
                slots
                    .iter()
                    .map(|&s| id_of(&self.ids, &self.id_at, s).to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    fn ref_doc_id(&self, slot: u32) -> Option<&str> {
        self.extras[slot as usize].as_ref()?.ref_doc_id.as_deref()
    }

    /// Enters live `slot` in both maps.
    fn link(&mut self, slot: u32) {
        let (ids, id_at, hasher) = (&self.ids, &self.id_at, &self.hasher);
        let id = id_of(ids, id_at, slot);
        self.by_id.insert_unique(hasher.hash_one(id), slot, |&s| {
            hasher.hash_one(id_of(ids, id_at, s))
        });
        if let Some(r) = self.extras[slot as usize]
            .as_ref()
            .and_then(|e| e.ref_doc_id.as_deref())
        {
            match self.by_ref.get_mut(r) {
                Some(list) => list.push(slot),
                None => {
                    self.by_ref.insert(r.to_string(), vec![slot]);
                }
            }
        }
    }

    /// Takes `slot` out of both maps and marks it dead, returning where
    /// its id starts in the arena (`None` if it was dead already). Its
    /// extras stay for the caller to clear, refill or move.
    fn unmap(&mut self, slot: u32) -> Option<u64> {
        let at = self.id_at[slot as usize];
        if at == DEAD {
            return None;
        }
        let id = id_in(&self.ids, at).0;
        if let Ok(e) = self
            .by_id
            .find_entry(self.hasher.hash_one(id), |&s| s == slot)
        {
            e.remove();
        }
        if let Some(r) = self.ref_doc_id(slot).map(str::to_string) {
            if let Some(list) = self.by_ref.get_mut(r.as_str()) {
                list.retain(|&s| s != slot);
                if list.is_empty() {
                    self.by_ref.remove(r.as_str());
                }
            }
        }
        self.id_at[slot as usize] = DEAD;
        self.live -= 1;
        Some(at)
    }

    /// [`Self::unmap`], counting the id's arena bytes as garbage.
    fn unlink(&mut self, slot: u32) {
        if let Some(at) = self.unmap(slot) {
            self.dead_bytes += id_in(&self.ids, at).1;
        }
    }

    /// Stores `rec` in the dead `slot` and links it.
    fn fill(&mut self, slot: u32, rec: Record) {
        let Record {
            id,
            text,
            metadata,
            ref_doc_id,
        } = rec;
        self.id_at[slot as usize] = append_id(&mut self.ids, &id);
        self.extras[slot as usize] =
            (!text.is_empty() || !metadata.is_empty() || ref_doc_id.is_some()).then(|| {
                Box::new(Extras {
                    text,
                    metadata: store_metadata(metadata),
                    ref_doc_id,
                })
            });
        self.link(slot);
        self.live += 1;
    }

    /// Rewrites the arena without the ids of removed slots once they are
    /// most of it, so churn (re-upserts, deletes) does not grow it forever.
    fn reclaim(&mut self) {
        if self.dead_bytes < 4096 || self.dead_bytes * 2 < self.ids.len() {
            return;
        }
        let mut ids = Vec::with_capacity(self.ids.len() - self.dead_bytes);
        for at in self.id_at.iter_mut().filter(|at| **at != DEAD) {
            *at = append_id(&mut ids, id_in(&self.ids, *at).0);
        }
        self.ids = ids;
        self.dead_bytes = 0;
    }

    /// Appends a record whose id is not present; returns its slot.
    pub(crate) fn push(&mut self, rec: Record) -> u32 {
        let slot = self.id_at.len() as u32;
        self.id_at.push(DEAD);
        self.extras.push(None);
        self.fill(slot, rec);
        slot
    }

    /// Replaces the record in a live slot in place (upsert of an existing id
    /// in the flat index).
    pub(crate) fn replace(&mut self, slot: u32, rec: Record) {
        self.unlink(slot);
        self.fill(slot, rec);
        self.reclaim();
    }

    /// Marks a slot dead, keeping its place (HNSW).
    pub(crate) fn tombstone(&mut self, slot: u32) {
        if (slot as usize) < self.id_at.len() {
            self.unlink(slot);
            self.extras[slot as usize] = None;
            self.reclaim();
        }
    }

    /// Removes a slot by moving the last slot into it (flat index, which
    /// keeps its rows dense). Returns the slot that moved, if any.
    pub(crate) fn swap_remove(&mut self, slot: u32) -> Option<u32> {
        let last = self.id_at.len().checked_sub(1)? as u32;
        self.unlink(slot);
        self.extras[slot as usize] = None;
        if slot != last {
            // The last record moves into `slot`: out of the maps under its
            // old slot, back in under the new one; its id stays where it is
            // in the arena.
            if let Some(at) = self.unmap(last) {
                self.id_at[slot as usize] = at;
                self.extras.swap(slot as usize, last as usize);
                self.link(slot);
                self.live += 1;
            }
        }
        self.id_at.pop();
        self.extras.pop();
        self.reclaim();
        (slot != last).then_some(last)
    }
}

/// [`Records::slots`]: the same JSON as a `Vec<Option<Record>>`, written
/// without building one.
struct SlotList<'a>(&'a Records);

impl Serialize for SlotList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut seq = s.serialize_seq(Some(r.capacity()))?;
        for slot in 0..r.capacity() {
            seq.serialize_element(&r.get(slot))?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, doc: Option<&str>) -> Record {
        Record {
            id: id.into(),
            text: String::new(),
            metadata: Default::default(),
            ref_doc_id: doc.map(Into::into),
        }
    }

    /// Checks the invariant against a scan of the slots.
    fn check(r: &Records) {
        let mut live = 0;
        let mut id_bytes = 0;
        for s in 0..r.capacity() {
            match r.get(s) {
                Some(rec) => {
                    live += 1;
                    id_bytes += id_in(&r.ids, r.id_at[s]).1;
                    assert_eq!(r.slot_of(rec.id), Some(s as u32), "{}", rec.id);
                    if let Some(d) = rec.ref_doc_id {
                        assert!(r.ids_of_ref(d).contains(&rec.id.to_string()));
                    }
                }
                None => assert!(r.extras[s].is_none(), "extras kept by dead slot {s}"),
            }
        }
        assert_eq!(r.live, live);
        assert_eq!(r.by_id.len(), live);
        assert_eq!(id_bytes + r.dead_bytes, r.ids.len());
        let in_refs: usize = r.by_ref.values().map(Vec::len).sum();
        let with_ref = (0..r.capacity()).filter_map(|s| r.get(s)?.ref_doc_id);
        assert_eq!(in_refs, with_ref.count());
    }

    /// Every mutation keeps both maps in step with the slots, across the
    /// table's resizes and the flat index's swap-remove.
    #[test]
    fn maps_follow_push_replace_tombstone_and_swap_remove() {
        let mut r = Records::default();
        for i in 0..500 {
            let doc = format!("d{}", i % 7);
            r.push(rec(&format!("id{i}"), (i % 3 != 0).then_some(doc.as_str())));
        }
        check(&r);
        for i in (0..500).step_by(5) {
            let slot = r.slot_of(&format!("id{i}")).unwrap();
            r.tombstone(slot);
        }
        check(&r);
        assert_eq!(r.slot_of("id5"), None);
        for i in (1..500).step_by(7) {
            if let Some(slot) = r.slot_of(&format!("id{i}")) {
                r.replace(slot, rec(&format!("new{i}"), Some("d9")));
            }
        }
        check(&r);
        assert_eq!(r.slot_of("id1"), None);
        assert!(r.ids_of_ref("d9").contains(&"new1".to_string()));
        while r.capacity() > 40 {
            let slot = (r.capacity() * 7 / 13) as u32;
            r.swap_remove(slot);
            check(&r);
        }
        let ids = r.ids_of_ref("d1");
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    /// Ids of every length the arena's length prefix takes (1, 2 and 3
    /// bytes), non-ASCII ids, extras, churn that reclaims the arena, and
    /// the saved JSON: the same as a `Vec<Option<Record>>` would write.
    #[test]
    fn ids_survive_churn_and_save_as_plain_records() {
        let long = |i: usize| format!("{i}-{}", "é".repeat(i % 200 * 100));
        let mut r = Records::default();
        let mut model: Vec<Option<Record>> = Vec::new();
        for i in 0..300 {
            let mut rec = rec(&long(i), (i % 4 == 0).then_some("doc"));
            if i % 3 == 0 {
                rec.text = format!("text {i}");
                rec.metadata.insert("k".into(), (i as i64).into());
                rec.metadata.insert("a".into(), vec!["x", "y"].into());
            }
            model.push(Some(rec.clone()));
            r.push(rec);
        }
        for round in 0..5 {
            for i in (round..300).step_by(4) {
                let fresh = rec(&format!("r{round}-{}", long(i)), None);
                r.replace(i as u32, fresh.clone());
                model[i] = Some(fresh);
            }
            for i in (round * 7..300).step_by(11) {
                r.tombstone(i as u32);
                model[i] = None;
            }
            check(&r);
        }
        assert!(r.ids.len() < 2 * (r.ids.len() - r.dead_bytes) + 4096);
        for (s, m) in model.iter().enumerate() {
            assert_eq!(r.get(s).map(|x| x.to_record()), *m, "slot {s}");
            if let Some(m) = m {
                let stored = r.get(s).unwrap().metadata;
                for key in ["a", "k", "missing", ""] {
                    assert_eq!(stored.get(key), m.metadata.get(key), "slot {s} key {key:?}");
                }
            }
        }
        let saved = serde_json::to_string(&r.slots()).unwrap();
        assert_eq!(saved, serde_json::to_string(&model).unwrap());
        let back = Records::from_slots(serde_json::from_str(&saved).unwrap()).unwrap();
        check(&back);
        let live: Vec<Record> = back.into_live().map(|(_, rec)| rec).collect();
        assert_eq!(live, model.into_iter().flatten().collect::<Vec<_>>());
    }

    #[test]
    fn grow_leaves_at_most_an_eighth_unused_after_batches() {
        let mut v: Vec<u64> = Vec::new();
        for _ in 0..1000 {
            grow(&mut v, 100);
            v.extend(0..100);
        }
        assert!(v.capacity() <= v.len() + v.len() / 8, "{}", v.capacity());
    }
}
