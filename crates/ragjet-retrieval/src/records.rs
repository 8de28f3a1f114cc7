//! Id bookkeeping shared by both indexes: external string ids ↔ internal
//! slots, per-slot text and metadata, and the `ref_doc_id` → slots map.
//!
//! Memory, which matters because an index holds millions of entries whose
//! rows may be a few dozen bytes (binary codes): a slot costs 8 bytes plus
//! its id's bytes and one more when it has no text, metadata or source
//! document. Ids live back to back in one arena (no allocation, header or
//! capacity slack per id), each followed by the number of its [`Extras`]
//! (text, metadata and `ref_doc_id`), which only the slots that have any
//! take, in one dense table: no pointer per slot, no allocation per entry. The id → slot table holds `u32` slots,
//! found by hashing the id and comparing it with the arena's (5 bytes per
//! bucket, against 33 for a `HashMap<String, u32>` plus a second heap copy
//! of every id), and the `ref_doc_id` map holds slots, not id copies.
//! Measured per entry in `tests/memory.rs`.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use serde::ser::{Serialize, SerializeSeq, Serializer};

use crate::types::{store_metadata, Metadata, MetadataRef, Record, RecordRef, StoredMetadata};

/// What a slot keeps besides its id; only slots with any of it take one.
#[derive(Debug, Clone, Default)]
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
    /// Per slot, a LEB128 length, the id's UTF-8 bytes, and a LEB128
    /// reference into `extras` (0: none, `i + 1`: `extras[i]`).
    ids: Vec<u8>,
    /// Per slot, where its entry starts in `ids` (`DEAD` for a tombstone).
    id_at: Vec<u64>,
    /// The extras of the slots that have any; the unused ones are empty
    /// and listed in `free_extras`.
    extras: Vec<Extras>,
    free_extras: Vec<u32>,
    dead_bytes: usize,
    by_id: HashTable<u32>,
    /// Randomly seeded SipHash, as `HashMap`'s: ids come from users, so a
    /// fixed hash would let crafted ids degrade every lookup.
    hasher: std::collections::hash_map::RandomState,
    by_ref: HashMap<String, Vec<u32>>,
    live: usize,
}

/// Reads a LEB128 number at `*at`, moving `*at` past it.
#[inline]
fn read_leb(ids: &[u8], at: &mut usize) -> usize {
    let (mut n, mut shift) = (0usize, 0);
    loop {
        let b = ids[*at];
        *at += 1;
        n |= usize::from(b & 0x7f) << shift;
        if b < 0x80 {
            return n;
        }
        shift += 7;
    }
}

fn push_leb(ids: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            ids.push(b);
            return;
        }
        ids.push(b | 0x80);
    }
}

/// An arena entry: the id, its extras' index, and the bytes it takes.
struct ArenaEntry<'a> {
    id: &'a str,
    extras: Option<usize>,
    bytes: usize,
}

/// The entry starting at `at` in the arena.
#[inline]
fn entry_in(ids: &[u8], at: u64) -> ArenaEntry<'_> {
    let start = at as usize;
    let mut at = start;
    let len = read_leb(ids, &mut at);
    // SAFETY: the arena receives only whole `&str`s (`append_entry`), and
    // `at` is the start of one of them.
    let id = unsafe { std::str::from_utf8_unchecked(&ids[at..at + len]) };
    at += len;
    let extras = read_leb(ids, &mut at).checked_sub(1);
    ArenaEntry {
        id,
        extras,
        bytes: at - start,
    }
}

/// The id stored at `at` in the arena.
#[inline]
fn id_in(ids: &[u8], at: u64) -> &str {
    let mut at = at as usize;
    let len = read_leb(ids, &mut at);
    // SAFETY: as in `entry_in`.
    unsafe { std::str::from_utf8_unchecked(&ids[at..at + len]) }
}

/// Appends an entry for `id` with extras `extras` to the arena; returns
/// where it starts.
fn append_entry(ids: &mut Vec<u8>, id: &str, extras: Option<usize>) -> u64 {
    let at = ids.len() as u64;
    grow(ids, 20 + id.len());
    push_leb(ids, id.len());
    ids.extend_from_slice(id.as_bytes());
    push_leb(ids, extras.map_or(0, |e| e + 1));
    at
}

