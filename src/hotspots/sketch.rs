//! Space-Saving (Metwally, Agrawal, El Abbadi, "Efficient Computation of Frequent and Top-k
//! Elements in Data Streams", 2005): the `capacity` most frequent keys of a stream in fixed
//! memory.
//!
//! Each monitored key has a count and an error. A key not monitored takes the place of the key
//! with the smallest count `m` and starts at `m + 1` with error `m`. So for every monitored key
//! `count - error <= true count <= count`, and `error <= n / capacity` after `n` offers: any key
//! seen more than `n / capacity` times is monitored.
//!
//! Built for the sampled query path (bench/hotspots.rs): keys live in fixed slots with their
//! bytes inline (an eviction allocates nothing), the map from key to slot is keyed by a 64-bit
//! hash of the key through a pass-through hasher, and the min-heap orders slot numbers, so a
//! sift moves `u32`s and updates a position array, never a map. Two keys whose 64-bit hashes
//! collide would share a counter: at 256 keys, a chance of about 2^-48.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The longest key a slot holds, in bytes ([`super::KEY_BYTES`] plus the `…` of a cut key).
pub const SLOT_BYTES: usize = super::KEY_BYTES + 3;

/// One monitored key, as reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub key: Box<str>,
    /// An upper bound of the key's true count.
    pub count: u64,
    /// How much of `count` may belong to keys it replaced: `count - error` is a lower bound.
    pub error: u64,
}

#[derive(Clone)]
struct Slot {
    hash: u64,
    count: u64,
    error: u64,
    len: u8,
    bytes: [u8; SLOT_BYTES],
}

impl Slot {
    fn key(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("?")
    }
}

/// The map's keys are already hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        bytes
            .iter()
            .for_each(|&b| self.0 = self.0.rotate_left(8) ^ u64::from(b));
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A Space-Saving summary of at most `capacity` keys of at most [`SLOT_BYTES`] bytes.
#[derive(Clone)]
pub struct SpaceSaving {
    capacity: usize,
    /// Filled in order, never moved: a key keeps its slot until it is evicted.
    slots: Vec<Slot>,
    /// Slot numbers, a min-heap on their counts.
    heap: Vec<u32>,
    /// Slot number → its index in `heap`.
    position: Vec<u32>,
    /// Key hash → slot number; always the keys of `slots`.
    index: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
}

