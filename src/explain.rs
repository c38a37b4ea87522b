//! explain
pub fn run(_: &crate::cli::ExplainArgs) -> anyhow::Result<String> {
    Ok(String::new())
}
