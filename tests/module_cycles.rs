//! Module cycles stay gone: data flows one way (parse → plan → execute →
//! commit → export), and two sibling modules that use each other are one
//! concern split badly or a helper in the wrong home.
//!
//! For every crate of the workspace this reads the sources, turns each
//! `crate::…`, `super::…` and `self::…` path outside test code into an edge
//! between the two sibling modules it connects (the children of the
//! deepest module both ends share), and fails naming every cycle among
//! siblings that is not in [`KNOWN`]. Paths into other crates are not
//! followed: cargo already refuses cycles between crates.
//!
//! The same reading of the sources checks that the engine's errors stay
//! typed: no boxed `dyn Error` outside the binary's own files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Cycles allowed to remain, each as its sorted module paths. Every cycle
/// the first run of this check found has been broken; keep it empty (the
/// test also fails when an entry here no longer matches anything).
const KNOWN: &[&[&str]] = &[];

const CRATES: &[(&str, &str)] = &[("kiln", "src"), ("kiln_overlay", "overlay/src"), ("kiln_runtime", "runtime/src")];

/// A module path below the crate root: `["exec", "run"]` for `crate::exec::run`.
type ModPath = Vec<String>;

struct Crate {
    /// Every module of the crate with the code that belongs to it.
    modules: BTreeMap<ModPath, String>,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The module a source file defines, from its path below the crate's `src`.
fn module_of(rel: &Path) -> ModPath {
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap_or_default();
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "lib" | "main" | "mod") {
        parts.push(stem.to_string());
    }
    parts
}

