//! Which targets want an event: patterns ([`EventPattern`]) compiled into hash lookups.
//!
//! Matching one event costs one hash lookup for the exact name and one per dot in it for the
//! prefixes, whatever the number of targets or patterns: no scan over the targets.

use std::collections::HashMap;

use crate::model::EventPattern;

/// Patterns of many targets (by index), compiled.
#[derive(Debug, Default, Clone)]
pub struct Matcher {
    exact: HashMap<String, Vec<usize>>,
    /// `user.*` is stored under `user.`.
    prefix: HashMap<String, Vec<usize>>,
    all: Vec<usize>,
    /// Targets indexed, for sizing the dedupe set.
    len: usize,
}

impl Matcher {
    /// Compiles the patterns of each target; `patterns[i]` belong to target `i`.
    pub fn new<'a, I>(patterns: I) -> Matcher
    where
        I: IntoIterator<Item = &'a [EventPattern]>,
    {
        let mut m = Matcher::default();
        for (i, pats) in patterns.into_iter().enumerate() {
            m.len = i + 1;
            for p in pats {
                match p {
                    EventPattern::All => m.all.push(i),
                    EventPattern::Prefix(prefix) => {
                        m.prefix.entry(prefix.clone()).or_default().push(i)
                    }
                    EventPattern::Exact(t) => m.exact.entry(t.clone()).or_default().push(i),
                }
            }
        }
        m
    }

    /// Indices of the targets that want `event_type`, ascending, each once. `*` does not
    /// take the gateway's operational events (`estafeta.…`): a target asks for them by name.
    pub fn matches(&self, event_type: &str) -> Vec<usize> {
        let mut out: Vec<usize> = if crate::model::notice::is_reserved(event_type) {
            Vec::new()
        } else {
            self.all.clone()
        };
        if let Some(v) = self.exact.get(event_type) {
            out.extend_from_slice(v);
        }
        if !self.prefix.is_empty() {
            for (i, b) in event_type.bytes().enumerate() {
                if b == b'.' {
                    if let Some(v) = self.prefix.get(&event_type[..=i]) {
                        out.extend_from_slice(v);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pats: &[&[&str]]) -> Matcher {
        let parsed: Vec<Vec<EventPattern>> = pats
            .iter()
            .map(|p| {
                p.iter()
                    .filter_map(|x| EventPattern::parse(x).ok())
                    .collect()
            })
            .collect();
        Matcher::new(parsed.iter().map(Vec::as_slice))
    }

    #[test]
    fn exact_prefix_and_all() {
        let m = m(&[
            &["order.paid"],
            &["user.*"],
            &["*"],
            &["user.created", "order.*"],
        ]);
        assert_eq!(m.matches("order.paid"), vec![0, 2, 3]);
        assert_eq!(m.matches("order.refunded"), vec![2, 3]);
        assert_eq!(m.matches("user.created"), vec![1, 2, 3]);
        assert_eq!(m.matches("user.profile.updated"), vec![1, 2]);
        assert_eq!(m.matches("user"), vec![2]);
        assert_eq!(m.matches("userx.created"), vec![2]);
    }

    #[test]
    fn a_target_matched_twice_is_listed_once() {
        let m = m(&[&["a.*", "a.b", "*"]]);
        assert_eq!(m.matches("a.b"), vec![0]);
        assert!(
            Matcher::new(Vec::<&[EventPattern]>::new())
                .matches("x")
                .is_empty()
        );
    }
}
