//! The checks on overlay-user's module graph and sources.

use std::collections::{BTreeMap, BTreeSet};

use super::graph::{display, Graph, ModPath, SourceFile};

/// overlay-user's layers, bottom to top: a module may use its own layer and
/// the ones below, never one above. The layer of a module is that of its
/// top-level folder; the crate root (`lib.rs`) only declares them.
pub const LAYERS: &[&str] = &["sys", "model", "dataplane", "agent", "sources", "bin"];

/// Folders whose children are peers: one child may not name another (they
/// meet through the folder's own `mod.rs`). A child named `tests` (tests of
/// several peers together) is exempt.
pub const PEER_FOLDERS: &[&[&str]] = &[&["sources"]];

/// The longest source file allowed, in lines.
pub const MAX_LINES: usize = 600;

/// The layer of `module` (its index in [`LAYERS`]); `None` for the crate root.
fn layer(module: &ModPath) -> Result<Option<usize>, String> {
    let Some(top) = module.first() else {
        return Ok(None);
    };
    LAYERS
        .iter()
        .position(|l| l == top)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "module {} is in no layer; add its folder to LAYERS in xtask/src/lint/rules.rs",
                display(module)
            )
        })
}

/// Every import circle, each as a closed path (`a -> b -> a`).
pub fn cycles(graph: &Graph) -> Vec<Vec<ModPath>> {
    let mut found = Vec::new();
    for scc in strongly_connected(graph) {
        if scc.len() < 2 {
            continue;
        }
        // One concrete circle through the component's first module.
        let start = scc.iter().next().expect("non-empty").clone();
        if let Some(path) = path_back(graph, &scc, &start) {
            found.push(path);
        }
    }
    found
}

/// A shortest path `start -> .. -> start` within `scc` (breadth first).
fn path_back(graph: &Graph, scc: &BTreeSet<ModPath>, start: &ModPath) -> Option<Vec<ModPath>> {
    let mut prev: BTreeMap<ModPath, ModPath> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(m) = queue.pop_front() {
        for n in graph.edges.get(&m).into_iter().flatten() {
            if !scc.contains(n) {
                continue;
            }
            if n == start {
                let mut path = vec![start.clone()];
                let mut cur = m.clone();
                while &cur != start {
                    path.push(cur.clone());
                    cur = prev[&cur].clone();
                }
                path.push(start.clone());
                path.reverse();
                return Some(path);
            }
            if !prev.contains_key(n) {
                prev.insert(n.clone(), m.clone());
                queue.push_back(n.clone());
            }
        }
    }
    None
}

/// Tarjan's strongly connected components.
fn strongly_connected(graph: &Graph) -> Vec<BTreeSet<ModPath>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g ModPath, usize>,
        low: BTreeMap<&'g ModPath, usize>,
        stack: Vec<&'g ModPath>,
        on_stack: BTreeSet<&'g ModPath>,
        next: usize,
        out: Vec<BTreeSet<ModPath>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g ModPath) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        let graph = s.graph;
        for w in graph.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.insert(w.clone());
                if w == v {
                    break;
                }
            }
            s.out.push(scc);
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out
}

