//! `cargo xtask shape`: the code's shape, checked — no source file over 800 lines of code (its
//! inline `#[cfg(test)]` modules and files under `tests/` not counted), no function over 120
//! lines (tests not counted), and no import circle between a crate's modules (a module naming
//! another through `crate::`, `super::` or a sibling path; a parent declaring its children and
//! test code do not count). Parses every `.rs` file of the tree with syn.

use anyhow::{bail, Context, Result};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use syn::spanned::Spanned;
use syn::visit::Visit;

/// Lines of code a source file may hold (its inline test modules not counted).
pub const MAX_FILE_LINES: usize = 800;
/// Lines a function may span, from `fn` to its closing brace.
pub const MAX_FN_LINES: usize = 120;

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// (file, lines of code) over the limit.
    pub long_files: Vec<(PathBuf, usize)>,
    /// (file:line, function, lines) over the limit.
    pub long_fns: Vec<(String, String, usize)>,
    /// Each circle: the modules in it, one crate's.
    pub circles: Vec<Vec<String>>,
}

impl Report {
    fn is_clean(&self) -> bool {
        self.long_files.is_empty() && self.long_fns.is_empty() && self.circles.is_empty()
    }
}

pub fn run(args: &[&str]) -> Result<()> {
    let quiet = args.contains(&"--quiet");
    // `--root DIR` checks another checkout (an older commit's, to compare).
    let root = match args.iter().position(|a| *a == "--root") {
        Some(i) => PathBuf::from(args.get(i + 1).context("--root needs a directory")?),
        None => crate::root(),
    };
    let report = check(&root)?;
    if !quiet || !report.is_clean() {
        print(&report);
    }
    if !report.is_clean() {
        bail!(
            "the code's shape: {} long files, {} long functions, {} import circles",
            report.long_files.len(),
            report.long_fns.len(),
            report.circles.len()
        );
    }
    if quiet {
        println!("shape: no file over {MAX_FILE_LINES} lines, no function over {MAX_FN_LINES}, no import circle");
    }
    Ok(())
}

fn print(report: &Report) {
    println!(
        "files over {MAX_FILE_LINES} lines of code: {}",
        report.long_files.len()
    );
    for (file, lines) in &report.long_files {
        println!("  {lines:5}  {}", file.display());
    }
    println!(
        "functions over {MAX_FN_LINES} lines: {}",
        report.long_fns.len()
    );
    for (at, name, lines) in &report.long_fns {
        println!("  {lines:5}  {name}  ({at})");
    }
    println!("import circles: {}", report.circles.len());
    for circle in &report.circles {
        println!("  {}", circle.join(" ⇄ "));
    }
}

/// Checks every crate under `root`: `crates/*`, `src-tauri`, `xtask` and `fuzz`.
pub fn check(root: &Path) -> Result<Report> {
    let mut crate_dirs: Vec<PathBuf> = vec![
        root.join("src-tauri"),
        root.join("xtask"),
        root.join("fuzz"),
    ];
    for entry in std::fs::read_dir(root.join("crates")).context("reading crates/")? {
        crate_dirs.push(entry?.path());
    }
    crate_dirs.sort();
    let mut report = Report::default();
    for dir in crate_dirs.iter().filter(|d| d.join("Cargo.toml").is_file()) {
        check_crate(root, dir, &mut report)?;
    }
    Ok(report)
}

/// One parsed source file: its module path inside its target and what it names.
struct Module {
    path: Vec<String>,
    uses: BTreeSet<Vec<String>>,
}

