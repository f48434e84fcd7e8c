//! `cargo xtask lint`: the architecture checks that rustc and clippy do not make.
//!
//! - overlay-user's library has no import circles: its module graph
//!   ([`graph`]) is acyclic;
//! - no module uses a higher layer ([`rules::LAYERS`]: sys < model <
//!   dataplane < agent < sources < bin), and the control sources
//!   (`sources::*`) do not use each other;
//! - every folder's `mod.rs` says what the folder owns and must not touch;
//! - no `anyhow` in overlay-user's library, one error enum per layer (per
//!   source in `sources`), and every error enum and variant there has a
//!   doc comment;
//! - no source file above [`rules::MAX_LINES`] lines in the crates below.
//!
//! Every problem is printed; the command fails if there is one.

pub mod graph;
pub mod rules;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The crates whose files must stay short.
pub const SHORT_FILE_CRATES: &[&str] = &[
    "overlay-user",
    "overlay-ebpf",
    "overlay-common",
    "xtask",
    "lab",
    "tests",
];

/// Every `.rs` file under `dir`, as (path relative to `dir`, text), sorted.
fn rust_files(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let rel = path
                    .strip_prefix(dir)
                    .expect("under dir")
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, text));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// overlay-user's library, parsed (its binaries under `src/bin` are the top layer: not in the graph).
fn library(root: &Path) -> Result<Vec<graph::SourceFile>> {
    let src: PathBuf = root.join("overlay-user").join("src");
    let lib: Vec<(String, String)> = rust_files(&src)?
        .into_iter()
        .filter(|(rel, _)| !rel.starts_with("bin/"))
        .collect();
    graph::parse(&lib).map_err(anyhow::Error::msg)
}

/// Prints overlay-user's module graph, one `module -> used module` per line.
pub fn print_graph(root: &Path) -> Result<()> {
    let g = graph::Graph::build(&library(root)?);
    for (from, tos) in &g.edges {
        for to in tos {
            println!("{} -> {}", graph::display(from), graph::display(to));
        }
    }
    Ok(())
}

/// All problems of the workspace at `root`.
pub fn problems(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let parsed = library(root)?;
    let g = graph::Graph::build(&parsed);
    problems.extend(rules::check_graph(&g));
    problems.extend(
        rules::check_error_enums(&parsed)
            .into_iter()
            .map(|p| p.replace(" in ", " in overlay-user/src/")),
    );
    problems.extend(
        rules::check_folder_docs(&parsed)
            .into_iter()
            .map(|p| p.replacen(": ", ": overlay-user/src/", 1)),
    );
    problems.extend(
        rules::check_sources(&parsed)
            .into_iter()
            .map(|p| p.replacen(": ", ": overlay-user/src/", 1)),
    );
    for krate in SHORT_FILE_CRATES {
        let files: Vec<(String, String)> = rust_files(&root.join(krate))?
            .into_iter()
            .map(|(rel, text)| (format!("{krate}/{rel}"), text))
            .collect();
        problems.extend(rules::check_lengths(&files));
    }
    Ok(problems)
}

/// Runs every check; prints each problem and fails if there is one.
pub fn run(root: &Path) -> Result<()> {
    let problems = problems(root)?;
    for p in &problems {
        println!("{p}");
    }
    if !problems.is_empty() {
        bail!("lint: {} problem(s)", problems.len());
    }
    println!(
        "lint: ok (overlay-user: no import circles, layers {}; files at most {} lines)",
        rules::LAYERS.join(" < "),
        rules::MAX_LINES
    );
    Ok(())
}
