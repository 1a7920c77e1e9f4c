//! The layering the compiler does not check by itself: the server crate's top-level modules
//! form no cycle (read from their `crate::` paths), the core crate depends on nothing that
//! talks to a network, and docs/architecture.md names only files that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `path` (or `path` itself).
fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_path_buf());
    }
}

fn identifier(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules a piece of code names through `crate::` paths, grouped imports
/// (`crate::{a, b::c}`) included; comments are not code.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut named = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue; // `eligd_core::`, `my_crate::`: not this crate
            }
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            named.insert(identifier(item.trim()).to_string());
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                named.insert(identifier(item.trim()).to_string());
            } else {
                named.insert(identifier(rest).to_string());
            }
        }
    }
    named.remove("");
    named
}

/// A crate's top-level modules (`src` is its source directory) and, for each, the others
/// its files name.
fn module_graph(src: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = root().join(src);
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "lib" || name == "main" {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        // `foo.rs` beside `foo/`: both are module `foo`.
        let code: String = files
            .iter()
            .map(|f| std::fs::read_to_string(f).unwrap())
            .collect();
        modules
            .entry(name)
            .or_insert_with(BTreeSet::new)
            .extend(crate_paths(&code));
    }
    let names: BTreeSet<String> = modules.keys().cloned().collect();
    for (name, uses) in modules.iter_mut() {
        uses.retain(|u| u != name && names.contains(u));
    }
    modules
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                loop {
                    let w = self.stack.pop().unwrap();
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found
}

#[test]
fn the_reader_of_crate_paths_sees_plain_grouped_and_nested_imports() {
    let code = "use crate::a::B;\nuse crate::{c, d::{E, F}, g};\n// crate::comment\nlet x = crate::h::f(eligd_core::i::j);";
    let named: Vec<_> = crate_paths(code).into_iter().collect();
    assert_eq!(named, ["a", "c", "d", "g", "h"]);
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
}

/// Fails naming every cycle between the top-level modules of the crate in `src`.
fn assert_no_cycle(src: &str) {
    let graph = module_graph(src);
    assert!(graph.len() > 5, "{graph:?}");
    let found = cycles(&graph);
    let explain: Vec<String> = found
        .iter()
        .map(|component| {
            let edges: Vec<String> = component
                .iter()
                .flat_map(|m| {
                    graph[m]
                        .iter()
                        .filter(|u| component.contains(u))
                        .map(move |u| format!("{m} → {u}"))
                })
                .collect();
            format!("{} ({})", component.join(", "), edges.join("; "))
        })
        .collect();
    assert!(
        found.is_empty(),
        "top-level modules of {src}/ that depend on each other in a cycle: {}",
        explain.join(" | ")
    );
}

#[test]
fn the_server_crates_top_level_modules_form_no_cycle() {
    assert_no_cycle("src");
}

#[test]
fn the_core_crates_top_level_modules_form_no_cycle() {
    assert_no_cycle("core/src");
}

#[test]
fn the_core_crate_depends_on_nothing_that_talks_to_a_network() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "tree",
            "-p",
            "eligd-core",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .args(["--format", "{p}"])
        .current_dir(root())
        .output()
        .expect("cargo tree");
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        crates.contains("eligd-core") && crates.contains("rkyv"),
        "{tree}"
    );
    for network in [
        "tokio",
        "hyper",
        "mio",
        "socket2",
        "redis",
        "postgres",
        "tokio-postgres",
        "rustls",
        "h2",
        "reqwest",
        "eligd",
    ] {
        assert!(
            !crates.contains(network),
            "eligd-core depends on {network}:\n{tree}"
        );
    }
}

/// The source paths a document names: every `src/…` and `core/src/…` path, and every file
/// or directory in backticks that ends in `.rs` or `/` (a path relative to `src/`, like
/// `channels/json.rs`), with the `{a,b}` shorthand expanded.
fn source_paths(text: &str) -> BTreeSet<String> {
    let path_char = |c: char| c.is_ascii_alphanumeric() || "_-./{},".contains(c);
    let mut named: Vec<&str> = text
        .split(|c: char| !path_char(c))
        .map(|t| t.trim_end_matches(['.', ',']))
        .filter(|t| t.starts_with("src/") || t.starts_with("core/src/"))
        .collect();
    named.extend(text.split('`').skip(1).step_by(2).filter(|t| {
        t.chars().all(path_char)
            && !t.starts_with(['.', '/'])
            && (t.ends_with(".rs") || (t.ends_with('/') && t.len() > 1))
    }));
    let mut paths = BTreeSet::new();
    for path in named {
        match (path.find('{'), path.find('}')) {
            (Some(open), Some(close)) if open < close => {
                for part in path[open + 1..close].split(',') {
                    paths.insert(format!("{}{}{}", &path[..open], part, &path[close + 1..]));
                }
            }
            _ => {
                paths.insert(path.to_string());
            }
        }
    }
    paths
}

/// Whether a path a document names exists: from the repository's root, or relative to a
/// crate's `src/`.
fn exists(path: &str) -> bool {
    ["", "src/", "core/src/"]
        .iter()
        .any(|base| root().join(format!("{base}{path}")).exists())
}

#[test]
fn docs_architecture_names_only_files_that_exist() {
    let text = std::fs::read_to_string(root().join("docs/architecture.md")).unwrap();
    let paths = source_paths(&text);
    assert!(paths.len() > 50, "{paths:?}");
    assert!(!exists("inquiry.rs") && !exists("http/answer.rs") && exists("inquiry/"));
    let missing: Vec<_> = paths.iter().filter(|p| !exists(p)).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names paths that do not exist: {missing:?}"
    );
    assert_eq!(
        source_paths("see `src/a/{b,c}.rs`, core/src/d.rs, `f/g.rs`, `h/` and loadtest/src/e.rs."),
        ["core/src/d.rs", "f/g.rs", "h/", "src/a/b.rs", "src/a/c.rs"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}
