//! berth-client against a real berth: the HTTP router served in-process on a loopback port, over
//! SQLite and PostgreSQL (`BERTH_TEST_PG_URL`, an admin URL; `cargo xtask test` or `cargo xtask
//! pg` provides one), with the process backend running the reference agent (`berth-agent`) for
//! workspaces that must come online.

mod errors;
mod events;
mod harness;
mod inside;
mod lifecycle;
mod resources;
mod routes;
mod workspaces;

/// Not a test of the client: the agent processes the test servers start run this test binary
/// with `--exact agent_process` (see `harness::agent_command`), and this function then runs the
/// reference agent (`berth_agent::run_from_env`) from the environment the process backend
/// prepared, until the backend stops it. In a normal test run it checks that it is not such a
/// process and returns.
#[test]
fn agent_process() {
    if !harness::is_agent_process() {
        assert!(std::env::var_os("BERTH_AGENT_PARENT_PID").is_none());
        return;
    }
    berth_agent::init_tracing();
    berth_agent::install_tls_provider();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    if let Err(e) = runtime.block_on(berth_agent::run_from_env()) {
        eprintln!("berth-agent: {e:#}");
        std::process::exit(1);
    }
}