/// Source with comments, string contents and `#[cfg(test)]` items removed,
/// so that only paths the compiled library uses remain. Inline `mod x { … }`
/// blocks are returned separately with their names.
fn strip(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if src[i..].starts_with("//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if src[i..].starts_with("/*") {
            let end = src[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            i = end;
        } else if b[i] == b'"' {
            // A string literal (raw strings in sources here hold no quotes
            // that would end them early).
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'\'' && i + 2 < b.len() && (b[i + 2] == b'\'' || b[i + 1] == b'\\') {
            // A char literal such as '"' or '\n'; lifetimes pass through.
            let end = src[i + 1..].find('\'').map_or(b.len(), |e| i + 1 + e + 1);
            i = if b[i + 1] == b'\\' { src[i + 2..].find('\'').map_or(b.len(), |e| i + 2 + e + 1) } else { end };
            out.push_str("' '");
        } else if src[i..].starts_with("#[cfg(test)]") {
            i = skip_item(src, i + "#[cfg(test)]".len());
        } else {
            let c = src[i..].chars().next().unwrap_or(' ');
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// The index just past the item starting at `i`: up to its `;` or its
/// matching closing brace, whichever the item has.
fn skip_item(src: &str, mut i: usize) -> usize {
    let b = src.as_bytes();
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'{' => depth += 1,
            b'}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            b';' if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Each source file of the crate in `dir` (below its `src`, `bin/` left
/// out) with its code as [`strip`] leaves it.
fn sources(dir: &str) -> Vec<(PathBuf, String)> {
    let base = root().join(dir);
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(&base).into_iter().filter_map(Result::ok) {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(&base).expect("below the crate dir");
        if rel.starts_with("bin") {
            continue;
        }
        let src = std::fs::read_to_string(path).expect("read a source file");
        files.push((rel.to_path_buf(), strip(&src)));
    }
    files
}

fn load(dir: &str) -> Crate {
    Crate { modules: sources(dir).into_iter().map(|(rel, code)| (module_of(&rel), code)).collect() }
}

/// Every crate-internal path in `code`, resolved against module `here`.
fn references(here: &ModPath, code: &str) -> Vec<ModPath> {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    for (at, _) in code.match_indices("::") {
        // Start of the path this `::` belongs to.
        let before = &code[..at];
        let start = before.rfind(|c: char| !(word(c) || c == ':')).map_or(0, |p| p + 1);
        if code[start..].starts_with("::") || code[start..at].contains("::") {
            continue; // not the first `::` of its path
        }
        let head = &code[start..at];
        let mut base: ModPath = match head {
            "crate" => Vec::new(),
            "self" => here.clone(),
            "super" => here[..here.len().saturating_sub(1)].to_vec(),
            _ => continue,
        };
        let rest = &code[at + 2..];
        let mut segs = Vec::new();
        let mut offset = 0;
        loop {
            let seg = &rest[offset..];
            let name: String = seg.chars().take_while(|c| word(*c)).collect();
            if name == "super" && segs.is_empty() {
                base.pop();
            } else if name.is_empty() {
                if seg.starts_with('{') {
                    // A use group: each member's first segment.
                    for member in group_members(seg) {
                        let mut p = base.clone();
                        p.extend(segs.iter().cloned());
                        p.push(member);
                        found.push(p);
                    }
                    segs.clear();
                }
                break;
            } else {
                segs.push(name.clone());
            }
            offset += name.len();
            if !rest[offset..].starts_with("::") {
                break; // the path ends here
            }
            offset += 2;
        }
        if !segs.is_empty() {
            base.extend(segs);
            found.push(base);
        }
    }
    found
}

/// The first segment of each member of a `{a::b, c, d::{e}}` group.
fn group_members(seg: &str) -> Vec<String> {
    let mut members = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    for c in seg.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    continue;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    members.push(std::mem::take(&mut current));
                    break;
                }
            }
            ',' if depth == 1 => {
                members.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        if depth >= 1 {
            current.push(c);
        }
    }
    members
        .into_iter()
        .filter_map(|m| {
            let first: String = m.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            (!first.is_empty() && first != "self").then_some(first)
        })
        .collect()
}

/// Edges between siblings: parent module → (from child, to child).
fn sibling_edges(krate: &Crate) -> BTreeMap<ModPath, BTreeSet<(String, String)>> {
    let mut edges: BTreeMap<ModPath, BTreeSet<(String, String)>> = BTreeMap::new();
    for (here, code) in &krate.modules {
        for target in references(here, code) {
            let common = here.iter().zip(&target).take_while(|(a, b)| a == b).count();
            if common >= here.len() || common >= target.len() {
                continue; // a module using its own descendant or ancestor
            }
            let parent = here[..common].to_vec();
            let mut to_mod = parent.clone();
            to_mod.push(target[common].clone());
            if !krate.modules.contains_key(&to_mod) {
                continue; // an item of the parent, not a sibling module
            }
            edges.entry(parent).or_default().insert((here[common].clone(), target[common].clone()));
        }
    }
    edges
}

/// Strongly connected components with more than one member (Tarjan).
fn cycles(edges: &BTreeSet<(String, String)>) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = edges.iter().flat_map(|(a, b)| [a, b]).collect::<BTreeSet<_>>().into_iter().collect();
    let id = |n: &String| nodes.iter().position(|m| *m == n).expect("a node of the graph");
    let mut succ = vec![Vec::new(); nodes.len()];
    for (a, b) in edges {
        succ[id(a)].push(id(b));
    }
    struct Tarjan {
        succ: Vec<Vec<usize>>,
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on_stack: Vec<bool>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    impl Tarjan {
        fn visit(&mut self, n: usize) {
            self.index[n] = Some(self.next);
            self.low[n] = self.next;
            self.next += 1;
            self.stack.push(n);
            self.on_stack[n] = true;
            for m in self.succ[n].clone() {
                match self.index[m] {
                    None => {
                        self.visit(m);
                        self.low[n] = self.low[n].min(self.low[m]);
                    }
                    Some(i) if self.on_stack[m] => self.low[n] = self.low[n].min(i),
                    Some(_) => {}
                }
            }
            if Some(self.low[n]) == self.index[n] {
                let mut comp = Vec::new();
                while let Some(m) = self.stack.pop() {
                    self.on_stack[m] = false;
                    comp.push(m);
                    if m == n {
                        break;
                    }
                }
                if comp.len() > 1 {
                    self.out.push(comp);
                }
            }
        }
    }
    let count = nodes.len();
    let mut t = Tarjan {
        succ,
        index: vec![None; count],
        low: vec![0; count],
        stack: Vec::new(),
        on_stack: vec![false; count],
        next: 0,
        out: Vec::new(),
    };
    for n in 0..count {
        if t.index[n].is_none() {
            t.visit(n);
        }
    }
    t.out
        .into_iter()
        .map(|comp| {
            let mut names: Vec<String> = comp.into_iter().map(|i| nodes[i].clone()).collect();
            names.sort();
            names
        })
        .collect()
}

/// Every sibling cycle of the workspace, each as sorted full module paths.
fn workspace_cycles() -> Vec<(Vec<String>, String)> {
    let mut all = Vec::new();
    for (name, dir) in CRATES {
        let krate = load(dir);
        for (parent, edges) in sibling_edges(&krate) {
            for comp in cycles(&edges) {
                let prefix: Vec<&str> = std::iter::once(*name).chain(parent.iter().map(String::as_str)).collect();
                let full: Vec<String> = comp.iter().map(|c| format!("{}::{c}", prefix.join("::"))).collect();
                let why: Vec<String> = edges
                    .iter()
                    .filter(|(a, b)| comp.contains(a) && comp.contains(b))
                    .map(|(a, b)| format!("{a} → {b}"))
                    .collect();
                all.push((full, why.join(", ")));
            }
        }
    }
    all
}

#[test]
fn no_new_module_cycles() {
    let found = workspace_cycles();
    let known: Vec<Vec<String>> = KNOWN.iter().map(|c| c.iter().map(|s| s.to_string()).collect()).collect();
    let new: Vec<String> = found
        .iter()
        .filter(|(c, _)| !known.contains(c))
        .map(|(c, why)| format!("  {} ({why})", c.join(" ⇄ ")))
        .collect();
    let gone: Vec<String> =
        known.iter().filter(|k| !found.iter().any(|(c, _)| c == *k)).map(|k| format!("  {}", k.join(" ⇄ "))).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "module cycles changed.\nNew cycles (break them: move the shared piece to one home both can use):\n{}\n\
         Cycles in KNOWN that are gone (delete their entries in tests/module_cycles.rs):\n{}",
        new.join("\n"),
        gone.join("\n")
    );
}

#[test]
fn the_checker_sees_a_cycle_and_a_use_group() {
    let code_a = strip("use crate::b::{x, c::y};\n#[cfg(test)]\nmod tests { use crate::d::z; }\n// crate::e::w\n");
    let refs = references(&vec!["a".to_string()], &code_a);
    assert_eq!(refs, vec![vec!["b".to_string(), "x".to_string()], vec!["b".to_string(), "c".to_string()]]);
    let edges: BTreeSet<(String, String)> =
        [("a", "b"), ("b", "a"), ("b", "c")].iter().map(|(x, y)| (x.to_string(), y.to_string())).collect();
    assert_eq!(cycles(&edges), vec![vec!["a".to_string(), "b".to_string()]]);
    let sup = references(&vec!["x".to_string(), "y".to_string()], "super::z::f(); super::super::q::g();");
    assert_eq!(
        sup,
        vec![vec!["x".to_string(), "z".to_string(), "f".to_string()], vec!["q".to_string(), "g".to_string()]]
    );
}

/// The binary's files below `src/`: they may box errors (anyhow, the report).
const BINARY: &[&str] = &["main.rs", "cli", "report.rs"];

/// Each `Box<dyn …Error…>` or `Arc<dyn …Error…>` in `code`, as written
/// (whitespace collapsed).
fn boxed_errors(code: &str) -> Vec<String> {
    let code = code.split_whitespace().collect::<Vec<_>>().join(" ").replace("< ", "<");
    let mut found = Vec::new();
    for pointer in ["Box<dyn ", "Arc<dyn "] {
        for (at, _) in code.match_indices(pointer) {
            let rest = &code[at + pointer.len()..];
            let bound = rest.split(['+', '>', ')', ',']).next().unwrap_or_default().trim();
            if bound.rsplit("::").next().is_some_and(|last| last.ends_with("Error")) {
                found.push(format!("{pointer}{bound}"));
            }
        }
    }
    found
}

#[test]
fn the_engine_boxes_no_errors() {
    let mut found = Vec::new();
    for (name, dir) in CRATES {
        for (rel, code) in sources(dir) {
            if *name == "kiln" && BINARY.iter().any(|b| rel.starts_with(b)) {
                continue;
            }
            found.extend(boxed_errors(&code).into_iter().map(|b| format!("  {dir}/{}: {b}", rel.display())));
        }
    }
    assert!(
        found.is_empty(),
        "boxed errors in the engine (give the function a thiserror enum, e.g. exec::StepError, whose \
         variants keep their sources):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_sees_a_boxed_error() {
    let code = strip(
        "fn a() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {}\n\
         fn b(r: Box<dyn Read + '_>, e: Box<\n    dyn Error>) {}\n\
         // Box<dyn Error>\n#[cfg(test)]\nmod tests { fn c() -> Box<dyn StdError> {} }\n",
    );
    assert_eq!(boxed_errors(&code), vec!["Box<dyn std::error::Error", "Box<dyn Error"]);
}
