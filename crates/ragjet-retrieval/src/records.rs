//! Id bookkeeping shared by both indexes: external string ids ↔ internal
//! slots, per-slot text and metadata, and the `ref_doc_id` → ids map.

use std::collections::{BTreeSet, HashMap};

use crate::types::Record;

/// Slot table. A slot is the internal id (row in the flat index, data id in
/// the HNSW graph); `None` marks a tombstone.
#[derive(Debug, Default, Clone)]
pub(crate) struct Records {
    slots: Vec<Option<Record>>,
    by_id: HashMap<String, u32>,
    by_ref: HashMap<String, BTreeSet<String>>,
    live: usize,
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
                    if r.by_id.contains_key(&rec.id) {
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

    pub(crate) fn live(&self) -> usize {
        self.live
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn slot_of(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
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

    pub(crate) fn ids_of_ref(&self, ref_doc_id: &str) -> Vec<String> {
        self.by_ref
            .get(ref_doc_id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Appends a record whose id is not present; returns its slot.
    pub(crate) fn push(&mut self, rec: Record) -> u32 {
        let slot = self.slots.len() as u32;
        self.by_id.insert(rec.id.clone(), slot);
        if let Some(r) = &rec.ref_doc_id {
            self.by_ref
                .entry(r.clone())
                .or_default()
                .insert(rec.id.clone());
        }
        self.slots.push(Some(rec));
        self.live += 1;
        slot
    }

    fn unlink(&mut self, rec: &Record) {
        self.by_id.remove(&rec.id);
        if let Some(r) = &rec.ref_doc_id {
            if let Some(set) = self.by_ref.get_mut(r) {
                set.remove(&rec.id);
                if set.is_empty() {
                    self.by_ref.remove(r);
                }
            }
        }
    }

    /// Replaces the record in a live slot in place (upsert of an existing id
    /// in the flat index).
    pub(crate) fn replace(&mut self, slot: u32, rec: Record) {
        if let Some(old) = self.slots[slot as usize].take() {
            self.unlink(&old);
            self.live -= 1;
        }
        self.by_id.insert(rec.id.clone(), slot);
        if let Some(r) = &rec.ref_doc_id {
            self.by_ref
                .entry(r.clone())
                .or_default()
                .insert(rec.id.clone());
        }
        self.slots[slot as usize] = Some(rec);
        self.live += 1;
    }

    /// Marks a slot dead, keeping its place (HNSW).
    pub(crate) fn tombstone(&mut self, slot: u32) -> Option<Record> {
        let rec = self.slots.get_mut(slot as usize)?.take()?;
        self.unlink(&rec);
        self.live -= 1;
        Some(rec)
    }

    /// Removes a slot by moving the last slot into it (flat index, which
    /// keeps its rows dense). Returns the slot that moved, if any.
    pub(crate) fn swap_remove(&mut self, slot: u32) -> Option<u32> {
        let last = self.slots.len().checked_sub(1)? as u32;
        if let Some(rec) = self.slots.swap_remove(slot as usize) {
            self.unlink(&rec);
            self.live -= 1;
        }
        if slot != last {
            if let Some(moved) = &self.slots[slot as usize] {
                self.by_id.insert(moved.id.clone(), slot);
            }
            Some(last)
        } else {
            None
        }
    }
}
