//! The `cargo xtask` tasks, one module each; each exposes
//! `pub fn run(args: &[String]) -> anyhow::Result<std::process::ExitCode>` and has a row in
//! `TASKS` in `main.rs`.

pub mod bench;
pub mod chaos;
pub mod ci;
pub mod image;
pub mod openapi;
pub mod pg;
pub mod test;
