//! Space-Saving (Metwally, Agrawal, El Abbadi, "Efficient Computation of Frequent and Top-k
//! Elements in Data Streams", 2005): the `capacity` most frequent keys of a stream in fixed
//! memory.
//!
//! Each monitored key has a count and an error. A key not monitored takes the place of the key
//! with the smallest count `m` and starts at `m + 1` with error `m`. So for every monitored key
//! `count - error <= true count <= count`, and `error <= n / capacity` after `n` offers: any key
//! seen more than `n / capacity` times is monitored.
//!
//! The counters are an indexed binary min-heap (the smallest count is at the root), so an offer is
//! a hash lookup plus O(log capacity) swaps; the map from key to heap slot is kept with the swaps.

use std::collections::HashMap;

/// One monitored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub key: Box<str>,
    /// An upper bound of the key's true count.
    pub count: u64,
    /// How much of `count` may belong to keys it replaced: `count - error` is a lower bound.
    pub error: u64,
}

/// A Space-Saving summary of at most `capacity` keys.
#[derive(Debug, Clone)]
pub struct SpaceSaving {
    capacity: usize,
    /// A min-heap on `count`.
    heap: Vec<Counter>,
    /// Key → its index in `heap`; always the same key set as `heap`.
    slot: HashMap<Box<str>, usize>,
}

impl SpaceSaving {
    pub fn new(capacity: usize) -> SpaceSaving {
        let capacity = capacity.max(1);
        SpaceSaving {
            capacity,
            heap: Vec::new(),
            slot: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The count a key that is not monitored may have had at most: the smallest count once the
    /// summary is full, else 0 (every key seen is monitored).
    pub fn floor(&self) -> u64 {
        if self.heap.len() < self.capacity {
            0
        } else {
            self.heap.first().map_or(0, |c| c.count)
        }
    }

    /// Counts `weight` occurrences of `key`. Only a key not monitored yet is allocated.
    pub fn offer(&mut self, key: &str, weight: u64) {
        if let Some(&i) = self.slot.get(key) {
            self.heap[i].count += weight;
            self.sift_down(i);
            return;
        }
        let key: Box<str> = key.into();
        if self.heap.len() < self.capacity {
            self.slot.insert(key.clone(), self.heap.len());
            self.heap.push(Counter {
                key,
                count: weight,
                error: 0,
            });
            self.sift_up(self.heap.len() - 1);
            return;
        }
        // Full: the key with the smallest count gives its place (and its count, as error).
        let min = self.heap[0].count;
        let evicted = std::mem::replace(
            &mut self.heap[0],
            Counter {
                key: key.clone(),
                count: min + weight,
                error: min,
            },
        );
        self.slot.remove(&evicted.key);
        self.slot.insert(key, 0);
        self.sift_down(0);
    }

    /// Adds `other` into `self`, keeping the `capacity` largest counts (the merge of Agarwal et
    /// al., "Mergeable Summaries", 2012). A key missing from one summary may have had up to that
    /// summary's [`floor`](Self::floor) there: it is added to both its count and its error, so
    /// the bounds of every key still hold for the union of the two streams.
    pub fn merge(&mut self, other: &SpaceSaving) {
        let (mine, theirs) = (self.floor(), other.floor());
        let mut all: HashMap<Box<str>, Counter> = HashMap::with_capacity(self.len() + other.len());
        for c in self.heap.drain(..) {
            all.insert(
                c.key.clone(),
                Counter {
                    count: c.count + theirs,
                    error: c.error + theirs,
                    ..c
                },
            );
        }
        for c in &other.heap {
            match all.get_mut(&c.key) {
                // Present in both: the floor added above was not owed.
                Some(m) => {
                    m.count = m.count - theirs + c.count;
                    m.error = m.error - theirs + c.error;
                }
                None => {
                    let counter = Counter {
                        key: c.key.clone(),
                        count: c.count + mine,
                        error: c.error + mine,
                    };
                    all.insert(c.key.clone(), counter);
                }
            }
        }
        let mut merged: Vec<Counter> = all.into_values().collect();
        merged.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        merged.truncate(self.capacity);
        self.rebuild(merged);
    }

    /// The monitored keys, largest count first (ties by key, so reports are stable).
    pub fn top(&self, n: usize) -> Vec<Counter> {
        let mut all = self.heap.clone();
        all.sort_unstable_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        all.truncate(n);
        all
    }

    pub fn clear(&mut self) {
        self.heap.clear();
        self.slot.clear();
    }

    fn rebuild(&mut self, counters: Vec<Counter>) {
        self.clear();
        // Sorted by descending count: reversed, it is already a valid min-heap.
        self.heap = counters.into_iter().rev().collect();
        for (i, c) in self.heap.iter().enumerate() {
            self.slot.insert(c.key.clone(), i);
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        for i in [a, b] {
            if let Some(s) = self.slot.get_mut(&self.heap[i].key) {
                *s = i;
            }
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if self.heap[parent].count <= self.heap[i].count {
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
                if child < self.heap.len() && self.heap[child].count < self.heap[least].count {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Heap order and the key → slot map agree.
    fn check(s: &SpaceSaving) {
        assert_eq!(s.heap.len(), s.slot.len());
        for (i, c) in s.heap.iter().enumerate() {
            assert_eq!(s.slot[&c.key], i);
            if i > 0 {
                assert!(s.heap[(i - 1) / 2].count <= c.count);
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
