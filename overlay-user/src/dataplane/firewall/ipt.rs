//! Running the `iptables` command and reading its answers.

use crate::dataplane::DataplaneError;

pub(super) fn ipt_err(
    what: impl Into<String>,
) -> impl FnOnce(Box<dyn std::error::Error>) -> DataplaneError {
    let what = what.into();
    move |e| DataplaneError::Iptables {
        what,
        reason: e.to_string(),
    }
}

pub(super) fn iptables() -> Result<iptables::IPTables, DataplaneError> {
    iptables::new(false).map_err(ipt_err("starting"))
}

/// The rules of `chain` in `table`, without the `-A CHAIN ` prefix.
pub(super) fn chain_rules(
    ipt: &iptables::IPTables,
    table: &str,
    chain: &str,
) -> Result<Vec<String>, DataplaneError> {
    let prefix = format!("-A {chain} ");
    Ok(ipt
        .list(table, chain)
        .map_err(ipt_err(format!("-t {table} -S {chain}")))?
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect())
}
