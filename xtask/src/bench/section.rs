//! The generated sections of docs/benchmarks.md: the default run's and the
//! NIC-like run's, each between its own markers, replaced in place.

use std::path::Path;

use anyhow::Result;

/// The markers around a generated section of docs/benchmarks.md: the
/// default run's, or the NIC-like run's (a section of its own, so that
/// both runs stay recorded).
fn markers(nic_like: bool) -> (&'static str, &'static str) {
    if nic_like {
        (
            "<!-- cargo xtask bench --nic-like: start (generated, do not edit) -->",
            "<!-- cargo xtask bench --nic-like: end -->",
        )
    } else {
        (
            "<!-- cargo xtask bench: start (generated, do not edit) -->",
            "<!-- cargo xtask bench: end -->",
        )
    }
}

/// Replaces the generated part of docs/benchmarks.md, keeping other sections.
pub(super) fn write_section(path: &Path, nic_like: bool, body: &str) -> Result<()> {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    std::fs::write(path, replace_section(&old, nic_like, body))?;
    Ok(())
}

/// `old` with the generated section replaced by `body` (a new NIC-like
/// section goes right after the default one, a new default one after the
/// title).
fn replace_section(old: &str, nic_like: bool, body: &str) -> String {
    let (start, end) = markers(nic_like);
    let section = format!("{start}\n{body}\n{end}");
    match (old.find(start), old.find(end)) {
        (Some(a), Some(b)) if b > a => format!("{}{}{}", &old[..a], section, &old[b + end.len()..]),
        _ => {
            let (_, default_end) = markers(false);
            match old.find(default_end).filter(|_| nic_like) {
                Some(b) => {
                    let at = b + default_end.len();
                    format!("{}\n\n{section}{}", &old[..at], &old[at..])
                }
                None => {
                    let mut lines = old.splitn(2, '\n');
                    let head = lines.next().unwrap_or("# Benchmarks");
                    let rest = lines.next().unwrap_or("");
                    format!("{head}\n\n{section}\n{rest}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place() {
        let doc = "# Benchmarks\n\nintro\n";
        let one = replace_section(doc, false, "A");
        assert_eq!(
            one,
            "# Benchmarks\n\n<!-- cargo xtask bench: start (generated, do not edit) -->\nA\n<!-- cargo xtask bench: end -->\n\nintro\n"
        );
        // The NIC-like section goes after the default one, and each is
        // replaced on its own.
        let two = replace_section(&one, true, "N");
        assert!(two.contains(
            "<!-- cargo xtask bench: end -->\n\n<!-- cargo xtask bench --nic-like: start (generated, do not edit) -->\nN\n<!-- cargo xtask bench --nic-like: end -->\n\nintro\n"
        ), "{two}");
        let three = replace_section(&two, false, "B");
        assert!(three
            .contains("start (generated, do not edit) -->\nB\n<!-- cargo xtask bench: end -->"));
        assert!(three.contains("-->\nN\n<!--"));
        assert!(!three.contains("\nA\n"));
        let four = replace_section(&three, true, "M");
        assert!(four.contains("-->\nM\n<!--") && four.contains("-->\nB\n<!--"));
        assert!(four.ends_with("\n\nintro\n"));
    }
}
