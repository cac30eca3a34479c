//! Payload filters: which events a target receives beyond their type. A filter is a JSON object
//! over the event as `{"type", "body", "headers", "received_at"}`, with the operators Convoy's and
//! Outpost's users know: a plain value is equality (membership when the field is an array),
//! `$eq $neq $gt $gte $lt $lte $in $nin $exist $regex $startsWith $endsWith` compare a field,
//! `$or $and $not` combine filters, keys are dotted paths, and `$` in a path stands for every
//! element of an array.
//!
//! A filter is compiled once (the dispatcher keeps it with the target) and evaluated per event
//! without allocating for the common cases. Compiling refuses what cannot be evaluated with an
//! [`Invalid`] naming the path at fault (`body.amount.$gt`), so a target is never saved with a
//! filter that would fail later. `$regex` uses the `regex` crate (linear time in the input)
//! with a bound on the compiled program's size.
//!
//! Rules where the operators leave room:
//! - a path that reaches several values (through `$`, or an array) matches when any of them
//!   does; `$neq` and `$nin` are the negations of `$eq` and `$in`, so they hold for a field
//!   that is absent;
//! - `$gt`, `$gte`, `$lt`, `$lte` compare numbers with numbers and strings with strings (RFC 3339
//!   times in UTC compare as strings), and nothing else: a type mismatch does not match;
//! - a body that is not JSON matches only filters that do not look into `body`.

use regex::Regex;
use serde_json::Value;

use super::invalid::Invalid;

/// Deepest nesting of `$or`, `$and` and `$not`.
pub const MAX_DEPTH: usize = 8;
/// Most conditions in one filter.
pub const MAX_CONDITIONS: usize = 256;
/// Largest compiled `$regex` program (bytes), and its length as written.
pub const MAX_REGEX_BYTES: usize = 64 * 1024;
const MAX_REGEX_LEN: usize = 1024;

/// The event as a filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub event_type: &'a str,
    /// The body, when it is JSON; `None` for any other body.
    pub body: Option<&'a Value>,
    /// The ingest headers the tenant keeps, as a JSON object of name → value (lowercase names).
    pub headers: &'a Value,
    /// RFC 3339, UTC.
    pub received_at: &'a str,
}

/// A compiled filter.
#[derive(Debug, Clone)]
pub struct Filter {
    root: Node,
    reads_body: bool,
}

#[derive(Debug, Clone)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Field { path: Vec<Step>, test: Test },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    /// `$`: every element of an array.
    Each,
}

