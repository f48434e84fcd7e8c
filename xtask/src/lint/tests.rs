use super::graph::{module_of, parse, Graph, ModPath};
use super::rules::{
    check_error_enums, check_folder_docs, check_graph, check_lengths, check_sources, cycles,
};

/// A module path from `a::b::c`.
fn mod_path(s: &str) -> ModPath {
    if s == "crate" {
        Vec::new()
    } else {
        s.split("::").map(str::to_string).collect()
    }
}

fn graph(files: &[(&str, &str)]) -> Graph {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect();
    Graph::build(&parse(&files).unwrap())
}

fn edges(g: &Graph, from: &str) -> Vec<String> {
    g.edges[&mod_path(from)]
        .iter()
        .map(|m| super::graph::display(m))
        .collect()
}

#[test]
fn module_paths() {
    assert_eq!(module_of("lib.rs"), Some(vec![]));
    assert_eq!(module_of("agent/mod.rs"), Some(mod_path("agent")));
    assert_eq!(
        module_of("agent/tables.rs"),
        Some(mod_path("agent::tables"))
    );
    assert_eq!(module_of("README.md"), None);
}

#[test]
fn a_clean_graph_passes() {
    let g = graph(&[
        ("lib.rs", "pub mod sys; pub mod model; pub mod agent;"),
        ("sys/mod.rs", "pub mod netlink;"),
        (
            "sys/netlink.rs",
            "pub(crate) struct Link; pub(super) fn f() {}",
        ),
        ("model/mod.rs", "pub struct PeerSpec;"),
        (
            "agent/mod.rs",
            "//! Core.\npub mod tables;\npub use tables::Agent;",
        ),
        (
            "agent/tables.rs",
            "use crate::model::PeerSpec;\nuse crate::sys::netlink::{self, Link};\n\
             pub struct Agent(PeerSpec, Link);\n\
             #[cfg(test)] mod tests { use super::*; use super::super::tables::Agent as A; }",
        ),
    ]);
    assert_eq!(edges(&g, "agent"), vec!["agent::tables"]);
    assert_eq!(edges(&g, "agent::tables"), vec!["model", "sys::netlink"]);
    // Declaring children is not an edge.
    assert!(edges(&g, "crate").is_empty());
    assert!(edges(&g, "sys").is_empty());
    assert!(cycles(&g).is_empty());
    assert_eq!(check_graph(&g), Vec::<String>::new());
}

#[test]
fn a_synthetic_circle_is_found() {
    let g = graph(&[
        ("lib.rs", "pub mod agent; pub mod sources;"),
        ("agent/mod.rs", "pub mod tables;"),
        (
            "agent/tables.rs",
            "pub struct Agent; fn f() { let _ = crate::sources::docker::Watcher; }",
        ),
        ("sources/mod.rs", "pub mod docker;"),
        (
            "sources/docker.rs",
            "use super::super::agent::tables::Agent; pub struct Watcher;",
        ),
    ]);
    assert_eq!(
        cycles(&g)
            .iter()
            .map(|c| c
                .iter()
                .map(|m| m.join("::"))
                .collect::<Vec<_>>()
                .join(" -> "))
            .collect::<Vec<_>>(),
        vec!["agent::tables -> sources::docker -> agent::tables"]
    );
    let problems = check_graph(&g);
    assert!(
        problems
            .contains(&"import circle: agent::tables -> sources::docker -> agent::tables".into()),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.starts_with(
            "layering: agent::tables (agent) uses sources::docker (sources), a higher layer"
        )),
        "{problems:?}"
    );
}

#[test]
fn a_parent_that_reexports_what_its_child_uses_is_a_circle() {
    // The trait module re-exports an implementation that implements the trait.
    let g = graph(&[
        ("lib.rs", "pub mod dataplane;"),
        (
            "dataplane/mod.rs",
            "pub mod bpf; pub use bpf::Bpf; pub trait Dataplane {}",
        ),
        (
            "dataplane/bpf.rs",
            "use super::Dataplane; pub struct Bpf; impl Dataplane for Bpf {}",
        ),
    ]);
    assert_eq!(cycles(&g).len(), 1);
}

