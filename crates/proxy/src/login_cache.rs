//! Logins answered without a backend: the ParameterStatus set a real backend
//! login reported, per (listener, startup parameters), so the next client
//! with the same parameters can be told the same values and get its backend
//! only when it sends work (see `Session::begin`).
//!
//! Hazards: an entry is only ever written from a backend login that
//! succeeded with exactly these startup parameters (the user name is one of
//! them), so a cached answer never tells a client more than a backend told
//! an earlier client of the same role. What a backend checks at login beyond
//! the password (database exists, CONNECT privilege, pg_hba, connection
//! limits) is checked when the session's first backend opens; the session
//! reports that backend's error then (`Session::refused_login`). Entries
//! expire after [`MAX_AGE`] so a changed role or database setting is seen by
//! a real login again soon, and the map holds at most [`MAX_ENTRIES`].

use crate::shared::ListenerKind;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Most (listener, parameters) combinations remembered.
pub const MAX_ENTRIES: usize = 1024;
/// An entry older than this is not used: the next login opens a backend.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// ParameterStatus values of one backend login, in the server's order.
pub type ParamSet = Arc<[(Bytes, Bytes)]>;

/// What makes two logins equivalent: the listener and the client's startup
/// parameters (user, database, options, application_name, ...), sorted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LoginKey {
    kind: ListenerKind,
    params: Vec<(String, String)>,
}

impl LoginKey {
    pub fn new(kind: ListenerKind, params: &[(String, String)]) -> Self {
        let mut params = params.to_vec();
        params.sort();
        LoginKey { kind, params }
    }
}

struct Entry {
    params: ParamSet,
    stored: Instant,
}

/// The bounded map of recent backend logins.
#[derive(Default)]
pub struct LoginCache {
    map: Mutex<HashMap<LoginKey, Entry>>,
}

impl LoginCache {
    /// The ParameterStatus set of a recent login like `key`, if any.
    pub fn get(&self, key: &LoginKey) -> Option<ParamSet> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key)
            .filter(|e| e.stored.elapsed() <= MAX_AGE)
            .map(|e| e.params.clone())
    }

    /// Records what a backend reported at login for `key`.
    pub fn put(&self, key: &LoginKey, params: &[(Bytes, Bytes)]) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(key) {
            if e.params[..] != *params {
                e.params = params.into();
            }
            e.stored = Instant::now();
            return;
        }
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, e| e.stored.elapsed() <= MAX_AGE);
        }
        if map.len() >= MAX_ENTRIES {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.stored)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            key.clone(),
            Entry {
                params: params.into(),
                stored: Instant::now(),
            },
        );
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.into(), v.into())
    }

    #[test]
    fn key_ignores_parameter_order_but_not_values_or_listener() {
        let a = LoginKey::new(ListenerKind::Rw, &[kv("user", "u"), kv("database", "d")]);
        let b = LoginKey::new(ListenerKind::Rw, &[kv("database", "d"), kv("user", "u")]);
        let c = LoginKey::new(ListenerKind::Ro, &[kv("database", "d"), kv("user", "u")]);
        let d = LoginKey::new(ListenerKind::Rw, &[kv("database", "e"), kv("user", "u")]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }

    #[test]
    fn bounded_and_updated() {
        let cache = LoginCache::default();
        let p =
            |v: &'static str| vec![(Bytes::from_static(b"x"), Bytes::from_static(v.as_bytes()))];
        for i in 0..MAX_ENTRIES + 10 {
            let key = LoginKey::new(ListenerKind::Rw, &[kv("user", &i.to_string())]);
            cache.put(&key, &p("1"));
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        let key = LoginKey::new(ListenerKind::Rw, &[kv("user", "new")]);
        assert!(cache.get(&key).is_none());
        cache.put(&key, &p("1"));
        cache.put(&key, &p("2"));
        assert_eq!(&cache.get(&key).unwrap()[0].1[..], b"2");
    }
}