#[derive(Debug, Clone)]
enum Test {
    /// A plain value: equal, or held by an array field.
    Plain(Value),
    Eq(Value),
    Neq(Value),
    Order(Order, Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    Exist(bool),
    Regex(Regex),
    StartsWith(String),
    EndsWith(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    Gt,
    Gte,
    Lt,
    Lte,
}

/// Compiling state: what is counted against the limits.
struct Budget {
    conditions: usize,
}

impl Filter {
    /// Compiles `spec`, a JSON object; the refusal's path is relative to the filter.
    pub fn compile(spec: &Value) -> Result<Filter, Invalid> {
        let mut budget = Budget { conditions: 0 };
        let root = object(spec, "", 0, &mut budget)?;
        let reads_body = reads_body(&root);
        Ok(Filter { root, reads_body })
    }

    /// Whether the event matches.
    pub fn matches(&self, event: &Subject<'_>) -> bool {
        if self.reads_body && event.body.is_none() {
            return false;
        }
        eval(&self.root, event)
    }

    /// Whether the filter looks into the body.
    pub fn reads_body(&self) -> bool {
        self.reads_body
    }
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

/// A filter object: its members are ANDed.
fn object(v: &Value, at: &str, depth: usize, budget: &mut Budget) -> Result<Node, Invalid> {
    if depth > MAX_DEPTH {
        return Err(Invalid::at(
            at,
            format!("nests deeper than {MAX_DEPTH} levels"),
        ));
    }
    let Value::Object(members) = v else {
        return Err(Invalid::at(at, "must be a JSON object"));
    };
    let mut all = Vec::with_capacity(members.len());
    for (key, value) in members {
        let here = child(at, key);
        match key.as_str() {
            "$or" | "$and" => {
                let Value::Array(items) = value else {
                    return Err(Invalid::at(here, "must be an array of filters"));
                };
                if items.is_empty() {
                    return Err(Invalid::at(here, "must hold at least one filter"));
                }
                let nodes = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| object(item, &format!("{here}[{i}]"), depth + 1, budget))
                    .collect::<Result<Vec<_>, _>>()?;
                all.push(if key == "$or" {
                    Node::Any(nodes)
                } else {
                    Node::All(nodes)
                });
            }
            "$not" => all.push(Node::Not(Box::new(object(
                value,
                &here,
                depth + 1,
                budget,
            )?))),
            op if op.starts_with('$') => {
                return Err(Invalid::at(
                    here,
                    "is not an operator here: a filter's keys are field paths, $or, $and or $not",
                ));
            }
            _ => {
                let path = path(key, &here)?;
                for test in tests(value, &here, budget)? {
                    all.push(Node::Field {
                        path: path.clone(),
                        test,
                    });
                }
            }
        }
    }
    Ok(if all.len() == 1 {
        all.remove(0)
    } else {
        Node::All(all)
    })
}

/// A dotted path: `body.items.$.sku`. Its first step names a part of the event.
fn path(key: &str, at: &str) -> Result<Vec<Step>, Invalid> {
    let steps: Vec<Step> = key
        .split('.')
        .map(|s| {
            if s == "$" {
                Step::Each
            } else {
                Step::Key(s.to_owned())
            }
        })
        .collect();
    if steps
        .iter()
        .any(|s| matches!(s, Step::Key(k) if k.is_empty()))
    {
        return Err(Invalid::at(at, "is not a path: a step is empty"));
    }
    match steps.first() {
        Some(Step::Key(k)) if matches!(k.as_str(), "type" | "received_at") && steps.len() == 1 => {
            Ok(steps)
        }
        Some(Step::Key(k)) if k == "body" || k == "headers" => Ok(steps),
        _ => Err(Invalid::at(
            at,
            "must start with body, headers, type or received_at",
        )),
    }
}

/// The tests a field's value asks for: one for a plain value, one per operator of an object
/// whose keys are all operators.
fn tests(v: &Value, at: &str, budget: &mut Budget) -> Result<Vec<Test>, Invalid> {
    let ops = match v {
        Value::Object(m) if !m.is_empty() && m.keys().all(|k| k.starts_with('$')) => m,
        Value::Object(m) if m.keys().any(|k| k.starts_with('$')) => {
            return Err(Invalid::at(
                at,
                "mixes operators and plain keys: write the object's fields as their own paths",
            ));
        }
        plain => {
            count(budget, at)?;
            return Ok(vec![Test::Plain(plain.clone())]);
        }
    };
    let mut out = Vec::with_capacity(ops.len());
    for (op, arg) in ops {
        let here = child(at, op);
        count(budget, &here)?;
        out.push(match op.as_str() {
            "$eq" => Test::Eq(arg.clone()),
            "$neq" => Test::Neq(arg.clone()),
            "$gt" | "$gte" | "$lt" | "$lte" => {
                if !(arg.is_number() || arg.is_string()) {
                    return Err(Invalid::at(here, "must be a number or a string"));
                }
                let order = match op.as_str() {
                    "$gt" => Order::Gt,
                    "$gte" => Order::Gte,
                    "$lt" => Order::Lt,
                    _ => Order::Lte,
                };
                Test::Order(order, arg.clone())
            }
            "$in" | "$nin" => {
                let Value::Array(items) = arg else {
                    return Err(Invalid::at(here, "must be an array"));
                };
                if op == "$in" {
                    Test::In(items.clone())
                } else {
                    Test::Nin(items.clone())
                }
            }
            "$exist" => match arg {
                Value::Bool(b) => Test::Exist(*b),
                _ => return Err(Invalid::at(here, "must be true or false")),
            },
            "$regex" => {
                let Value::String(pattern) = arg else {
                    return Err(Invalid::at(here, "must be a string"));
                };
                if pattern.len() > MAX_REGEX_LEN {
                    return Err(Invalid::at(
                        here,
                        format!("must be at most {MAX_REGEX_LEN} bytes long"),
                    ));
                }
                let re = regex::RegexBuilder::new(pattern)
                    .size_limit(MAX_REGEX_BYTES)
                    .dfa_size_limit(MAX_REGEX_BYTES)
                    .build()
                    .map_err(|e| Invalid::at(&here, format!("is not a valid regex: {e}")))?;
                Test::Regex(re)
            }
            "$startsWith" | "$endsWith" => {
                let Value::String(s) = arg else {
                    return Err(Invalid::at(here, "must be a string"));
                };
                if op == "$startsWith" {
                    Test::StartsWith(s.clone())
                } else {
                    Test::EndsWith(s.clone())
                }
            }
            _ => {
                return Err(Invalid::at(
                    here,
                    "is not an operator: use $eq, $neq, $gt, $gte, $lt, $lte, $in, $nin, $exist, $regex, $startsWith or $endsWith",
                ));
            }
        });
    }
    Ok(out)
}

fn count(budget: &mut Budget, at: &str) -> Result<(), Invalid> {
    budget.conditions += 1;
    if budget.conditions > MAX_CONDITIONS {
        return Err(Invalid::at(
            at,
            format!("is one condition too many: a filter holds at most {MAX_CONDITIONS}"),
        ));
    }
    Ok(())
}

fn reads_body(node: &Node) -> bool {
    match node {
        Node::All(nodes) | Node::Any(nodes) => nodes.iter().any(reads_body),
        Node::Not(inner) => reads_body(inner),
        Node::Field { path, .. } => path.first() == Some(&Step::Key("body".to_owned())),
    }
}

fn eval(node: &Node, event: &Subject<'_>) -> bool {
    match node {
        Node::All(nodes) => nodes.iter().all(|n| eval(n, event)),
        Node::Any(nodes) => nodes.iter().any(|n| eval(n, event)),
        Node::Not(inner) => !eval(inner, event),
        Node::Field { path, test } => field(path, test, event),
    }
}

fn field(path: &[Step], test: &Test, event: &Subject<'_>) -> bool {
    let (first, rest) = match path.split_first() {
        Some((Step::Key(k), rest)) => (k.as_str(), rest),
        _ => return false,
    };
    let text;
    let root: &Value = match first {
        "type" => {
            text = Value::String(event.event_type.to_owned());
            &text
        }
        "received_at" => {
            text = Value::String(event.received_at.to_owned());
            &text
        }
        "headers" => event.headers,
        _ => match event.body {
            Some(b) => b,
            None => return false,
        },
    };
    let mut found = Vec::new();
    reach(root, rest, &mut found);
    let positive = |values: &[&Value]| values.iter().any(|v| holds(test, v));
    match test {
        Test::Exist(want) => found.is_empty() != *want,
        Test::Neq(v) => !found.iter().any(|f| equal_or_holds(f, v)),
        Test::Nin(items) => !found
            .iter()
            .any(|f| items.iter().any(|i| equal_or_holds(f, i))),
        _ => positive(&found),
    }
}

/// The values at `path` below `v`.
fn reach<'v>(v: &'v Value, path: &[Step], out: &mut Vec<&'v Value>) {
    let Some((step, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    match (step, v) {
        (Step::Each, Value::Array(items)) => {
            for item in items {
                reach(item, rest, out);
            }
        }
        (Step::Key(k), Value::Object(m)) => {
            if let Some(next) = m.get(k) {
                reach(next, rest, out);
            }
        }
        (Step::Key(k), Value::Array(items)) => {
            // `items.3` is the fourth element.
            if let Some(next) = k.parse::<usize>().ok().and_then(|i| items.get(i)) {
                reach(next, rest, out);
            }
        }
        _ => {}
    }
}

/// Whether the value found holds the positive test.
fn holds(test: &Test, found: &Value) -> bool {
    match test {
        Test::Plain(v) => equal_or_holds(found, v),
        Test::Eq(v) => equal_or_holds(found, v),
        Test::Order(order, bound) => ordered(found, *order, bound),
        Test::In(items) => items.iter().any(|i| equal_or_holds(found, i)),
        Test::Regex(re) => found.as_str().is_some_and(|s| re.is_match(s)),
        Test::StartsWith(p) => found.as_str().is_some_and(|s| s.starts_with(p.as_str())),
        Test::EndsWith(p) => found.as_str().is_some_and(|s| s.ends_with(p.as_str())),
        Test::Neq(_) | Test::Nin(_) | Test::Exist(_) => false,
    }
}

/// `found` equals `want`, or (an array field, for a plain value or `$eq`) holds it.
fn equal_or_holds(found: &Value, want: &Value) -> bool {
    if same(found, want) {
        return true;
    }
    match found {
        Value::Array(items) if !want.is_array() => items.iter().any(|i| same(i, want)),
        _ => false,
    }
}

/// JSON equality where numbers compare by value (`5` equals `5.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn ordered(found: &Value, order: Order, bound: &Value) -> bool {
    let cmp = match (found, bound) {
        (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y),
            _ => None,
        },
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    };
    let Some(cmp) = cmp else { return false };
    match order {
        Order::Gt => cmp.is_gt(),
        Order::Gte => cmp.is_ge(),
        Order::Lt => cmp.is_lt(),
        Order::Lte => cmp.is_le(),
    }
}

/// A target's filter: the JSON it was written as, and its compiled form. Reading one (from a
/// request, the config file or the store) compiles it, so a filter that exists evaluates.
#[derive(Clone)]
pub struct TargetFilter {
    source: Value,
    compiled: std::sync::Arc<Filter>,
}

impl TargetFilter {
    /// Compiles `source`; the refusal's path is relative to the filter.
    pub fn new(source: Value) -> Result<TargetFilter, Invalid> {
        let compiled = std::sync::Arc::new(Filter::compile(&source)?);
        Ok(TargetFilter { source, compiled })
    }

