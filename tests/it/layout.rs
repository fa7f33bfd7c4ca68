//! The layout rules, checked on the source tree (no service needed): every file of every crate's `src` opens with
//! a `//!` line and stays within 700 lines, no allow of clippy's too-many-arguments lint, no import circle between the files of
//! the `kickq` crate (a parent naming its child counts), the front ends never import each other, the pipeline's
//! stages never import its composition root, and `lib.rs`'s `# Layout` names every top-level part.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest a source file may be.
const MAX_LINES: usize = 700;
/// Clippy's lint against long parameter lists, as an allow names it. Built
/// from parts so that this checker's own source does not read as an allow
/// to a line scan.
const MANY_ARGUMENTS: &str = concat!("clippy::", "too_many", "_arguments");
/// The front ends: they sit over the services and never import each other.
const FRONT_ENDS: [&str; 3] = ["cli", "console", "http_intake"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every crate's `src` directory: the root package's and each member's under `crates/`.
fn source_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("src")];
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            dirs.push(src);
        }
    }
    dirs
}

#[test]
fn every_source_file_opens_with_its_purpose_and_stays_small() {
    let mut files = Vec::new();
    for dir in source_dirs() {
        rust_files(&dir, &mut files);
    }
    assert!(files.len() > 100, "found the sources: {}", files.len());
    let mut problems = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let shown = path.strip_prefix(root()).unwrap().display().to_string();
        let lines = text.lines().count();
        if lines > MAX_LINES {
            problems.push(format!("{shown}: {lines} lines (at most {MAX_LINES})"));
        }
        if !text.starts_with("//!") {
            problems.push(format!("{shown}: does not open with a //! line"));
        }
        if text.contains(MANY_ARGUMENTS) {
            problems.push(format!("{shown}: allows {MANY_ARGUMENTS} (take a context struct)"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The module path of a file of `src`: `pipeline::router` for `src/pipeline/router.rs` (or its `mod.rs`).
fn module_of(src: &Path, path: &Path) -> Vec<String> {
    let rel = path.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its test modules (a
/// `#[cfg(test)] mod tests { .. }` block to the end of the file), and with
/// `a::{b, c::d}` written out as `a::b a::c`, so every path a file uses is
/// a plain `crate::..` or `super::..` run of segments.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    };
    // `pub(super)` is a visibility, not a path.
    let text = text.replace("pub(super)", "pub");
    let mut code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    // Brace groups, innermost first: `head::{a, b::c}` -> `head::a head::b`.
    while let Some(open) = code.find("::{") {
        let close = match code[open..].find('}') {
            Some(c) => open + c,
            None => break,
        };
        let inner = &code[open + 3..close];
        if inner.contains('{') {
            // An inner group first: flatten the last `::{` before this close.
            let inner_open = open + 3 + inner.rfind("::{").unwrap();
            let inner_close = inner_open + code[inner_open..].find('}').unwrap();
            let head = head_before(&code, inner_open);
            let expanded = expand(&code[head..inner_open], &code[inner_open + 3..inner_close]);
            code.replace_range(head..=inner_close, &expanded);
            continue;
        }
        let head = head_before(&code, open);
        let expanded = expand(&code[head..open], inner);
        code.replace_range(head..=close, &expanded);
    }
    code
}

fn head_before(code: &str, at: usize) -> usize {
    code[..at]
        .rfind(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .map_or(0, |i| i + 1)
}

fn expand(head: &str, items: &str) -> String {
    items
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|i| {
            let first = i.split("::").next().unwrap().split_whitespace().next().unwrap_or("");
            if first.chars().next().is_some_and(|c| c.is_lowercase()) && first != "self" {
                format!("{head}::{first}")
            } else {
                head.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The file-level import graph of the `kickq` crate: file -> files it names.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name != "tests.rs" && !name.ends_with("_tests.rs") && name != "main.rs"
        })
        .map(|p| (module_of(&src, p), p.clone()))
        .collect();
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains_key(m))
    };
    let mut graph = BTreeMap::new();
    for (module, path) in &modules {
        let code = code_of(&std::fs::read_to_string(path).unwrap());
        let mut uses = BTreeSet::new();
        for (at, _) in code.match_indices("crate::").chain(code.match_indices("super::")) {
            if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let run: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let mut segs: Vec<String> = run.split("::").filter(|s| !s.is_empty()).map(str::to_owned).collect();
            let mut base: Vec<String> = Vec::new();
            if segs.first().map(String::as_str) == Some("crate") {
                segs.remove(0);
            } else {
                // `super` is the parent of the file's module (a mod.rs file
                // is its directory's module); each further `super` goes up one.
                base = module.clone();
                while segs.first().map(String::as_str) == Some("super") {
                    segs.remove(0);
                    base.pop();
                }
            }
            let mut full = base;
            full.extend(
                segs.into_iter()
                    .take_while(|s| s.chars().next().is_some_and(|c| c.is_lowercase())),
            );
            if let Some(target) = resolve(&full) {
                if &target != module {
                    uses.insert(target.join("::"));
                }
            }
        }
        // A parent naming its child by a relative path (`dead::page`,
        // `pub use gate::*`) imports it too.
        for (child, _) in modules
            .iter()
            .filter(|(c, _)| c.len() == module.len() + 1 && c.starts_with(module))
        {
            let name = child.last().unwrap();
            let named = code
                .match_indices(&format!("{name}::"))
                .any(|(at, _)| !code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':'));
            if named {
                uses.insert(child.join("::"));
            }
        }
        // A bare `super` (what is left of `use super::{Item, ..}`) is the parent.
        for (at, _) in code.match_indices("super") {
            let before = code[..at].chars().next_back();
            let after = code[at + 5..].chars().next();
            let alone = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                && !after.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            if alone && !module.is_empty() {
                let parent = &module[..module.len() - 1];
                if modules.contains_key(parent) {
                    uses.insert(parent.join("::"));
                }
            }
        }
        graph.insert(module.join("::"), uses);
    }
    graph
}

/// The strongly connected groups of more than one file (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !t.g.contains_key(w) {
                continue;
            }
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut group = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                group.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                group.sort();
                t.found.push(group);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.found
}

#[test]
fn the_finder_sees_a_circle_and_brace_groups() {
    // The checker itself: a circle of three is found, a chain is not.
    let g = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (a, b) in edges {
            g.entry((*a).into()).or_default().insert((*b).into());
            g.entry((*b).into()).or_default();
        }
        g
    };
    assert_eq!(
        circles(&g(&[("a", "b"), ("b", "c"), ("c", "a")])),
        vec![vec!["a", "b", "c"]]
    );
    assert!(circles(&g(&[("a", "b"), ("b", "c")])).is_empty());
    let code =
        code_of("use crate::amqp::{topology::{self, Names}, publish};\nuse super::{flags::BrokerArgs, Interrupted};");
    for path in [
        "crate::amqp::topology",
        "crate::amqp::publish",
        "super::flags",
        " super;",
    ] {
        assert!(format!("{code} ").contains(path), "{path} in {code}");
    }
}

