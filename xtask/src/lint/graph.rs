//! The module graph of a library crate, from its source files.
//!
//! A node is a module *file* (`lib.rs` is the root `crate`, `a.rs` and
//! `a/mod.rs` are `a`, `a/b.rs` is `a::b`). An edge `m -> n` means that the
//! file of `m` names something in `n`: a `use` item, a path in code or in a
//! macro's tokens, starting with `crate::`, `super::`, `self::` or the name
//! of a child module. A path is resolved to the deepest module file it
//! passes through (`crate::agent::tables::Agent` is `agent::tables`).
//! Declaring a child (`mod x;`) is not an edge. Modules written inline
//! (`mod tests { .. }`) belong to their file; `super` inside them first
//! leaves the inline module.

use std::collections::{BTreeMap, BTreeSet};

use proc_macro2::{TokenStream, TokenTree};
use syn::visit::Visit;

/// A module path, e.g. `["agent", "tables"]`; the crate root is empty.
pub type ModPath = Vec<String>;

/// `agent::tables`, or `crate` for the root.
pub fn display(path: &[String]) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

/// The module a source file defines, from its path relative to `src/`
/// (`lib.rs`, `agent/mod.rs`, `agent/tables.rs`); `None` for other files.
pub fn module_of(rel: &str) -> Option<ModPath> {
    let rel = rel.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rel.split('/').map(str::to_string).collect();
    match parts.last().map(String::as_str) {
        Some("lib") | Some("main") if parts.len() == 1 => Some(Vec::new()),
        Some("mod") => {
            parts.pop();
            Some(parts)
        }
        _ => Some(parts),
    }
}

/// One parsed file.
pub struct SourceFile {
    /// Its path relative to `src/`.
    pub rel: String,
    /// The module it defines.
    pub module: ModPath,
    /// Its syntax tree.
    pub ast: syn::File,
}

/// Modules and the references between them.
#[derive(Debug, Default)]
pub struct Graph {
    /// Every module file, with its path relative to `src/`.
    pub modules: BTreeMap<ModPath, String>,
    /// `from -> {to}`, without self-edges.
    pub edges: BTreeMap<ModPath, BTreeSet<ModPath>>,
}

/// Parses `files` (relative path, text) into source files; a file that does
/// not parse is an error naming it.
pub fn parse(files: &[(String, String)]) -> Result<Vec<SourceFile>, String> {
    let mut out = Vec::new();
    for (rel, text) in files {
        let Some(module) = module_of(rel) else {
            continue;
        };
        let ast = syn::parse_file(text).map_err(|e| format!("{rel}: does not parse: {e}"))?;
        out.push(SourceFile {
            rel: rel.clone(),
            module,
            ast,
        });
    }
    Ok(out)
}

impl Graph {
    /// The graph of `files`.
    pub fn build(files: &[SourceFile]) -> Graph {
        let mut graph = Graph::default();
        for f in files {
            graph.modules.insert(f.module.clone(), f.rel.clone());
        }
        for f in files {
            let mut v = PathCollector {
                scope: f.module.clone(),
                found: Vec::new(),
            };
            v.visit_file(&f.ast);
            let mut targets = BTreeSet::new();
            for (scope, path) in v.found {
                if let Some(t) = graph.resolve(&scope, f.module.len(), &path) {
                    if t != f.module {
                        targets.insert(t);
                    }
                }
            }
            graph.edges.insert(f.module.clone(), targets);
        }
        graph
    }

