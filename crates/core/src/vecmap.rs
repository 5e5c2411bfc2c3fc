//! A map from channel names kept in a `Vec`, for a session's subscriptions.
//!
//! Why not a `HashMap`: most connections hold one to a few subscriptions, and hashbrown
//! allocates at least four buckets plus control bytes (308 bytes for one subscription,
//! measured with DHAT, on every idle connection). A vector holds exactly what it has, and a
//! linear scan over at most `client.channel_limit` (128 by default) short strings costs
//! less than hashing for the sizes seen in practice.

/// Insertion-ordered; keys are unique. A boxed slice rather than a `Vec`: 16 bytes instead
/// of 24 in every session (twice: subscriptions and pending map subscribes), and no spare
/// capacity, since entries come and go one at a time.
#[derive(Debug, Clone)]
pub struct VecMap<V> {
    entries: Box<[(String, V)]>,
}

impl<V> Default for VecMap<V> {
    fn default() -> Self {
        VecMap { entries: Box::default() }
    }
}

impl<V> VecMap<V> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.entries.iter().position(|(k, _)| k == key)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.position(key).map(|i| &self.entries[i].1)
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.position(key).map(|i| &mut self.entries[i].1)
    }

    /// Inserts or replaces; returns the replaced value.
    pub fn insert(&mut self, key: String, value: V) -> Option<V> {
        match self.position(&key) {
            Some(i) => Some(std::mem::replace(&mut self.entries[i].1, value)),
            None => {
                // Grow by one: a session's subscriptions come one at a time and stay few.
                let mut v = std::mem::take(&mut self.entries).into_vec();
                v.reserve_exact(1);
                v.push((key, value));
                self.entries = v.into_boxed_slice();
                None
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<V> {
        let i = self.position(key)?;
        let mut entries = std::mem::take(&mut self.entries).into_vec();
        let v = entries.swap_remove(i).1;
        self.entries = entries.into_boxed_slice(); // gives back the slot (all of it when empty)
        Some(v)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.entries.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &V)> {
        self.entries.iter().map(|(k, v)| (k, v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&String, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| (&*k, v))
    }
}

impl<'a, V> IntoIterator for &'a VecMap<V> {
    type Item = (&'a String, &'a V);
    type IntoIter = std::iter::Map<std::slice::Iter<'a, (String, V)>, fn(&'a (String, V)) -> (&'a String, &'a V)>;
    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter().map(|(k, v)| (k, v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map() {
        let mut m = VecMap::new();
        assert!(m.is_empty());
        assert_eq!(m.insert("a".into(), 1), None);
        assert_eq!(m.insert("b".into(), 2), None);
        assert_eq!(m.insert("a".into(), 3), Some(1));
        assert_eq!(m.len(), 2);
        assert_eq!(m.get("a"), Some(&3));
        *m.get_mut("b").unwrap() += 10;
        assert_eq!(m.get("b"), Some(&12));
        assert!(m.contains_key("b") && !m.contains_key("c"));
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(m.values().sum::<i32>(), 15);
        assert_eq!((&m).into_iter().count(), 2);
        assert_eq!(m.remove("a"), Some(3));
        assert_eq!(m.remove("a"), None);
        assert_eq!(m.remove("b"), Some(12));
        assert!(m.is_empty());
    }
}
