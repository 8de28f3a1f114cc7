//! Id bookkeeping shared by both indexes: external string ids ↔ internal
//! slots, per-slot text and metadata, and the `ref_doc_id` → slots map.
//!
//! Memory: an id is stored once, in its slot's [`Record`]. The id → slot
//! table holds only `u32` slots, found by hashing the id and comparing it
//! with the record's (5 bytes per bucket, against 33 for a
//! `HashMap<String, u32>` plus a second heap copy of every id), and the
//! `ref_doc_id` map holds slots, not id copies. Measured per entry in
//! `tests/memory.rs`.

use std::collections::HashMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::types::Record;

/// Slot table. A slot is the internal id (row in the flat index, data id in
/// the HNSW graph); `None` marks a tombstone.
///
/// Invariant: `by_id` holds exactly the live slots, each under the hash of
/// its record's id; `by_ref[r]` exactly the live slots whose record has
/// `ref_doc_id == Some(r)` (never empty).
#[derive(Debug, Default, Clone)]
pub(crate) struct Records {
    slots: Vec<Option<Record>>,
    by_id: HashTable<u32>,
    /// Randomly seeded SipHash, as `HashMap`'s: ids come from users, so a
    /// fixed hash would let crafted ids degrade every lookup.
    hasher: std::collections::hash_map::RandomState,
    by_ref: HashMap<String, Vec<u32>>,
    live: usize,
}

/// The id of a live slot (`""` for a tombstone, which the table never
/// holds).
fn id_at(slots: &[Option<Record>], slot: u32) -> &str {
    slots[slot as usize].as_ref().map_or("", |r| r.id.as_str())
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
        let mut r = Records {
            slots: Vec::with_capacity(slots.len()),
            ..Default::default()
        };
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
                None => r.slots.push(None),
            }
        }
        Ok(r)
    }

    pub(crate) fn slots(&self) -> &[Option<Record>] {
        &self.slots
    }

    /// The slots, giving up the maps.
    pub(crate) fn into_slots(self) -> Vec<Option<Record>> {
        self.slots
    }

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Makes room for `additional` more slots (see [`grow`]).
    pub(crate) fn reserve(&mut self, additional: usize) {
        grow(&mut self.slots, additional);
    }

    pub(crate) fn slot_of(&self, id: &str) -> Option<u32> {
        let slots = &self.slots;
        self.by_id
            .find(self.hasher.hash_one(id), |&s| id_at(slots, s) == id)
            .copied()
    }

    #[inline]
    pub(crate) fn get(&self, slot: usize) -> Option<&Record> {
        self.slots.get(slot).and_then(|r| r.as_ref())
    }

    pub(crate) fn by_id(&self, id: &str) -> Option<&Record> {
        self.slot_of(id).and_then(|s| self.get(s as usize))
    }

    /// Ids of live entries passing `filter`, in slot order.
    pub(crate) fn ids_matching(
        &self,
        filter: Option<&crate::filter::MetadataFilters>,
    ) -> Vec<String> {
        self.slots
            .iter()
            .flatten()
            .filter(|r| filter.is_none_or(|f| f.matches(&r.metadata)))
            .map(|r| r.id.clone())
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
                    .map(|&s| id_at(&self.slots, s).to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort_unstable();
        ids
    }

    /// Enters the record now in live `slot` in both maps.
    fn link(&mut self, slot: u32) {
        let Some(rec) = self.slots[slot as usize].as_ref() else {
            return;
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_id
            .insert_unique(hasher.hash_one(rec.id.as_str()), slot, |&s| {
                hasher.hash_one(id_at(slots, s))
            });
        if let Some(r) = &rec.ref_doc_id {
            match self.by_ref.get_mut(r.as_str()) {
                Some(list) => list.push(slot),
                None => {
                    self.by_ref.insert(r.clone(), vec![slot]);
                }
            }
        }
    }

    /// Removes `slot`, whose record is `rec`, from both maps.
    fn unlink(&mut self, slot: u32, rec: &Record) {
        if let Ok(e) = self
            .by_id
            .find_entry(self.hasher.hash_one(rec.id.as_str()), |&s| s == slot)
        {
            e.remove();
        }
        if let Some(r) = &rec.ref_doc_id {
            if let Some(list) = self.by_ref.get_mut(r.as_str()) {
                list.retain(|&s| s != slot);
                if list.is_empty() {
                    self.by_ref.remove(r.as_str());
                }
            }
        }
    }

    /// Appends a record whose id is not present; returns its slot.
    pub(crate) fn push(&mut self, rec: Record) -> u32 {
        let slot = self.slots.len() as u32;
        self.slots.push(Some(rec));
        self.link(slot);
        self.live += 1;
        slot
    }

    /// Replaces the record in a live slot in place (upsert of an existing id
    /// in the flat index).
    pub(crate) fn replace(&mut self, slot: u32, rec: Record) {
        if let Some(old) = self.slots[slot as usize].take() {
            self.unlink(slot, &old);
            self.live -= 1;
        }
        self.slots[slot as usize] = Some(rec);
        self.link(slot);
        self.live += 1;
    }

    /// Marks a slot dead, keeping its place (HNSW).
    pub(crate) fn tombstone(&mut self, slot: u32) -> Option<Record> {
        let rec = self.slots.get_mut(slot as usize)?.take()?;
        self.unlink(slot, &rec);
        self.live -= 1;
        Some(rec)
    }

    /// Removes a slot by moving the last slot into it (flat index, which
    /// keeps its rows dense). Returns the slot that moved, if any.
    pub(crate) fn swap_remove(&mut self, slot: u32) -> Option<u32> {
        let last = self.slots.len().checked_sub(1)? as u32;
        if let Some(rec) = self.slots[slot as usize].take() {
            self.unlink(slot, &rec);
            self.live -= 1;
        }
        if slot == last {
            self.slots.pop();
            return None;
        }
        // The last record moves into `slot`: out of the maps under its
        // old slot, back in under the new one.
        if let Some(moved) = self.slots[last as usize].take() {
            self.unlink(last, &moved);
            self.slots[slot as usize] = Some(moved);
            self.link(slot);
        }
        self.slots.pop();
        Some(last)
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
        for (s, rec) in r.slots.iter().enumerate() {
            if let Some(rec) = rec {
                live += 1;
                assert_eq!(r.slot_of(&rec.id), Some(s as u32), "{}", rec.id);
                if let Some(d) = &rec.ref_doc_id {
                    assert!(r.ids_of_ref(d).contains(&rec.id));
                }
            }
        }
        assert_eq!(r.live, live);
        assert_eq!(r.by_id.len(), live);
        let in_refs: usize = r.by_ref.values().map(Vec::len).sum();
        let with_ref = r.slots.iter().flatten().filter(|x| x.ref_doc_id.is_some());
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