impl SpaceSaving {
    pub fn new(capacity: usize) -> SpaceSaving {
        let capacity = capacity.clamp(1, u32::MAX as usize);
        SpaceSaving {
            capacity,
            slots: Vec::new(),
            heap: Vec::new(),
            position: Vec::new(),
            index: HashMap::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The count a key that is not monitored may have had at most: the smallest count once the
    /// summary is full, else 0 (every key seen is monitored).
    pub fn floor(&self) -> u64 {
        if self.slots.len() < self.capacity {
            0
        } else {
            self.heap
                .first()
                .map_or(0, |&s| self.slots[s as usize].count)
        }
    }

    /// Counts `weight` occurrences of `key` (cut to [`SLOT_BYTES`] if longer).
    pub fn offer(&mut self, key: &str, weight: u64) {
        self.add(key, weight, 0);
    }

    /// `weight` more for `key`, of which `error` (already in `weight`) may belong to other keys.
    fn add(&mut self, key: &str, weight: u64, error: u64) {
        let key = cut(key);
        let hash = key_hash(key.as_bytes());
        if let Some(&s) = self.index.get(&hash) {
            let slot = &mut self.slots[s as usize];
            slot.count += weight;
            slot.error += error;
            self.sift_down(self.position[s as usize] as usize);
            return;
        }
        let mut bytes = [0u8; SLOT_BYTES];
        bytes[..key.len()].copy_from_slice(key.as_bytes());
        let mut slot = Slot {
            hash,
            count: weight,
            error,
            len: key.len() as u8,
            bytes,
        };
        if self.slots.len() < self.capacity {
            let s = self.slots.len() as u32;
            self.slots.push(slot);
            self.position.push(self.heap.len() as u32);
            self.heap.push(s);
            self.index.insert(hash, s);
            self.sift_up(self.heap.len() - 1);
            return;
        }
        // Full: the key with the smallest count gives its slot (and its count, as error).
        let s = self.heap[0];
        let min = self.slots[s as usize].count;
        slot.count += min;
        slot.error += min;
        let evicted = std::mem::replace(&mut self.slots[s as usize], slot);
        self.index.remove(&evicted.hash);
        self.index.insert(hash, s);
        self.sift_down(0);
    }

    /// Adds `other` into `self`, keeping the `capacity` largest counts (the merge of Agarwal et
    /// al., "Mergeable Summaries", 2012). A key missing from one summary may have had up to that
    /// summary's [`floor`](Self::floor) there: it is added to both its count and its error, so
    /// the bounds of every key still hold for the union of the two streams.
    pub fn merge(&mut self, other: &SpaceSaving) {
        let (mine, theirs) = (self.floor(), other.floor());
        let mut all: HashMap<u64, Counter> = HashMap::with_capacity(self.len() + other.len());
        for s in &self.slots {
            all.insert(s.hash, counter(s, theirs));
        }
        for s in &other.slots {
            match all.get_mut(&s.hash) {
                // Present in both: the floor added above was not owed.
                Some(m) => {
                    m.count = m.count - theirs + s.count;
                    m.error = m.error - theirs + s.error;
                }
                None => {
                    all.insert(s.hash, counter(s, mine));
                }
            }
        }
        let mut merged: Vec<Counter> = all.into_values().collect();
        sort(&mut merged);
        merged.truncate(self.capacity);
        self.clear();
        for c in merged {
            self.add(&c.key, c.count, c.error);
        }
    }

    /// The monitored keys, largest count first (ties by key, so reports are stable).
    pub fn top(&self, n: usize) -> Vec<Counter> {
        let mut all: Vec<Counter> = self.slots.iter().map(|s| counter(s, 0)).collect();
        sort(&mut all);
        all.truncate(n);
        all
    }

    pub fn clear(&mut self) {
        self.slots.clear();
        self.heap.clear();
        self.position.clear();
        self.index.clear();
    }

    fn count_at(&self, heap_index: usize) -> u64 {
        self.slots[self.heap[heap_index] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.position[self.heap[a] as usize] = a as u32;
        self.position[self.heap[b] as usize] = b as u32;
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.count_at(parent) <= self.count_at(i) {
                return;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut least = i;
            for child in [l, r] {
                if child < self.heap.len() && self.count_at(child) < self.count_at(least) {
                    least = child;
                }
            }
            if least == i {
                return;
            }
            self.swap(i, least);
            i = least;
        }
    }
}

fn counter(s: &Slot, floor: u64) -> Counter {
    Counter {
        key: s.key().into(),
        count: s.count + floor,
        error: s.error + floor,
    }
}

fn sort(counters: &mut [Counter]) {
    counters.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
}

/// `key` cut to at most [`SLOT_BYTES`] bytes, at a character boundary.
fn cut(key: &str) -> &str {
    let mut end = key.len().min(SLOT_BYTES);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

/// A 64-bit hash of a key's bytes, 8 at a time, finished by [`super::mix`].
fn key_hash(bytes: &[u8]) -> u64 {
    let mut h = 0x9E37_79B9_7F4A_7C15 ^ bytes.len() as u64;
    for chunk in bytes.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = (h ^ u64::from_le_bytes(word))
            .wrapping_mul(0xA076_1D64_78BD_642F)
            .rotate_left(29);
    }
    super::mix(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Heap order, positions and the key → slot map agree.
    fn check(s: &SpaceSaving) {
        assert_eq!(s.heap.len(), s.slots.len());
        assert_eq!(s.index.len(), s.slots.len());
        for (i, &slot) in s.heap.iter().enumerate() {
            assert_eq!(s.position[slot as usize] as usize, i);
            assert_eq!(s.index[&s.slots[slot as usize].hash], slot);
            if i > 0 {
                assert!(s.count_at((i - 1) / 2) <= s.count_at(i));
            }
        }
    }

    #[test]
    fn exact_while_not_full() {
        let mut s = SpaceSaving::new(4);
        for k in ["a", "b", "a", "c", "a", "b"] {
            s.offer(k, 1);
        }
        check(&s);
        let top = s.top(3);
        let shown: Vec<(&str, u64, u64)> =
            top.iter().map(|c| (&*c.key, c.count, c.error)).collect();
        assert_eq!(shown, vec![("a", 3, 0), ("b", 2, 0), ("c", 1, 0)]);
        assert_eq!(s.floor(), 0);
    }

    #[test]
    fn eviction_carries_the_smallest_count_as_error() {
        let mut s = SpaceSaving::new(2);
        s.offer("a", 5);
        s.offer("b", 2);
        s.offer("c", 1);
        check(&s);
        let top = s.top(2);
        assert_eq!((&*top[0].key, top[0].count, top[0].error), ("a", 5, 0));
        assert_eq!((&*top[1].key, top[1].count, top[1].error), ("c", 3, 2));
        assert_eq!(s.floor(), 3);
    }

    /// Every monitored key's bounds hold against the true counts, and the error bound n/k holds.
    #[test]
    fn bounds_hold_on_a_zipf_like_stream() {
        let mut s = SpaceSaving::new(16);
        let mut truth: HashMap<String, u64> = HashMap::new();
        let mut n = 0u64;
        for i in 0..20_000u64 {
            let key = format!("k{}", (i * 7919) % (1 + i % 97));
            s.offer(&key, 1);
            *truth.entry(key).or_default() += 1;
            n += 1;
        }
        check(&s);
        for c in s.top(16) {
            let t = truth[&*c.key];
            assert!(c.count - c.error <= t && t <= c.count, "{c:?} true {t}");
            assert!(c.error <= n / 16);
        }
    }

    #[test]
    fn merge_keeps_the_bounds_of_the_union() {
        let (mut a, mut b) = (SpaceSaving::new(8), SpaceSaving::new(8));
        let mut truth: HashMap<String, u64> = HashMap::new();
        for i in 0..5_000u64 {
            let key = format!("k{}", i % (3 + i % 41));
            let side = if i % 3 == 0 { &mut a } else { &mut b };
            side.offer(&key, 1);
            *truth.entry(key).or_default() += 1;
        }
        a.merge(&b);
        check(&a);
        assert_eq!(a.len(), 8);
        for c in a.top(8) {
            let t = truth[&*c.key];
            assert!(c.count - c.error <= t && t <= c.count, "{c:?} true {t}");
        }
    }

    #[test]
    fn merge_of_summaries_not_full_is_exact() {
        let (mut a, mut b) = (SpaceSaving::new(8), SpaceSaving::new(8));
        a.offer("x", 3);
        b.offer("x", 2);
        b.offer("y", 1);
        a.merge(&b);
        let top = a.top(8);
        assert_eq!((&*top[0].key, top[0].count, top[0].error), ("x", 5, 0));
        assert_eq!((&*top[1].key, top[1].count, top[1].error), ("y", 1, 0));
    }
}