/// The id of a live slot (`""` for a tombstone, which the table never
/// holds).
fn id_of<'a>(ids: &'a [u8], id_at: &[u64], slot: u32) -> &'a str {
    match id_at[slot as usize] {
        DEAD => "",
        at => id_in(ids, at),
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
                None => r.id_at.push(DEAD),
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
            ids,
            id_at,
            mut extras,
            ..
        } = self;
        id_at
            .into_iter()
            .enumerate()
            .filter(|&(_, at)| at != DEAD)
            .map(move |(slot, at)| {
                let entry = entry_in(&ids, at);
                let id = entry.id.to_string();
                let rec = match entry.extras.map(|e| std::mem::take(&mut extras[e])) {
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

    /// Makes room for `additional` more slots (see [`grow`]; the extras
    /// grow as entries with any arrive).
    pub(crate) fn reserve(&mut self, additional: usize) {
        grow(&mut self.id_at, additional);
    }

    /// The extras of the entry at `at`, if it has any.
    #[inline]
    fn extras_at(&self, at: u64) -> Option<&Extras> {
        entry_in(&self.ids, at).extras.map(|e| &self.extras[e])
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
            at => Some(id_in(&self.ids, at)),
        }
    }

    /// The metadata of a live slot (empty when it has none). Called per
    /// row by filtered scans: liveness is the slot's offset.
    #[inline]
    pub(crate) fn metadata(&self, slot: usize) -> Option<MetadataRef<'_>> {
        match *self.id_at.get(slot)? {
            DEAD => None,
            at => Some(
                self.extras_at(at)
                    .map_or(MetadataRef::EMPTY, |e| MetadataRef(&e.metadata)),
            ),
        }
    }

    pub(crate) fn get(&self, slot: usize) -> Option<RecordRef<'_>> {
        let at = *self.id_at.get(slot)?;
        if at == DEAD {
            return None;
        }
        let entry = entry_in(&self.ids, at);
        let id = entry.id;
        Some(match entry.extras.map(|e| &self.extras[e]) {
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
        match self.id_at[slot as usize] {
            DEAD => None,
            at => self.extras_at(at)?.ref_doc_id.as_deref(),
        }
    }

    /// Enters live `slot` in both maps.
    fn link(&mut self, slot: u32) {
        let (ids, id_at, hasher) = (&self.ids, &self.id_at, &self.hasher);
        let id = id_of(ids, id_at, slot);
        self.by_id.insert_unique(hasher.hash_one(id), slot, |&s| {
            hasher.hash_one(id_of(ids, id_at, s))
        });
        let (ids, extras) = (&self.ids, &self.extras);
        let entry = entry_in(ids, self.id_at[slot as usize]);
        if let Some(r) = entry.extras.and_then(|e| extras[e].ref_doc_id.as_deref()) {
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
        let id = id_in(&self.ids, at);
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

    /// [`Self::unmap`], counting the entry's arena bytes as garbage and
    /// freeing its extras.
    fn unlink(&mut self, slot: u32) {
        if let Some(at) = self.unmap(slot) {
            let entry = entry_in(&self.ids, at);
            self.dead_bytes += entry.bytes;
            if let Some(e) = entry.extras {
                self.extras[e] = Extras::default();
                self.free_extras.push(e as u32);
            }
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
        let extras =
            (!text.is_empty() || !metadata.is_empty() || ref_doc_id.is_some()).then(|| {
                let e = Extras {
                    text,
                    metadata: store_metadata(metadata),
                    ref_doc_id,
                };
                match self.free_extras.pop() {
                    Some(i) => {
                        self.extras[i as usize] = e;
                        i as usize
                    }
                    None => {
                        grow(&mut self.extras, 1);
                        self.extras.push(e);
                        self.extras.len() - 1
                    }
                }
            });
        self.id_at[slot as usize] = append_entry(&mut self.ids, &id, extras);
        self.link(slot);
        self.live += 1;
    }

    /// Rewrites the arena and the extras without what removed slots left
    /// once that is most of either, so churn (re-upserts, deletes) does not
    /// grow them forever.
    fn reclaim(&mut self) {
        let arena = self.dead_bytes >= 4096 && self.dead_bytes * 2 >= self.ids.len();
        let free = self.free_extras.len();
        if !arena && (free < 64 || free * 2 < self.extras.len()) {
            return;
        }
        let mut ids = Vec::with_capacity(self.ids.len() - self.dead_bytes);
        let mut extras = Vec::with_capacity(self.extras.len() - free);
        for at in self.id_at.iter_mut().filter(|at| **at != DEAD) {
            let entry = entry_in(&self.ids, *at);
            let moved = entry.extras.map(|e| {
                extras.push(std::mem::take(&mut self.extras[e]));
                extras.len() - 1
            });
            *at = append_entry(&mut ids, entry.id, moved);
        }
        self.ids = ids;
        self.extras = extras;
        self.free_extras = Vec::new();
        self.dead_bytes = 0;
    }

    /// Appends a record whose id is not present; returns its slot.
    pub(crate) fn push(&mut self, rec: Record) -> u32 {
        let slot = self.id_at.len() as u32;
        self.id_at.push(DEAD);
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
            self.reclaim();
        }
    }

    /// Removes a slot by moving the last slot into it (flat index, which
    /// keeps its rows dense). Returns the slot that moved, if any.
    pub(crate) fn swap_remove(&mut self, slot: u32) -> Option<u32> {
        let last = self.id_at.len().checked_sub(1)? as u32;
        self.unlink(slot);
        if slot != last {
            // The last record moves into `slot`: out of the maps under its
            // old slot, back in under the new one; its entry (id and
            // extras) stays where it is.
            if let Some(at) = self.unmap(last) {
                self.id_at[slot as usize] = at;
                self.link(slot);
                self.live += 1;
            }
        }
        self.id_at.pop();
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
        let mut extras_used = vec![false; r.extras.len()];
        for s in 0..r.capacity() {
            if let Some(rec) = r.get(s) {
                live += 1;
                let entry = entry_in(&r.ids, r.id_at[s]);
                id_bytes += entry.bytes;
                if let Some(e) = entry.extras {
                    assert!(!extras_used[e], "extras {e} shared");
                    extras_used[e] = true;
                }
                assert_eq!(r.slot_of(rec.id), Some(s as u32), "{}", rec.id);
                if let Some(d) = rec.ref_doc_id {
                    assert!(r.ids_of_ref(d).contains(&rec.id.to_string()));
                }
            }
        }
        // Every extras entry is either a live slot's or free (and empty).
        for &f in &r.free_extras {
            assert!(!extras_used[f as usize], "extras {f} free and in use");
            extras_used[f as usize] = true;
            assert!(r.extras[f as usize].text.is_empty());
        }
        assert!(extras_used.iter().all(|&u| u), "extras leaked");
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

    /// Extras of replaced and deleted entries are reused, then dropped
    /// once most of the table is free; the others keep theirs.
    #[test]
    fn freed_extras_are_reused_then_reclaimed() {
        let with_text = |id: String| Record {
            text: format!("text of {id}"),
            ..rec(&id, Some("doc"))
        };
        let mut r = Records::default();
        for i in 0..200 {
            r.push(with_text(format!("a{i}")));
        }
        r.tombstone(r.slot_of("a0").unwrap());
        r.push(with_text("b".into()));
        assert_eq!(r.extras.len(), 200, "a freed extras entry is reused");
        for i in 1..150 {
            r.replace(
                r.slot_of(&format!("a{i}")).unwrap(),
                rec(&format!("c{i}"), None),
            );
            check(&r);
        }
        // 200 → 100 when half was free; 49 freed since, under the bound.
        assert_eq!((r.extras.len(), r.free_extras.len()), (100, 49));
        assert_eq!(
            r.get(r.slot_of("a199").unwrap() as usize).unwrap().text,
            "text of a199"
        );
        assert_eq!(r.ids_of_ref("doc").len(), 51);
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
