//! One jq program, compiled and run with the jaq crates. Only the worker process runs this
//! (see [`super`]): jaq has no bound on time, memory or recursion, and a program that recurses
//! without end or builds a string of a terabyte aborts the process that runs it.
//!
//! The standard library is jaq's, without what has effects or reads the host: no `env` or
//! `$ENV`, no `input`/`inputs`, no clock (`now`, `localtime`, `strflocaltime`), no `halt`,
//! no `debug`/`stderr`, no module or data imports. What is left is a pure function of its
//! input, so running it twice on one input gives one answer.

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data::JustLut};
use jaq_json::{Num, Val};
use serde_json::{Map, Number, Value};

type Data = JustLut<Val>;

/// Native filters left out: effects, the host's clock and time zone.
const DENIED_NATIVE: &[&str] = &[
    "env",
    "now",
    "halt",
    "debug_empty",
    "stderr_empty",
    "localtime",
    "strflocaltime",
    "input",
    "inputs",
    "input_filename",
];
/// Definitions of the prelude that call the natives above.
const DENIED_DEFS: &[&str] = &["debug", "stderr", "halt", "halt_error"];

/// Deepest output read back into JSON.
const MAX_OUTPUT_DEPTH: usize = 128;

/// A compiled program.
pub struct Program {
    filter: jaq_core::Filter<Data>,
}

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Program")
    }
}

/// ` at <line>:<column>` of `part` in `code`, when `part` is a piece of it.
fn at(code: &str, part: &str) -> String {
    let (start, offset) = (code.as_ptr() as usize, part.as_ptr() as usize);
    if offset < start || offset + part.len() > start + code.len() {
        return String::new();
    }
    let before = code.get(..offset - start).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .unwrap_or_default()
        .chars()
        .count()
        + 1;
    if part.is_empty() {
        format!(" at {line}:{column} (the end)")
    } else {
        let near: String = part.chars().take(20).collect();
        format!(" at {line}:{column}, near `{near}`")
    }
}

impl Program {
    /// Compiles `code`; the refusal says what is wrong and where (`line:column`).
    pub fn compile(code: &str) -> Result<Program, String> {
        let defs = jaq_core::defs()
            .chain(jaq_std::defs())
            .chain(jaq_json::defs())
            .filter(|d| !DENIED_DEFS.contains(&d.name));
        let funs = jaq_core::funs::<Data>()
            .chain(jaq_std::funs())
            .chain(jaq_json::funs())
            .filter(|(name, _, _)| !DENIED_NATIVE.contains(name));
        let arena = Arena::default();
        let loaded = Loader::new(defs).load(&arena, File { code, path: () });
        let modules = loaded.map_err(load_errors)?;
        // Data imports (`import "f" as $x;`) would compile and then panic when run.
        load::import(&modules, |i| {
            Err(format!("imports are not allowed (`{}`)", i.path))
        })
        .map_err(load_errors)?;
        let filter = Compiler::default()
            .with_funs(funs)
            .compile(modules)
            .map_err(|errors| {
                let mut out = Vec::new();
                for (file, undefined) in errors {
                    for (name, what) in undefined {
                        out.push(format!(
                            "undefined {} `{name}`{}",
                            what.as_str(),
                            at(file.code, name)
                        ));
                    }
                }
                out.join("; ")
            })?;
        Ok(Program { filter })
    }

    /// Runs the program on `input`: its first output, or why there is none.
    pub fn run(&self, input: &Value) -> Result<Value, String> {
        let ctx = Ctx::<Data>::new(&self.filter.lut, Vars::new([]));
        let mut outputs = self.filter.id.run((ctx, to_val(input)));
        match outputs.next() {
            None => Err("the program gave no output".into()),
            Some(Ok(v)) => from_val(&v, 0),
            Some(Err(exception)) => Err(match exception.get_err() {
                Ok(error) => match error.into_val() {
                    Val::TStr(b) => String::from_utf8_lossy(&b).into_owned(),
                    other => other.to_string(),
                },
                Err(_) => "the program stopped without an error value".into(),
            }),
        }
    }
}

