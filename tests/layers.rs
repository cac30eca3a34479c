//! The crate's imports point one way. No module imports a module that imports it back, files
//! included (a `mod.rs` that re-exports its children may not hold what they import), and every
//! import between two top-level modules points down the layout `lib.rs` documents, so
//! [`model`](estafeta::model) imports nothing of the crate and nothing imports `app`.
//!
//! Imports are read from the source with `syn`: `use` trees, paths in code and types, and
//! `crate::`/`super::` paths inside macro invocations; test modules are left out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// Module path (`api::targets`; the crate root is empty) → its file.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                let mut p = prefix.to_vec();
                p.push(name);
                walk(&path, &p, out);
            } else if let Some(stem) = name.strip_suffix(".rs") {
                let mut p = prefix.to_vec();
                match stem {
                    "mod" if !prefix.is_empty() => {}
                    "lib" if prefix.is_empty() => {}
                    "main" if prefix.is_empty() => continue,
                    other => p.push(other.to_owned()),
                }
                out.insert(p.join("::"), path);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, &[], &mut out);
    out
}

/// The paths a file names, as written (segments).
#[derive(Default)]
struct Names {
    paths: Vec<Vec<String>>,
}

fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.meta.to_token_stream_string().contains("test"))
}

trait MetaText {
    fn to_token_stream_string(&self) -> String;
}

impl MetaText for syn::Meta {
    fn to_token_stream_string(&self) -> String {
        quote_tokens(self)
    }
}

fn quote_tokens<T: quote_like::ToTokensLike>(t: &T) -> String {
    t.tokens().to_string()
}

mod quote_like {
    pub trait ToTokensLike {
        fn tokens(&self) -> proc_macro2::TokenStream;
    }
    impl ToTokensLike for syn::Meta {
        fn tokens(&self) -> proc_macro2::TokenStream {
            match self {
                syn::Meta::List(l) => l.tokens.clone(),
                _ => proc_macro2::TokenStream::new(),
            }
        }
    }
}