fn check_crate(root: &Path, dir: &Path, report: &mut Report) -> Result<()> {
    let mut files = Vec::new();
    for sub in ["src", "tests", "benches", "fuzz_targets", "examples"] {
        collect_rs(&dir.join(sub), &mut files)?;
    }
    // Each target (src's lib/main, each bin and test file) is its own module tree: a circle
    // is looked for inside src only, where the modules of one library or binary live.
    let mut modules = Vec::new();
    for file in &files {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let ast = syn::parse_file(&text).with_context(|| format!("parsing {}", file.display()))?;
        let rel = file.strip_prefix(root).unwrap_or(file).to_path_buf();
        // Test code: files under tests/, `*tests.rs` files and test helpers (cfg(test) modules).
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
        let under_tests = rel.components().any(|c| c.as_os_str() == "tests")
            || name.is_some_and(|n| n.ends_with("tests.rs") || n == "test_util.rs");
        let mut lines = LineCounter::default();
        lines.visit_file(&ast);
        let code_lines = text.lines().count().saturating_sub(lines.test_lines);
        if !under_tests && code_lines > MAX_FILE_LINES {
            report.long_files.push((rel.clone(), code_lines));
        }
        if !under_tests {
            for (line, name, len) in lines.long_fns {
                report
                    .long_fns
                    .push((format!("{}:{line}", rel.display()), name, len));
            }
        }
        if let Ok(in_src) = file.strip_prefix(dir.join("src")) {
            let path = module_path(in_src);
            let mut names = Names {
                here: path.clone(),
                uses: BTreeSet::new(),
                in_test: 0,
            };
            names.visit_file(&ast);
            modules.push(Module {
                path,
                uses: names.uses,
            });
        }
    }
    // Two source trees can share src/ (a lib.rs and a main.rs): both are checked as one, which
    // at worst finds a circle through the binary that names the library's modules.
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for module in &modules {
        let entry = edges.entry(module.path.clone()).or_default();
        for used in &module.uses {
            // The longest prefix that is a module file of this crate.
            let Some(target) = (1..=used.len())
                .rev()
                .map(|n| used[..n].to_vec())
                .find(|p| known.contains(p))
            else {
                continue;
            };
            // A module naming itself, or a parent naming its own children, is no circle.
            if target == module.path || target.starts_with(&module.path) {
                continue;
            }
            entry.insert(target);
        }
    }
    let crate_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for scc in strongly_connected(&edges) {
        if scc.len() > 1 {
            report.circles.push(
                scc.iter()
                    .map(|p| {
                        format!(
                            "{crate_name}::{}",
                            if p.is_empty() {
                                "(root)".to_string()
                            } else {
                                p.join("::")
                            }
                        )
                    })
                    .collect(),
            );
        }
    }
    Ok(())
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    let mut entries: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// `engine/mod.rs` → [engine]; `lib.rs`/`main.rs` → []; `control/machine.rs` → [control, machine].
fn module_path(in_src: &Path) -> Vec<String> {
    let mut parts: Vec<String> = in_src
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        let root_file = parts.is_empty() && matches!(stem, "lib" | "main");
        if stem != "mod" && !root_file {
            parts.push(stem.to_string());
        }
    }
    parts
}

fn is_test_attr(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let path = a.path();
        if path.is_ident("test") {
            return true;
        }
        if path.is_ident("cfg") {
            let text = a.meta.to_token_stream_string();
            return text.contains("test") && !text.contains("not");
        }
        path.segments.last().is_some_and(|s| s.ident == "test")
    })
}

trait MetaText {
    fn to_token_stream_string(&self) -> String;
}

impl MetaText for syn::Meta {
    fn to_token_stream_string(&self) -> String {
        quote::ToTokens::to_token_stream(self).to_string()
    }
}

/// Counts the lines of test modules and finds long functions outside them.
#[derive(Default)]
struct LineCounter {
    test_lines: usize,
    long_fns: Vec<(usize, String, usize)>,
    in_test: usize,
}

impl LineCounter {
    fn function(&mut self, attrs: &[syn::Attribute], sig: &syn::Signature, block: &syn::Block) {
        if self.in_test > 0 || is_test_attr(attrs) {
            return;
        }
        let start = sig.fn_token.span.start().line;
        let end = block.brace_token.span.close().end().line;
        let name = &sig.ident;
        let len = end.saturating_sub(start) + 1;
        if len > MAX_FN_LINES {
            self.long_fns.push((start, name.to_string(), len));
        }
    }
}

impl<'a> Visit<'a> for LineCounter {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        let test = is_test_attr(&m.attrs);
        if test && self.in_test == 0 && m.content.is_some() {
            let span = m.span();
            self.test_lines += span.end().line.saturating_sub(span.start().line) + 1;
        }
        self.in_test += usize::from(test);
        syn::visit::visit_item_mod(self, m);
        self.in_test -= usize::from(test);
    }
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        self.function(&f.attrs, &f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
    }
    fn visit_impl_item_fn(&mut self, f: &'a syn::ImplItemFn) {
        self.function(&f.attrs, &f.sig, &f.block);
        syn::visit::visit_impl_item_fn(self, f);
    }
    fn visit_trait_item_fn(&mut self, f: &'a syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.function(&f.attrs, &f.sig, block);
        }
        syn::visit::visit_trait_item_fn(self, f);
    }
}

/// Collects the module paths a file names, resolved to paths from its crate's root.
struct Names {
    here: Vec<String>,
    uses: BTreeSet<Vec<String>>,
    in_test: usize,
}

