//! The attempt log of a delivery record as Redis holds it: a ring of `a:<slot>` fields of the
//! record (and the list of earlier versions), read back in order.

use std::collections::HashMap;

use fred::prelude::*;

use crate::model::delivery::AttemptRecord;

/// The attempts of a record (`a:<slot>` fields) and of an earlier version's attempt list,
/// oldest first.
pub(super) fn attempts_of(record: &HashMap<String, Value>, list: &[String]) -> Vec<AttemptRecord> {
    let mut out: Vec<AttemptRecord> = list
        .iter()
        .filter_map(|a| AttemptRecord::decode(a))
        .collect();
    out.extend(
        record
            .iter()
            .filter(|(k, _)| k.starts_with("a:"))
            .filter_map(|(_, v)| AttemptRecord::decode(&v.as_string()?)),
    );
    out.sort_by(|a, b| a.at_ms.cmp(&b.at_ms).then(a.attempt.cmp(&b.attempt)));
    out
}
