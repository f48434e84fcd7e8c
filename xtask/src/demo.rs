use std::path::Path; pub fn run(_bins: &Path) -> anyhow::Result<()> { anyhow::bail!("demo not written yet") }