fn load_errors(errors: load::Errors<&str, ()>) -> String {
    let mut out = Vec::new();
    for (file, error) in errors {
        match error {
            load::Error::Io(list) => out.extend(
                list.into_iter()
                    .map(|(path, m)| format!("{m}{}", at(file.code, path))),
            ),
            load::Error::Lex(list) => out.extend(list.into_iter().map(|(expected, found)| {
                format!("expected {}{}", expected.as_str(), at(file.code, found))
            })),
            load::Error::Parse(list) => out.extend(list.into_iter().map(|(expected, found)| {
                format!("expected {}{}", expected.as_str(), at(file.code, found))
            })),
        }
    }
    out.join("; ")
}

fn to_val(v: &Value) -> Val {
    match v {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => Val::Num(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Num::from_integral(i),
            (_, Some(u)) => Num::from_integral(u),
            _ => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Val::utf8_str(s.clone()),
        Value::Array(a) => a.iter().map(to_val).collect(),
        Value::Object(o) => Val::obj(
            o.iter()
                .map(|(k, v)| (Val::utf8_str(k.clone()), to_val(v)))
                .collect(),
        ),
    }
}

fn from_val(v: &Val, depth: usize) -> Result<Value, String> {
    if depth > MAX_OUTPUT_DEPTH {
        return Err(format!(
            "the output nests deeper than {MAX_OUTPUT_DEPTH} levels"
        ));
    }
    // JSON has no NaN or infinity: they become null, as jq prints them.
    let float = |x: f64| Number::from_f64(x).map_or(Value::Null, Value::Number);
    Ok(match v {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(Num::Int(i)) => Value::from(*i as i64),
        Val::Num(Num::Float(x)) => float(*x),
        Val::Num(n) => {
            let text = n.to_string();
            text.parse::<Number>()
                .map(Value::Number)
                .unwrap_or_else(|_| float(text.parse().unwrap_or(f64::NAN)))
        }
        Val::TStr(b) | Val::BStr(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
        Val::Arr(a) => Value::Array(
            a.iter()
                .map(|x| from_val(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(o) => {
            let mut map = Map::with_capacity(o.len());
            for (k, x) in o.iter() {
                let key = match k {
                    Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                    other => return Err(format!("an object key ({other}) is not a string")),
                };
                map.insert(key, from_val(x, depth + 1)?);
            }
            Value::Object(map)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(code: &str, input: Value) -> Result<Value, String> {
        Program::compile(code)?.run(&input)
    }

    #[test]
    fn programs_transform_json() {
        let out = run(
            r#"{type, body: (.body | .amount *= 100), headers: (.headers + {"x-a": "b"})}"#,
            json!({"type": "t", "body": {"amount": 2}, "headers": {}}),
        );
        assert_eq!(
            out,
            Ok(json!({"type": "t", "body": {"amount": 200}, "headers": {"x-a": "b"}}))
        );
        assert_eq!(run("1e1000", json!(null)), Ok(Value::Null));
        assert_eq!(
            run(".[0]", json!([18446744073709551615u64])),
            Ok(json!(18446744073709551615u64))
        );
    }

    #[test]
    fn refusals_say_what_and_where() {
        let e = Program::compile(".a |\n  foo").err().unwrap_or_default();
        assert!(e.contains("undefined filter `foo` at 2:3"), "{e}");
        assert!(
            Program::compile(".[")
                .err()
                .unwrap_or_default()
                .contains("at 1:3")
        );
        for effect in [
            "now",
            "env",
            "$ENV",
            "input",
            "inputs",
            "halt",
            "halt_error",
            "debug",
            "stderr",
            "localtime",
            "input_filename",
        ] {
            let e = Program::compile(effect).err().unwrap_or_default();
            assert!(e.contains("undefined"), "{effect}: {e}");
        }
        let e = Program::compile(r#"import "x" as $d; $d"#)
            .err()
            .unwrap_or_default();
        assert!(!e.is_empty());
        let e = Program::compile(r#"include "x"; ."#)
            .err()
            .unwrap_or_default();
        assert!(!e.is_empty());
    }

    #[test]
    fn runtime_errors_are_values() {
        assert_eq!(run(r#"error("nope")"#, json!(null)), Err("nope".into()));
        assert_eq!(
            run("empty", json!(null)),
            Err("the program gave no output".into())
        );
        assert!(run(".a + 1", json!({"a": "x"})).is_err());
        assert!(run("{(1): 2}", json!(null)).is_err());
        assert!(
            run("reduce range(200) as $i (0; [.])", json!(null)).is_err(),
            "too deep to read back"
        );
        assert_eq!(run("first(repeat(1))", json!(null)), Ok(json!(1)));
    }
}
