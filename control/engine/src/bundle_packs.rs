//! Packs of bundles: on AWS, init_job stores a run's small bundles back to back in a few
//! objects instead of one object each.
//!
//! A PUT is S3's most expensive request, and one per order was an eighth of a wide run's
//! calls. A worker reads its own bundle from a pack with a ranged GET whose range, and the
//! pack's entity tag it is pinned to (`If-Range`), are signed into its URL
//! ([`crate::ports::Presigned::GetRange`]), so it can read no other order's. Bundles larger
//! than [`MAX_PACKED_BUNDLE`] are stored alone as before, and locally, where a write costs
//! nothing and a bundle is a file one can open, nothing is packed.

use sluice_contract::RunId;
use sluice_contract::dispatch::PinnedRange;
use sluice_contract::keys;

use crate::ports::PackedBundle;

/// The largest bundle put in a pack, bytes.
pub(crate) const MAX_PACKED_BUNDLE: usize = 256 * 1024;

/// A pack is stored once it holds this much, bytes: init_job holds at most one pack, and
/// the packages in flight, in memory.
pub(crate) const PACK_BYTES: usize = 8 * 1024 * 1024;

/// A pack ready to store.
pub(crate) struct FullPack {
    /// Where it goes ([`keys::bundle_pack`]).
    pub key: String,
    /// The bundles, back to back.
    pub bytes: Vec<u8>,
    /// The ids its bundles were added with, whose ranges are pinned to the pack's entity
    /// tag once it is stored.
    pub members: Vec<usize>,
}

/// The run's packs as init_job fills them, one at a time.
pub(crate) struct BundlePacks {
    run_id: RunId,
    /// The number of the pack being filled.
    pack: u32,
    filling: Vec<u8>,
    members: Vec<usize>,
}

impl BundlePacks {
    /// No packs yet for `run_id`.
    pub fn new(run_id: &RunId) -> Self {
        BundlePacks {
            run_id: run_id.clone(),
            pack: 0,
            filling: Vec::new(),
            members: Vec::new(),
        }
    }

    /// Whether `bundle` (its size) goes in a pack rather than alone.
    pub fn takes(bundle: &[u8]) -> bool {
        !bundle.is_empty() && bundle.len() <= MAX_PACKED_BUNDLE
    }

    /// Adds `bundle` (one [`BundlePacks::takes`]) under the caller's `id`: where it is (its
    /// entity tag still empty), and the pack to store first when it did not fit in the
    /// one being filled.
    pub fn add(&mut self, id: usize, bundle: &[u8]) -> (PackedBundle, Option<FullPack>) {
        let full = if self.filling.len() + bundle.len() > PACK_BYTES {
            self.take_filling()
        } else {
            None
        };
        let range = PinnedRange {
            start: self.filling.len() as u64,
            len: bundle.len() as u64,
            etag: String::new(),
        };
        self.filling.extend_from_slice(bundle);
        self.members.push(id);
        let placed = PackedBundle {
            pack: self.pack,
            range,
        };
        (placed, full)
    }

    /// The last pack, when it holds anything.
    pub fn finish(mut self) -> Option<FullPack> {
        self.take_filling()
    }

    fn take_filling(&mut self) -> Option<FullPack> {
        if self.filling.is_empty() {
            return None;
        }
        let full = FullPack {
            key: keys::bundle_pack(&self.run_id, self.pack),
            bytes: std::mem::take(&mut self.filling),
            members: std::mem::take(&mut self.members),
        };
        self.pack += 1;
        Some(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bundle_is_found_at_its_range_of_its_pack_and_packs_stay_under_their_size() {
        let run = RunId::generate();
        let mut packs = BundlePacks::new(&run);
        let mut stored = std::collections::HashMap::new();
        let mut placed = Vec::new();
        let bundles: Vec<Vec<u8>> = (0..100u8)
            .map(|i| vec![i; MAX_PACKED_BUNDLE - usize::from(i) * 997])
            .collect();
        let mut members = Vec::new();
        for (id, bundle) in bundles.iter().enumerate() {
            assert!(BundlePacks::takes(bundle));
            let (at, full) = packs.add(id, bundle);
            if let Some(full) = full {
                members.extend(full.members);
                stored.insert(full.key, full.bytes);
            }
            placed.push(at);
        }
        let last = packs.finish().unwrap();
        members.extend(last.members);
        stored.insert(last.key, last.bytes);
        // Every bundle is a member of the one pack its place names.
        assert_eq!(members, (0..bundles.len()).collect::<Vec<_>>());
        assert!(stored.len() > 1 && stored.values().all(|p| p.len() <= PACK_BYTES));
        for (bundle, at) in bundles.iter().zip(placed) {
            let pack = &stored[&keys::bundle_pack(&run, at.pack)];
            let start = usize::try_from(at.range.start).unwrap();
            let end = start + usize::try_from(at.range.len).unwrap();
            assert_eq!(&pack[start..end], &bundle[..]);
        }
    }

    #[test]
    fn large_and_empty_bundles_stay_alone_and_no_bundles_make_no_pack() {
        assert!(!BundlePacks::takes(&vec![1; MAX_PACKED_BUNDLE + 1]));
        assert!(!BundlePacks::takes(&[]));
        assert!(BundlePacks::new(&RunId::generate()).finish().is_none());
    }
}
