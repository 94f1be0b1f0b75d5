//! The `berth-agent` binary: runs the reference agent from its environment (see the library docs).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    berth_agent::init_tracing();
    berth_agent::run_from_env().await
}