/// Import circles, references to a higher layer and between peers.
pub fn check_graph(graph: &Graph) -> Vec<String> {
    let mut problems = Vec::new();
    for cycle in cycles(graph) {
        let names: Vec<String> = cycle.iter().map(|m| display(m)).collect();
        let mut line = format!("import circle: {}", names.join(" -> "));
        let members = strongly_connected(graph)
            .into_iter()
            .find(|scc| scc.contains(&cycle[0]))
            .unwrap_or_default();
        if members.len() + 1 > cycle.len() {
            let all: Vec<String> = members.iter().map(|m| display(m)).collect();
            line.push_str(&format!(" (the circle joins {})", all.join(", ")));
        }
        problems.push(line);
    }
    for module in graph.modules.keys() {
        if let Err(e) = layer(module) {
            problems.push(e);
        }
    }
    for (from, tos) in &graph.edges {
        let Ok(lf) = layer(from) else { continue };
        for to in tos {
            let Ok(lt) = layer(to) else { continue };
            if let (Some(lf), Some(lt)) = (lf, lt) {
                if lt > lf {
                    problems.push(format!(
                        "layering: {} ({}) uses {} ({}), a higher layer; the order is {}",
                        display(from),
                        LAYERS[lf],
                        display(to),
                        LAYERS[lt],
                        LAYERS.join(" < ")
                    ));
                }
            }
            for folder in PEER_FOLDERS {
                let d = folder.len();
                let child = |m: &ModPath| -> Option<String> {
                    (m.len() > d && m[..d].iter().zip(folder.iter()).all(|(a, b)| a == b))
                        .then(|| m[d].clone())
                };
                if let (Some(a), Some(b)) = (child(from), child(to)) {
                    if a != b && a != "tests" {
                        problems.push(format!(
                            "peers: {} uses {}; the children of {} are peers and meet only through {}",
                            display(from),
                            display(to),
                            folder.join("::"),
                            folder.join("::")
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// Files longer than [`MAX_LINES`]: `(path, lines)` as given.
pub fn check_lengths(files: &[(String, String)]) -> Vec<String> {
    files
        .iter()
        .filter_map(|(path, text)| {
            let n = text.lines().count();
            (n > MAX_LINES).then(|| {
                format!("too long: {path} has {n} lines; at most {MAX_LINES}, split it by concern")
            })
        })
        .collect()
}

/// Every folder's `mod.rs` starts with a `//!` doc comment saying what the
/// folder owns and what it must not touch (the words `Owns` and `Must not
/// touch`).
pub fn check_folder_docs(files: &[SourceFile]) -> Vec<String> {
    files
        .iter()
        .filter(|f| f.rel.ends_with("/mod.rs"))
        .filter_map(|f| {
            let doc: String = f
                .ast
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("doc"))
                .filter_map(|a| match &a.meta {
                    syn::Meta::NameValue(nv) => match &nv.value {
                        syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(s),
                            ..
                        }) => Some(s.value()),
                        _ => None,
                    },
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n");
            (!(doc.contains("Owns") && doc.contains("Must not touch"))).then(|| {
                format!(
                    "folder docs: {} needs a //! doc comment saying what the folder owns (\"Owns: ...\") and what it must not touch (\"Must not touch: ...\")",
                    f.rel
                )
            })
        })
        .collect()
}

/// One error enum (`#[derive(thiserror::Error)]`) per layer; in a peer
/// folder ([`PEER_FOLDERS`]), one per peer and one for the folder itself.
pub fn check_error_enums(files: &[SourceFile]) -> Vec<String> {
    let mut scopes: BTreeMap<Vec<String>, Vec<String>> = BTreeMap::new();
    for f in files {
        for item in &f.ast.items {
            if let syn::Item::Enum(e) = item {
                if derives_thiserror(&e.attrs) {
                    // A layer's first folder; in a peer folder, the peer.
                    let depth = PEER_FOLDERS
                        .iter()
                        .find(|p| {
                            f.module.len() > p.len()
                                && f.module.iter().zip(p.iter()).all(|(a, b)| a == b)
                        })
                        .map_or(1, |p| p.len() + 1);
                    let scope = f.module[..depth.min(f.module.len())].to_vec();
                    scopes
                        .entry(scope)
                        .or_default()
                        .push(format!("{} in {}", e.ident, f.rel));
                }
            }
        }
    }
    scopes
        .into_iter()
        .filter(|(_, enums)| enums.len() > 1)
        .map(|(scope, enums)| {
            format!(
                "errors: {} has {} error enums ({}); one thiserror enum per layer (per source in sources)",
                display(&scope),
                enums.len(),
                enums.join(", ")
            )
        })
        .collect()
}

/// Library code must not use `anyhow` (binaries and xtask may), and every
/// error enum (`#[derive(thiserror::Error)]`) and each of its variants needs
/// a doc comment.
pub fn check_sources(files: &[SourceFile]) -> Vec<String> {
    let mut problems = Vec::new();
    for f in files {
        let mut v = SourceChecks {
            rel: &f.rel,
            problems: &mut problems,
        };
        syn::visit::Visit::visit_file(&mut v, &f.ast);
    }
    problems
}

struct SourceChecks<'a> {
    rel: &'a str,
    problems: &'a mut Vec<String>,
}

fn has_doc(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| a.path().is_ident("doc"))
}

fn derives_thiserror(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("derive") && {
            let tokens = a.meta.require_list().map(|l| l.tokens.to_string());
            tokens.is_ok_and(|t| t.replace(' ', "").contains("thiserror::Error"))
        }
    })
}

impl<'ast> syn::visit::Visit<'ast> for SourceChecks<'_> {
    fn visit_item_enum(&mut self, e: &'ast syn::ItemEnum) {
        if derives_thiserror(&e.attrs) {
            if !has_doc(&e.attrs) {
                self.problems.push(format!(
                    "error docs: {}: enum {} has no doc comment",
                    self.rel, e.ident
                ));
            }
            for v in &e.variants {
                if !has_doc(&v.attrs) {
                    self.problems.push(format!(
                        "error docs: {}: variant {}::{} has no doc comment",
                        self.rel, e.ident, v.ident
                    ));
                }
            }
        }
        syn::visit::visit_item_enum(self, e);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.segments.first().is_some_and(|s| s.ident == "anyhow") {
            self.problems.push(format!(
                "anyhow: {} uses anyhow; library code returns its layer's thiserror enum",
                self.rel
            ));
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_use_path(&mut self, p: &'ast syn::UsePath) {
        if p.ident == "anyhow" {
            self.problems.push(format!(
                "anyhow: {} uses anyhow; library code returns its layer's thiserror enum",
                self.rel
            ));
        }
        syn::visit::visit_use_path(self, p);
    }
}