#[test]
fn no_import_circles_and_front_ends_stay_apart() {
    let graph = import_graph();
    assert!(graph.len() > 100, "read the crate: {} files", graph.len());
    assert!(
        graph["pipeline::router"].contains("pipeline::stage"),
        "the graph sees imports: {:?}",
        graph["pipeline::router"]
    );
    let found = circles(&graph);
    assert!(found.is_empty(), "import circles: {found:#?}");
    let top = |m: &str| m.split("::").next().unwrap_or("").to_owned();
    let mut crossings = Vec::new();
    for (from, to) in &graph {
        for t in to {
            let (a, b) = (top(from), top(t));
            if a != b && FRONT_ENDS.contains(&a.as_str()) && FRONT_ENDS.contains(&b.as_str()) {
                crossings.push(format!("{from} -> {t}"));
            }
        }
    }
    assert!(crossings.is_empty(), "front ends import each other: {crossings:?}");
    // The stages never import the pipeline's composition root (its mod.rs).
    let back: Vec<&String> = graph
        .iter()
        .filter(|(from, to)| from.starts_with("pipeline::") && to.contains("pipeline"))
        .map(|(from, _)| from)
        .collect();
    assert!(back.is_empty(), "stages importing pipeline/mod.rs: {back:?}");
}

#[test]
fn the_layout_map_names_every_part_of_the_tree() {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let map = &lib[lib.find("# Layout").expect("lib.rs has a # Layout")..];
    let map = &map[..map.find("```\n\n").unwrap_or(map.len())];
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("src")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let shown = if path.is_dir() { format!("{name}/") } else { name };
        if !map.contains(&shown) {
            missing.push(shown);
        }
    }
    assert!(missing.is_empty(), "lib.rs's # Layout does not name: {missing:?}");
}