#[test]
fn paths_in_macros_count() {
    let g = graph(&[
        ("lib.rs", "pub mod model; pub mod agent;"),
        ("model/mod.rs", "pub mod source; pub struct X;"),
        ("model/source.rs", "pub enum Source { Api }"),
        (
            "agent/mod.rs",
            "fn f(s: u8) -> bool { matches!(s, crate::model::source::Source::Api) }",
        ),
    ]);
    assert_eq!(edges(&g, "agent"), vec!["model::source"]);
}

#[test]
fn peers_may_not_use_each_other() {
    let g = graph(&[
        ("lib.rs", "pub mod sources;"),
        (
            "sources/mod.rs",
            "pub mod api; pub mod attach; pub trait Plumber {}",
        ),
        ("sources/api.rs", "use crate::sources::attach::attach;"),
        (
            "sources/attach.rs",
            "use super::Plumber; pub fn attach() {}",
        ),
    ]);
    assert_eq!(
        check_graph(&g),
        vec![
            "peers: sources::api uses sources::attach; the children of sources are peers and meet only through sources"
        ]
    );
}

#[test]
fn unknown_folders_are_reported() {
    let g = graph(&[("lib.rs", "pub mod misc;"), ("misc.rs", "")]);
    assert_eq!(
        check_graph(&g),
        vec!["module misc is in no layer; add its folder to LAYERS in xtask/src/lint/rules.rs"]
    );
}

#[test]
fn long_files_are_named() {
    let long = "x\n".repeat(601);
    let ok = "x\n".repeat(600);
    assert_eq!(
        check_lengths(&[("a.rs".into(), long), ("b.rs".into(), ok)]),
        vec!["too long: a.rs has 601 lines; at most 600, split it by concern"]
    );
}

#[test]
fn error_enums_need_docs_and_no_anyhow() {
    let files = vec![(
        "model/mod.rs".to_string(),
        "/// Errors.\n#[derive(Debug, thiserror::Error)]\npub enum E {\n\
         /// Documented.\n#[error(\"a\")] A,\n#[error(\"b\")] B(u8),\n}\n\
         fn f() -> anyhow::Result<()> { Ok(()) }"
            .to_string(),
    )];
    assert_eq!(
        check_sources(&parse(&files).unwrap()),
        vec![
            "error docs: model/mod.rs: variant E::B has no doc comment",
            "anyhow: model/mod.rs uses anyhow; library code returns its layer's thiserror enum",
        ]
    );
}

#[test]
fn folders_say_what_they_own() {
    let files: Vec<(String, String)> = vec![
        (
            "sys/mod.rs".into(),
            "//! Helpers.\n//!\n//! Owns: netlink. Must not touch: the model.\npub mod netlink;"
                .into(),
        ),
        (
            "model/mod.rs".into(),
            "//! Plain data.\npub mod peer;".into(),
        ),
        ("model/peer.rs".into(), "//! A peer.".into()),
    ];
    assert_eq!(
        check_folder_docs(&parse(&files).unwrap()),
        vec!["folder docs: model/mod.rs needs a //! doc comment saying what the folder owns (\"Owns: ...\") and what it must not touch (\"Must not touch: ...\")"]
    );
}

#[test]
fn one_error_enum_per_layer() {
    let e =
        |name: &str| format!("/// E.\n#[derive(Debug, thiserror::Error)]\npub enum {name} {{}}\n");
    let files: Vec<(String, String)> = vec![
        ("sys/netlink.rs".into(), e("NetlinkError")),
        ("sys/netns.rs".into(), e("NetnsError")),
        ("agent/error.rs".into(), e("AgentError")),
        ("sources/mod.rs".into(), e("SourceError")),
        ("sources/api/wire.rs".into(), e("ApiError")),
        ("sources/attach.rs".into(), e("AttachError")),
    ];
    assert_eq!(
        check_error_enums(&parse(&files).unwrap()),
        vec!["errors: sys has 2 error enums (NetlinkError in sys/netlink.rs, NetnsError in sys/netns.rs); one thiserror enum per layer (per source in sources)"]
    );
}