impl Names {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                let mut path = prefix.clone();
                if n.ident != "self" {
                    path.push(n.ident.to_string());
                }
                self.paths.push(path);
            }
            syn::UseTree::Rename(r) => {
                let mut path = prefix.clone();
                if r.ident != "self" {
                    path.push(r.ident.to_string());
                }
                self.paths.push(path);
            }
            syn::UseTree::Glob(_) => self.paths.push(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// `crate :: a :: b` and `super :: a` sequences in a macro's tokens.
    fn tokens(&mut self, tokens: TokenStream) {
        let flat: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < flat.len() {
            match &flat[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id) if id == "crate" || id == "super" => {
                    let mut path = vec![id.to_string()];
                    let mut j = i + 1;
                    while j + 2 < flat.len() + 1 {
                        let colons = matches!((flat.get(j), flat.get(j + 1)),
                            (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':');
                        match (colons, flat.get(j + 2)) {
                            (true, Some(TokenTree::Ident(next))) => {
                                path.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    self.paths.push(path);
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

impl<'ast> Visit<'ast> for Names {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Mod(m) => &m.attrs,
            syn::Item::Fn(f) => &f.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Use(u) => &u.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test(attrs) {
            syn::visit::visit_item(self, item);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        self.paths
            .push(p.segments.iter().map(|s| s.ident.to_string()).collect());
        syn::visit::visit_path(self, p);
    }

    /// `pub(super)` names who may see an item, not what it imports.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.visit_path(&m.path);
        self.tokens(m.tokens.clone());
    }
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map(|(p, _)| p.to_owned())
        .unwrap_or_default()
}

fn join(base: &str, rest: &[String]) -> String {
    let mut parts: Vec<String> = if base.is_empty() {
        Vec::new()
    } else {
        vec![base.to_owned()]
    };
    parts.extend(rest.iter().cloned());
    parts.join("::")
}

/// The module a path, written in `module`, points into; `None` for other crates and items.
fn resolve(module: &str, path: &[String], all: &BTreeMap<String, PathBuf>) -> Option<String> {
    let first = path.first()?;
    let absolute = match first.as_str() {
        "crate" => join("", &path[1..]),
        "self" => join(module, &path[1..]),
        "super" => {
            let mut base = module.to_owned();
            let mut rest = path;
            while rest.first().map(String::as_str) == Some("super") {
                base = parent(&base);
                rest = &rest[1..];
            }
            join(&base, rest)
        }
        child if all.contains_key(&join(module, &[child.to_owned()])) => join(module, path),
        _ => return None,
    };
    // The longest prefix that is a module.
    let parts: Vec<&str> = absolute.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| all.contains_key(m))
}

/// The crate's `src`; `ESTAFETA_LAYERS_SRC` points the checker at another tree (to see it
/// find the cycles of an older version).
fn source_dir() -> PathBuf {
    std::env::var_os("ESTAFETA_LAYERS_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

/// Every import edge between two modules.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = source_dir();
    let all = modules(&src);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, file) in &all {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut names = Names::default();
        names.visit_file(&parsed);
        for path in names.paths {
            if let Some(target) = resolve(module, &path, &all) {
                if target != *module && !target.is_empty() {
                    out.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }
    out
}

/// The cycles of a graph (strongly connected components of more than one node).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: HashMap<&'g str, usize>,
        low: HashMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(lw));
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low[v];
                    self.low.insert(v, lv.min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_owned());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.out.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    let nodes: BTreeSet<&str> = graph
        .iter()
        .flat_map(|(k, vs)| std::iter::once(k.as_str()).chain(vs.iter().map(String::as_str)))
        .collect();
    for n in nodes {
        if !t.index.contains_key(n) {
            t.visit(n);
        }
    }
    t.out
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

/// The top-level modules in the order `lib.rs`'s layout lists them (`//! - [`name`]…`).
fn layout() -> Vec<String> {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
        .unwrap_or_default();
    let mut out = Vec::new();
    for line in lib.lines().filter_map(|l| l.strip_prefix("//! - ")) {
        let head = line.split(':').next().unwrap_or_default();
        for name in head.split(", ") {
            if let Some(n) = name.strip_prefix("[`").and_then(|n| n.strip_suffix("`]")) {
                out.push(n.to_owned());
            }
        }
    }
    out
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let graph = edges();
    assert!(
        graph.len() > 40,
        "only {} modules import anything",
        graph.len()
    );
    let found = cycles(&graph);
    assert!(found.is_empty(), "import cycles: {found:#?}");
}

#[test]
fn imports_between_top_level_modules_point_down_the_documented_layout() {
    let order = layout();
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(i, m)| (m.as_str(), i))
        .collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let tops: BTreeSet<String> = modules(&src)
        .keys()
        .filter(|m| !m.is_empty())
        .map(|m| top(m).to_owned())
        .collect();
    let undocumented: Vec<&String> = tops
        .iter()
        .filter(|t| !rank.contains_key(t.as_str()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "lib.rs's layout does not name {undocumented:?}"
    );
    let mut upward = Vec::new();
    for (from, tos) in edges() {
        for to in tos {
            let (a, b) = (top(&from), top(&to));
            if a != b && rank[a] >= rank[b] {
                upward.push(format!("{from} imports {to}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports against the layout: {upward:#?}");
}

#[test]
fn the_checker_sees_imports_and_cycles() {
    // A sanity check of the checker itself on a made-up graph and real resolution.
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    assert_eq!(cycles(&g).len(), 1);
    let graph = edges();
    let api = graph.get("api::targets").cloned().unwrap_or_default();
    assert!(api.contains("store"), "{api:?}");
    assert!(api.contains("api::scope"), "{api:?}");
    assert!(
        graph
            .get("model::target")
            .is_some_and(|m| m.iter().all(|t| t.starts_with("model")))
    );
}

#[test]
fn every_source_file_is_a_declared_module() {
    // A file no `mod` names is not compiled: its imports would count here for code that is
    // not there, and it would rot unseen.
    let src = source_dir();
    let all = modules(&src);
    for (module, file) in &all {
        let Some((parent, name)) = module.rsplit_once("::").or(if module.is_empty() {
            None
        } else {
            Some(("", module.as_str()))
        }) else {
            continue;
        };
        let parent_file = &all[parent];
        let text = std::fs::read_to_string(parent_file).unwrap_or_default();
        let parsed =
            syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", parent_file.display()));
        let declared = parsed.items.iter().any(
            |item| matches!(item, syn::Item::Mod(m) if m.ident == name && m.content.is_none()),
        );
        assert!(
            declared,
            "{} is not declared in {}",
            file.display(),
            parent_file.display()
        );
    }
}

#[test]
fn pages_call_the_apis_typed_operations_never_its_router_or_json() {
    // The console and the portal render typed views: a page that went through the router
    // in process, or read an answer's fields by name, would show a wrong field or a cut
    // listing as a silently wrong page.
    let graph = edges();
    let web: Vec<(&String, &BTreeSet<String>)> =
        graph.iter().filter(|(m, _)| top(m) == "web").collect();
    let through_router: Vec<String> = web
        .iter()
        .flat_map(|(from, tos)| {
            tos.iter()
                .filter(|t| t.as_str() == "api::routes")
                .map(move |t| format!("{from} imports {t}"))
        })
        .collect();
    assert!(through_router.is_empty(), "{through_router:#?}");
    let typed = [
        "api::targets",
        "api::events",
        "api::dead_letters",
        "api::monitors",
    ];
    for op in typed {
        assert!(
            web.iter().any(|(_, tos)| tos.contains(op)),
            "no page calls {op}"
        );
    }
    let src = source_dir().join("web");
    let mut reads = Vec::new();
    for (module, file) in modules(&source_dir()) {
        if !file.starts_with(&src) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let by_name = [
                "Value::as_",
                ".pointer(",
                ".oneshot(",
                ".as_object()",
                ".as_array()",
            ];
            if by_name.iter().any(|p| line.contains(p)) {
                reads.push(format!("{module}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(reads.is_empty(), "JSON read by name in pages: {reads:#?}");
}

#[test]
fn what_is_decided_by_the_time_reads_the_clock_it_was_given() {
    // A module that read the system's time itself would ignore the clock a test moves
    // ahead, and the test would have to sleep instead. The one exception: a receiver's
    // `Retry-After` HTTP-date is a wall-clock date, turned into a wait at once.
    let allowed = ["model::time", "dispatch::client"];
    let mut readers = Vec::new();
    for (module, file) in modules(&source_dir()) {
        if allowed.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            if line.contains("SystemTime::now") {
                readers.push(format!("{module}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(readers.is_empty(), "read the system's time: {readers:#?}");
}
