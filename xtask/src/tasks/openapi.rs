//! `cargo xtask openapi [--check]`: writes the OpenAPI document of berth's router to the
//! committed `openapi.json`, or (with `--check`) fails when the committed file differs from the
//! generated one, so a change to a route or a wire type cannot land without its document.
//!
//! The document is generated from the code (berth-http's `#[utoipa::path]` annotations and the
//! berth-api types); this task runs berth-http's `openapi` example, which prints it, instead of
//! depending on berth-http: xtask stays `std` + `anyhow` and builds in seconds.

use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::process::{cargo, run_captured};
use crate::workspace_root;

/// The committed document, relative to the workspace root.
const FILE: &str = "openapi.json";

/// Runs the task: `[]` writes the file, `["--check"]` compares.
pub fn run(args: &[String]) -> Result<ExitCode> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => bail!("usage: cargo xtask openapi [--check], got {args:?}"),
    };
    if check {
        return Ok(if self::check()? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let path = workspace_root().join(FILE);
    std::fs::write(&path, generate()?).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Whether the committed document is the generated one (says what to do when it is not).
pub fn check() -> Result<bool> {
    let generated = generate()?;
    let path = workspace_root().join(FILE);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed == generated {
        eprintln!("xtask: {FILE} is up to date");
        return Ok(true);
    }
    eprintln!(
        "xtask: {FILE} differs from the document the code generates (a route, an annotation or a \
         berth-api type changed): run `cargo xtask openapi` and commit {FILE}"
    );
    Ok(false)
}

/// The document the code generates.
fn generate() -> Result<String> {
    let mut example = cargo();
    example.args(["run", "--quiet", "-p", "berth-http", "--example", "openapi"]);
    run_captured(&mut example)
}