impl Names {
    fn resolve(&mut self, segments: &[String]) {
        if self.in_test > 0 || segments.is_empty() {
            return;
        }
        let mut base = self.here.clone();
        let mut rest = segments;
        match rest[0].as_str() {
            "crate" => {
                base.clear();
                rest = &rest[1..];
            }
            "self" => rest = &rest[1..],
            "super" => {
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            // A plain path names a child module (or an outside crate: not found later).
            _ => {}
        }
        let mut full = base;
        full.extend(rest.iter().cloned());
        self.uses.insert(full);
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                let path = prefix.clone();
                self.resolve(&path);
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                let path = prefix.clone();
                self.resolve(&path);
                prefix.pop();
            }
            syn::UseTree::Glob(_) => {
                let path = prefix.clone();
                self.resolve(&path);
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'a> Visit<'a> for Names {
    fn visit_item_mod(&mut self, m: &'a syn::ItemMod) {
        let test = is_test_attr(&m.attrs);
        // An inline module's paths resolve from inside it; counted as its file's.
        self.in_test += usize::from(test);
        if m.content.is_some() {
            self.here.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.here.pop();
        }
        self.in_test -= usize::from(test);
    }
    fn visit_item_fn(&mut self, f: &'a syn::ItemFn) {
        let test = is_test_attr(&f.attrs);
        self.in_test += usize::from(test);
        syn::visit::visit_item_fn(self, f);
        self.in_test -= usize::from(test);
    }
    fn visit_item_use(&mut self, u: &'a syn::ItemUse) {
        if is_test_attr(&u.attrs) {
            return;
        }
        self.use_tree(&mut Vec::new(), &u.tree);
    }
    fn visit_path(&mut self, p: &'a syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        if segments.len() > 1 {
            self.resolve(&segments);
        }
        syn::visit::visit_path(self, p);
    }
}

/// Tarjan's strongly connected components over the module graph.
fn strongly_connected(
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(next) = s.edges.get(v) {
            for w in next {
                let Some((w, _)) = s.edges.get_key_value(w) else {
                    continue;
                };
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let lw = s.low[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(lw));
                } else if s.on_stack.contains(w) {
                    let iw = s.index[w];
                    let lv = s.low[v];
                    s.low.insert(v, lv.min(iw));
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.push(w.clone());
                if w == v {
                    break;
                }
            }
            scc.sort();
            s.out.push(scc);
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(pairs: &[(&str, &str)]) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
        let mut g: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (a, b) in pairs {
            g.entry(vec![a.to_string()])
                .or_default()
                .insert(vec![b.to_string()]);
            g.entry(vec![b.to_string()]).or_default();
        }
        g
    }

    #[test]
    fn a_circle_is_found_and_a_chain_is_not() {
        let circles: Vec<_> =
            strongly_connected(&graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]))
                .into_iter()
                .filter(|s| s.len() > 1)
                .collect();
        assert_eq!(circles.len(), 1);
        assert_eq!(circles[0].len(), 3);
        let chain = strongly_connected(&graph(&[("a", "b"), ("b", "c")]));
        assert!(chain.iter().all(|s| s.len() == 1));
    }

    #[test]
    fn module_paths_follow_the_files() {
        assert_eq!(module_path(Path::new("lib.rs")), Vec::<String>::new());
        assert_eq!(module_path(Path::new("main.rs")), Vec::<String>::new());
        assert_eq!(module_path(Path::new("engine.rs")), vec!["engine"]);
        assert_eq!(module_path(Path::new("control/mod.rs")), vec!["control"]);
        assert_eq!(
            module_path(Path::new("control/machine.rs")),
            vec!["control", "machine"]
        );
    }

    #[test]
    fn long_functions_and_test_lines_are_counted() {
        let body = "    let x = 1;\n".repeat(MAX_FN_LINES);
        let text = format!(
            "fn long() {{\n{body}}}\nfn short() {{}}\n#[cfg(test)]\nmod tests {{\n    #[test]\n    fn t() {{\n{body}    }}\n}}\n"
        );
        let ast = syn::parse_file(&text).unwrap();
        let mut counter = LineCounter::default();
        counter.visit_file(&ast);
        assert_eq!(counter.long_fns.len(), 1, "{:?}", counter.long_fns);
        assert_eq!(counter.long_fns[0].1, "long");
        // The attribute, `mod tests {`, `#[test]`, `fn t() {`, the body, two closing braces.
        assert_eq!(counter.test_lines, MAX_FN_LINES + 6);
    }

    #[test]
    fn super_and_crate_paths_resolve_from_the_module() {
        let ast = syn::parse_file("use super::peer::Peer;\nuse crate::types::{SocketId, Path as P};\nfn f() { crate::udp::bind(); }").unwrap();
        let mut names = Names {
            here: vec!["paths".into(), "select".into()],
            uses: BTreeSet::new(),
            in_test: 0,
        };
        names.visit_file(&ast);
        let has = |p: &[&str]| {
            names
                .uses
                .contains(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert!(has(&["paths", "peer", "Peer"]));
        assert!(has(&["types", "SocketId"]));
        assert!(has(&["types", "Path"]));
        assert!(has(&["udp", "bind"]));
    }
}