    /// The module file `path` (as written in module `scope`) refers to.
    /// `file_depth` is the length of the path of the file's own module:
    /// `scope` is longer inside inline modules.
    fn resolve(&self, scope: &[String], file_depth: usize, path: &[String]) -> Option<ModPath> {
        let file = &scope[..file_depth.min(scope.len())];
        let first = path.first()?;
        let (base, rest): (ModPath, &[String]) = match first.as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "self" => (scope.to_vec(), &path[1..]),
            "super" => {
                let supers = path.iter().take_while(|s| *s == "super").count();
                if supers > scope.len() {
                    return None;
                }
                (scope[..scope.len() - supers].to_vec(), &path[supers..])
            }
            name => {
                // A child module of the file's module (2018 uniform paths).
                let mut child = file.to_vec();
                child.push(name.to_string());
                if scope.len() == file_depth && self.modules.contains_key(&child) {
                    (scope.to_vec(), path)
                } else {
                    return None;
                }
            }
        };
        // Inside an inline module of this very file: the file itself.
        if base.len() > file.len() && base.starts_with(file) {
            return Some(file.to_vec());
        }
        let mut best = None;
        let mut cur = base.clone();
        if self.modules.contains_key(&cur) {
            best = Some(cur.clone());
        }
        for seg in rest {
            cur.push(seg.clone());
            if self.modules.contains_key(&cur) {
                best = Some(cur.clone());
            } else {
                break;
            }
        }
        if best.is_none() {
            let mut up = base;
            while !up.is_empty() && !self.modules.contains_key(&up) {
                up.pop();
            }
            best = self.modules.contains_key(&up).then_some(up);
        }
        best
    }
}

/// Collects every path (with the module scope it appears in) of one file.
struct PathCollector {
    scope: ModPath,
    found: Vec<(ModPath, Vec<String>)>,
}

impl PathCollector {
    fn add(&mut self, path: Vec<String>) {
        if !path.is_empty() {
            self.found.push((self.scope.clone(), path));
        }
    }

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
                self.add(path);
            }
            syn::UseTree::Rename(r) => {
                let mut path = prefix.clone();
                if r.ident != "self" {
                    path.push(r.ident.to_string());
                }
                self.add(path);
            }
            syn::UseTree::Glob(_) => self.add(prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    /// Paths written inside a macro's tokens (`format!`, `matches!`, ...):
    /// `crate`, `super` or `self` followed by `::` and identifiers.
    fn tokens(&mut self, tokens: TokenStream) {
        let trees: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < trees.len() {
            match &trees[i] {
                TokenTree::Group(g) => self.tokens(g.stream()),
                TokenTree::Ident(id)
                    if (id == "crate" || id == "super" || id == "self")
                        && !preceded_by_colons(&trees, i) =>
                {
                    let mut path = vec![id.to_string()];
                    let mut j = i + 1;
                    while is_colons(&trees, j) {
                        match trees.get(j + 2) {
                            Some(TokenTree::Ident(next)) => {
                                path.push(next.to_string());
                                j += 3;
                            }
                            _ => break,
                        }
                    }
                    if path.len() > 1 {
                        self.add(path);
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn is_colons(trees: &[TokenTree], j: usize) -> bool {
    matches!((trees.get(j), trees.get(j + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b))) if a.as_char() == ':' && b.as_char() == ':')
}

fn preceded_by_colons(trees: &[TokenTree], i: usize) -> bool {
    i >= 2 && is_colons(trees, i - 2)
}

impl<'ast> Visit<'ast> for PathCollector {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_some() {
            self.scope.push(m.ident.to_string());
            syn::visit::visit_item_mod(self, m);
            self.scope.pop();
        }
        // `mod x;` declares a child: not an edge.
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &u.tree);
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        if p.leading_colon.is_none() {
            let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
            if segs.len() > 1 || matches!(segs.first().map(String::as_str), Some("crate")) {
                self.add(segs);
            }
        }
        syn::visit::visit_path(self, p);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        self.visit_path(&m.path);
        self.tokens(m.tokens.clone());
    }

    fn visit_visibility(&mut self, v: &'ast syn::Visibility) {
        // `pub(crate)`, `pub(super)`: a visibility, not a use.
        let _ = v;
    }

    fn visit_attribute(&mut self, a: &'ast syn::Attribute) {
        // Paths in `#[cfg(..)]`, `#[serde(with = "..")]` and the like do not name modules.
        let _ = a;
    }
}