    /// The filter as written.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// The compiled filter.
    pub fn filter(&self) -> &Filter {
        &self.compiled
    }
}

impl PartialEq for TargetFilter {
    fn eq(&self, other: &TargetFilter) -> bool {
        self.source == other.source
    }
}

impl std::fmt::Debug for TargetFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TargetFilter({})", self.source)
    }
}

impl serde::Serialize for TargetFilter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for TargetFilter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TargetFilter, D::Error> {
        let source = Value::deserialize(d)?;
        TargetFilter::new(source).map_err(|e| {
            let at = if e.path.is_empty() {
                String::new()
            } else {
                format!("at {}: ", e.path)
            };
            serde::de::Error::custom(format!("{at}{}", e.message))
        })
    }
}

impl utoipa::PartialSchema for TargetFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        // The keys a filter may hold, so generated filters mostly compile.
        let keys = ObjectBuilder::new().schema_type(Type::String).pattern(Some(
            r"^(\$or|\$and|\$not|type|received_at|(body|headers)(\.[^.]+)*)$",
        ));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property_names(Some(keys))
            .description(Some(
                "A payload filter over `{\"type\", \"body\", \"headers\", \"received_at\"}`: keys are \
                 dotted paths (`body.amount`, `body.items.$.sku`) or `$or`, `$and`, `$not`; a value \
                 is a plain value (equality, or membership in an array field) or an object of \
                 operators (`$eq $neq $gt $gte $lt $lte $in $nin $exist $regex $startsWith \
                 $endsWith`). A filter that cannot be compiled is refused (400) with its path.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for TargetFilter {
    fn name() -> std::borrow::Cow<'static, str> {
        "TargetFilter".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subject<'a>(body: Option<&'a Value>, headers: &'a Value) -> Subject<'a> {
        Subject {
            event_type: "order.paid",
            body,
            headers,
            received_at: "2026-12-04T10:00:00.000Z",
        }
    }

    fn check(filter: Value, body: Value) -> bool {
        let headers = json!({"x-source": "shop-eu"});
        Filter::compile(&filter)
            .unwrap()
            .matches(&subject(Some(&body), &headers))
    }

    fn refused(filter: Value) -> Invalid {
        Filter::compile(&filter).unwrap_err()
    }

    #[test]
    fn plain_values_are_equality_or_membership() {
        let body = json!({"amount": 1200, "currency": "BRL", "tags": ["vip", "eu"]});
        assert!(check(json!({"body.currency": "BRL"}), body.clone()));
        assert!(!check(json!({"body.currency": "USD"}), body.clone()));
        assert!(
            check(json!({"body.amount": 1200.0}), body.clone()),
            "5 is 5.0"
        );
        assert!(
            check(json!({"body.tags": "vip"}), body.clone()),
            "held by the array"
        );
        assert!(
            check(json!({"body.tags": ["vip", "eu"]}), body.clone()),
            "the whole array"
        );
        assert!(
            !check(json!({"body.tags": ["eu", "vip"]}), body.clone()),
            "order counts"
        );
        assert!(check(
            json!({"type": "order.paid", "headers.x-source": "shop-eu"}),
            body.clone()
        ));
        assert!(!check(
            json!({"type": "order.paid", "headers.x-source": "shop-us"}),
            body
        ));
    }

    #[test]
    fn comparisons_take_numbers_with_numbers_and_strings_with_strings() {
        let body = json!({"amount": 1200, "at": "2026-12-04T09:00:00Z"});
        assert!(check(json!({"body.amount": {"$gt": 1000}}), body.clone()));
        assert!(check(
            json!({"body.amount": {"$gte": 1200, "$lte": 1200}}),
            body.clone()
        ));
        assert!(!check(json!({"body.amount": {"$lt": 1200}}), body.clone()));
        assert!(
            !check(json!({"body.amount": {"$gt": "1000"}}), body.clone()),
            "no coercion"
        );
        assert!(check(
            json!({"body.at": {"$lt": "2026-12-05"}}),
            body.clone()
        ));
        assert!(check(
            json!({"received_at": {"$gte": "2026-12-04T00:00:00Z"}}),
            body
        ));
    }

    #[test]
    fn negations_hold_for_an_absent_field() {
        let body = json!({"status": "paid", "tags": ["a", "b"]});
        assert!(check(
            json!({"body.status": {"$neq": "refunded"}}),
            body.clone()
        ));
        assert!(!check(
            json!({"body.status": {"$neq": "paid"}}),
            body.clone()
        ));
        assert!(check(json!({"body.missing": {"$neq": 1}}), body.clone()));
        assert!(check(
            json!({"body.status": {"$nin": ["refunded", "void"]}}),
            body.clone()
        ));
        assert!(!check(json!({"body.tags": {"$nin": ["b"]}}), body.clone()));
        assert!(check(
            json!({"body.status": {"$in": ["paid", "void"]}}),
            body.clone()
        ));
        assert!(check(
            json!({"body.missing": {"$exist": false}}),
            body.clone()
        ));
        assert!(!check(
            json!({"body.status": {"$exist": false}}),
            body.clone()
        ));
        assert!(check(json!({"body.status": {"$exist": true}}), body));
    }

    #[test]
    fn strings_by_regex_prefix_and_suffix() {
        let body = json!({"email": "ana@example.com", "n": 5});
        assert!(check(
            json!({"body.email": {"$regex": "^[a-z]+@example\\.com$"}}),
            body.clone()
        ));
        assert!(!check(
            json!({"body.email": {"$regex": "^bob"}}),
            body.clone()
        ));
        assert!(
            !check(json!({"body.n": {"$regex": "5"}}), body.clone()),
            "only strings"
        );
        assert!(check(
            json!({"body.email": {"$startsWith": "ana@"}}),
            body.clone()
        ));
        assert!(check(
            json!({"body.email": {"$endsWith": ".com"}}),
            body.clone()
        ));
        assert!(!check(json!({"body.email": {"$endsWith": ".org"}}), body));
    }

    #[test]
    fn the_array_wildcard_matches_when_any_element_does() {
        let body = json!({"items": [{"sku": "A-1", "qty": 1}, {"sku": "B-2", "qty": 7}]});
        assert!(check(json!({"body.items.$.sku": "B-2"}), body.clone()));
        assert!(check(json!({"body.items.$.qty": {"$gt": 5}}), body.clone()));
        assert!(!check(
            json!({"body.items.$.qty": {"$gt": 9}}),
            body.clone()
        ));
        assert!(
            check(json!({"body.items.1.sku": "B-2"}), body.clone()),
            "an index"
        );
        assert!(
            !check(json!({"body.items.$.sku": {"$neq": "A-1"}}), body),
            "no element is A-1"
        );
    }

    #[test]
    fn or_and_not_nest() {
        let body = json!({"amount": 50, "currency": "USD"});
        let f = json!({"$or": [
            {"body.amount": {"$gt": 1000}},
            {"$and": [{"body.currency": "USD"}, {"$not": {"body.amount": {"$lt": 10}}}]}
        ]});
        assert!(check(f.clone(), body));
        assert!(!check(f, json!({"amount": 5, "currency": "USD"})));
    }

    #[test]
    fn a_body_that_is_not_json_matches_only_filters_that_ignore_the_body() {
        let headers = json!({});
        let event = subject(None, &headers);
        let on_type = Filter::compile(&json!({"type": {"$startsWith": "order."}})).unwrap();
        assert!(on_type.matches(&event));
        let on_body = Filter::compile(&json!({"body.x": {"$exist": false}})).unwrap();
        assert!(on_body.reads_body());
        assert!(
            !on_body.matches(&event),
            "even a test that an absent field would pass"
        );
    }

    #[test]
    fn bytes_of_every_kind_are_compared_as_written() {
        let every: String = (1u8..=0x7f)
            .map(char::from)
            .chain(['é', '\u{fffd}'])
            .collect();
        let body = json!({"note": every.clone()});
        assert!(check(json!({"body.note": every.clone()}), body.clone()));
        assert!(check(
            json!({"body.note": {"$startsWith": "\u{1}\u{2}"}}),
            body.clone()
        ));
        let escaped = regex::escape(&every);
        assert!(check(
            json!({"body.note": {"$regex": format!("^{escaped}$")}}),
            body
        ));
    }

    #[test]
    fn what_cannot_be_evaluated_is_refused_with_its_path() {
        assert_eq!(refused(json!([1])).message, "must be a JSON object");
        assert_eq!(refused(json!({"body.a": {"$gt": true}})).path, "body.a.$gt");
        assert_eq!(
            refused(json!({"body.a": {"$like": 1}})).path,
            "body.a.$like"
        );
        assert_eq!(refused(json!({"$nor": []})).path, "$nor");
        assert_eq!(refused(json!({"$or": []})).path, "$or");
        assert_eq!(refused(json!({"$or": [{"x": 1}]})).path, "$or[0].x");
        assert_eq!(refused(json!({"body..a": 1})).path, "body..a");
        assert_eq!(refused(json!({"type.x": 1})).path, "type.x");
        assert_eq!(refused(json!({"body.a": {"$in": 1}})).path, "body.a.$in");
        assert_eq!(
            refused(json!({"body.a": {"$exist": 1}})).path,
            "body.a.$exist"
        );
        assert_eq!(
            refused(json!({"body.a": {"$eq": 1, "b": 2}})).path,
            "body.a"
        );
        let bad = refused(json!({"body.a": {"$regex": "("}}));
        assert_eq!(bad.path, "body.a.$regex");
        assert!(bad.message.starts_with("is not a valid regex"), "{bad}");
        let huge = refused(json!({"body.a": {"$regex": "\\w{1000}\\w{1000}"}}));
        assert_eq!(huge.path, "body.a.$regex", "{huge}");
    }

    #[test]
    fn a_target_filter_reads_as_written_and_refuses_with_its_path() {
        let f: TargetFilter = serde_json::from_value(json!({"body.a": {"$gt": 1}})).unwrap();
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"body.a": {"$gt": 1}})
        );
        let e = serde_json::from_value::<TargetFilter>(json!({"body.a": {"$gt": []}}))
            .unwrap_err()
            .to_string();
        assert_eq!(e, "at body.a.$gt: must be a number or a string");
    }

    #[test]
    fn nesting_and_size_are_bounded() {
        let mut deep = json!({"body.a": 1});
        for _ in 0..=MAX_DEPTH {
            deep = json!({"$not": deep});
        }
        assert!(refused(deep).message.contains("nests deeper"));
        let many: serde_json::Map<String, Value> = (0..=MAX_CONDITIONS)
            .map(|i| (format!("body.f{i}"), json!(i)))
            .collect();
        assert!(refused(Value::Object(many)).message.contains("too many"));
    }
}
