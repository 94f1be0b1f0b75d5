//! The `cargo xtask` tasks, one module each; each exposes
//! `pub fn run(args: &[String]) -> anyhow::Result<std::process::ExitCode>` and has a row in
//! `TASKS` in `main.rs`.

pub mod ci;
pub mod pg;
pub mod test;
