//! Which targets want an event: patterns compiled into hash lookups.
//!
//! A pattern is an exact event type (`order.paid`), a prefix wildcard (`user.*`: every type that
//! starts with `user.`, at any depth), or `*` (everything). Matching one event costs one hash
//! lookup for the exact name and one per dot in it for the prefixes, whatever the number of
//! targets or patterns: no scan over the targets.

use std::collections::HashMap;

use crate::queue::valid_event_type;

/// Checks one pattern; the message names what is wrong.
pub fn validate_pattern(p: &str) -> Result<(), String> {
    if p == "*" {
        return Ok(());
    }
    let name = p.strip_suffix(".*").unwrap_or(p);
    if !valid_event_type(name) || name.contains('*') {
        return Err(format!(
            "event pattern {p:?} must be an event type, `prefix.*` or `*`"
        ));
    }
    Ok(())
}

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
    pub fn new<'a, I, P>(patterns: I) -> Matcher
    where
        I: IntoIterator<Item = P>,
        P: IntoIterator<Item = &'a str>,
    {
        let mut m = Matcher::default();
        for (i, pats) in patterns.into_iter().enumerate() {
            m.len = i + 1;
            for p in pats {
                if p == "*" {
                    m.all.push(i);
                } else if let Some(prefix) = p.strip_suffix('*') {
                    m.prefix.entry(prefix.to_owned()).or_default().push(i);
                } else {
                    m.exact.entry(p.to_owned()).or_default().push(i);
                }
            }
        }
        m
    }

    /// Indices of the targets that want `event_type`, ascending, each once.
    pub fn matches(&self, event_type: &str) -> Vec<usize> {
        let mut out: Vec<usize> = self.all.clone();
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
        Matcher::new(pats.iter().map(|p| p.iter().copied()))
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
            Matcher::new(Vec::<Vec<&str>>::new())
                .matches("x")
                .is_empty()
        );
    }

    #[test]
    fn patterns_are_checked() {
        for ok in ["*", "a", "a.*", "a.b-c_d.*"] {
            assert!(validate_pattern(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a*", "*.a", "a.*.b", "a b", ".*", "a.**"] {
            assert!(validate_pattern(bad).is_err(), "{bad}");
        }
    }
}
