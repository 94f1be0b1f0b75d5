//! `cargo xtask soak [--quick] [--agents N] [--secs S]`: issue 15's soak, on SQLite and on
//! PostgreSQL (fsync on), with the release binaries.
//!
//! For each store: `N` external workspaces (100,000; `--quick` 10,000) are created and
//! registered. Then two runs of `S` seconds (300; `--quick` 30) of the same foreground load —
//! 10 creates/s and 500 `GET /workspaces/{id}`/s, both paced (open loop) — first alone (quiet),
//! then while every agent heartbeats once per 30 s (N/30 per second, paced, up to 256 in
//! flight). Reported: the heartbeats' rate, p50 and p99 and errors; create and get p99 loaded
//! against quiet (goal: within 20%); the server's CPU share and resident memory (now and peak;
//! goal < 300 MiB) and the database's growth over the loaded run. Last, 10,000 agents each on its
//! own keep-alive connection heartbeat flat out (closed loop, 10,000 in flight): errors and the
//! server's peak memory.
//!
//! Figures are reported, never asserted; the task fails when a store's run broke (the server
//! exited, a phase could not run) or any request failed, so the test command's short form
//! (`--quick --secs 20`) checks the server holds the load without an error.

use std::{
    fs,
    process::{Command, ExitCode},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use super::{
    ADMIN_TOKEN, Bench, Db, Sizes, Store, last_measure,
    procs::{Background, Server, TempDir},
    raised_nofile,
    report::Measure,
};
use crate::{
    cluster::{Cluster, Durability},
    process::{cargo, path_str, run_captured, run_echoed},
    workspace_root,
};

/// Creates per second in the foreground load.
const CREATE_RATE: u64 = 10;
/// Reads per second in the foreground load.
const GET_RATE: u64 = 500;
/// Agents on their own connections in the connection scenario.
const CONNECTIONS: usize = 10_000;
/// Resident-memory goal, MiB.
const RSS_GOAL_MIB: f64 = 300.0;

/// The soak's size.
struct Soak {
    agents: usize,
    secs: u64,
}

/// What one store's soak measured.
#[derive(Default)]
struct Outcome {
    name: String,
    heartbeats: Option<Measure>,
    beat_rate_wanted: f64,
    creates: Option<(Measure, Measure)>,
    gets: Option<(Measure, Measure)>,
    cpu_share: Option<f64>,
    rss_mib: Option<(f64, f64)>,
    db_growth_mib: Option<f64>,
    connections: Option<(Measure, f64)>,
    failure: Option<String>,
}

/// Runs the task.
pub fn run(args: &[String]) -> Result<ExitCode> {
    let mut quick = false;
    let mut agents = None;
    let mut secs = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--agents" => agents = Some(it.next().context("--agents needs a number")?.parse()?),
            "--secs" => secs = Some(it.next().context("--secs needs a number")?.parse()?),
            other => {
                bail!("`cargo xtask soak` takes --quick, --agents N and --secs S, got {other:?}")
            }
        }
    }
    let soak = Soak {
        agents: agents.unwrap_or(if quick { 10_000 } else { 100_000 }),
        secs: secs.unwrap_or(if quick { 30 } else { 300 }),
    };
    ensure!(
        soak.agents >= 30 && soak.secs >= 5,
        "a soak needs at least 30 agents and 5 s"
    );
    let root = workspace_root();
    let mut build = cargo();
    build.args(["build", "--release", "-p", "berth", "-p", "berth-loadgen"]);
    ensure!(
        run_echoed(&mut build)?.success(),
        "building the release binaries failed"
    );
    let out_dir = root.join("target").join("bench");
    fs::create_dir_all(&out_dir)?;
    let bench = Bench {
        berth: root.join("target/release/berth"),
        loadgen: root.join("target/release/berth-loadgen"),
        sizes: Sizes::new(quick),
        scratch: TempDir::create(out_dir.join(format!("soak-{}", std::process::id())))?,
        // A socket per agent of the connection scenario, in berth and in the load generator.
        nofile: raised_nofile(CONNECTIONS as u64 + 2048),
        only: None,
        docker_installations: Default::default(),
        root,
    };
    let mut outcomes = vec![bench.soak_store("SQLite", &Store::Sqlite, &soak)];
    match Cluster::start_with(&bench.root, Durability::Production) {
        Ok(cluster) => {
            outcomes.push(bench.soak_store(
                "PostgreSQL (fsync on)",
                &Store::Postgres(&cluster),
                &soak,
            ));
            if let Err(err) = cluster.stop() {
                eprintln!("xtask: error: {err:#}");
            }
        }
        Err(err) => outcomes.push(Outcome {
            name: "PostgreSQL".into(),
            failure: Some(format!("could not start PostgreSQL: {err:#}")),
            ..Outcome::default()
        }),
    }
    let date = run_captured(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .map(|d| d.trim().to_owned())
        .unwrap_or_default();
    let text = markdown(&soak, &date, &super::machine(), &outcomes);
    fs::write(out_dir.join("soak.md"), &text)?;
    println!("{text}");
    let broken = outcomes
        .iter()
        .any(|o| o.failure.is_some() || o.errors() > 0);
    Ok(if broken {
        eprintln!("xtask: soak: a store's run failed or a request failed (see the report)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

impl Outcome {
    /// Failed requests across every measured load.
    fn errors(&self) -> u64 {
        let pair =
            |p: &Option<(Measure, Measure)>| p.as_ref().map_or(0, |(a, b)| a.errors + b.errors);
        self.heartbeats.as_ref().map_or(0, |m| m.errors)
            + pair(&self.creates)
            + pair(&self.gets)
            + self.connections.as_ref().map_or(0, |(m, _)| m.errors)
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("malformed /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command: state is field 3, utime 14, stime 15 (1-based over the whole line).
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields
            .get(i - 3)
            .context("short /proc stat")?
            .parse::<f64>()?)
    };
    let hz = run_captured(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .unwrap_or(100.0);
    Ok((ticks(14)? + ticks(15)?) / hz)
}

impl Bench {
    /// The database's size on disk, MiB.
    fn db_size_mib(&self, store: &Store<'_>, db: &Db) -> Result<f64> {
        match store {
            Store::Sqlite => {
                let mut bytes = 0u64;
                for suffix in ["", "-wal", "-shm"] {
                    let path = db.data_dir.join(format!("berth.db{suffix}"));
                    bytes += fs::metadata(&path).map_or(0, |m| m.len());
                }
                Ok(bytes as f64 / 1024.0 / 1024.0)
            }
            Store::Postgres(cluster) => {
                let out = self.psql(
                    cluster,
                    &db.name,
                    "SELECT pg_database_size(current_database())",
                )?;
                let bytes: f64 = out
                    .lines()
                    .last()
                    .and_then(|l| l.trim().parse().ok())
                    .context("reading pg_database_size")?;
                Ok(bytes / 1024.0 / 1024.0)
            }
        }
    }

    /// One store's soak; a failure ends it and is recorded.
    fn soak_store(&self, name: &str, store: &Store<'_>, soak: &Soak) -> Outcome {
        eprintln!("xtask: soak: === {name} ===");
        let mut outcome = Outcome {
            name: name.to_owned(),
            beat_rate_wanted: soak.agents as f64 / 30.0,
            ..Outcome::default()
        };
        if let Err(err) = self.soak_phases(store, soak, &mut outcome) {
            eprintln!("xtask: soak: {name} failed: {err:#}");
            outcome.failure = Some(format!("{err:#}"));
        }
        outcome
    }

    /// A paced foreground load started in the background: creates or gets for `secs`.
    fn foreground(
        &self,
        server: &Server,
        kind: &str,
        tag: &str,
        get_url: &str,
        secs: u64,
    ) -> Result<Background> {
        let log = self.scratch.path().join(format!("{kind}-{tag}.log"));
        let mut cmd = self.command(&self.loadgen);
        let (mode, rate) = match kind {
            "create" => ("create", CREATE_RATE),
            _ => ("get", GET_RATE),
        };
        cmd.arg(mode)
            .args(["--count", &(rate * secs).to_string()])
            .args(["--rate", &rate.to_string()])
            .args(["--concurrency", if mode == "create" { "4" } else { "32" }])
            .args(["--max-secs", &(secs + 5).to_string()])
            .args(["--token", ADMIN_TOKEN]);
        if mode == "create" {
            cmd.args(["--base", &server.base])
                .args(["--prefix", &format!("soak-{tag}")]);
        } else {
            cmd.args(["--url", get_url]);
        }
        Background::spawn(cmd, &log)
    }

    /// Waits for a background load and reads its result line.
    fn finish(&self, mut load: Background, kind: &str, tag: &str, secs: u64) -> Result<Measure> {
        load.wait(Duration::from_secs(secs + 120))?;
        let log = self.scratch.path().join(format!("{kind}-{tag}.log"));
        let m = last_measure(&log).with_context(|| format!("the {kind} load ({tag})"))?;
        if let Some(err) = &m.first_error {
            eprintln!(
                "xtask: soak:   {kind} ({tag}): {} errors, the first: {err}",
                m.errors
            );
        }
        Ok(m)
    }

    fn soak_phases(&self, store: &Store<'_>, soak: &Soak, outcome: &mut Outcome) -> Result<()> {
        let db = self.fresh_db(store, "soak")?;
        // The sweeps run at berth's default interval, so their cost over every row is part of
        // the figures (the bench's servers sweep hourly); agents never go stale (the quiet run
        // has no heartbeats).
        let mut server = self.serve_with(&db, "none", &["--sweep-interval-secs", "15"])?;
        let agents = self.scratch.path().join("soak-agents.txt");
        let fill_secs = (soak.agents as u64 / 50).max(60);
        let made = self.loadgen(
            &format!("creating {} external workspaces", soak.agents),
            "create",
            &[
                ("base", server.base.clone()),
                ("token", ADMIN_TOKEN.into()),
                ("count", soak.agents.to_string()),
                ("concurrency", "32".into()),
                ("prefix", "agent".into()),
                ("out", path_str(&agents)?.to_owned()),
                ("max-secs", fill_secs.to_string()),
            ],
        )?;
        ensure!(
            made.count as usize == soak.agents,
            "created {} of {} workspaces ({} errors: {})",
            made.count,
            soak.agents,
            made.errors,
            made.first_error.unwrap_or_default()
        );
        let registered = self.loadgen(
            "registering every agent (poll mode)",
            "register",
            &[
                ("base", server.base.clone()),
                ("agents", path_str(&agents)?.to_owned()),
                ("concurrency", "32".into()),
                ("max-secs", fill_secs.to_string()),
            ],
        )?;
        ensure!(
            registered.errors == 0 && registered.count as usize == soak.agents,
            "registering failed: {}",
            registered.first_error.unwrap_or_default()
        );
        let first_id = fs::read_to_string(&agents)?
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().next().map(str::to_owned))
            .context("no agent written")?;
        let get_url = format!("{}/workspaces/{first_id}", server.base);
        let secs = soak.secs;

        eprintln!(
            "xtask: soak: quiet run: {CREATE_RATE} creates/s and {GET_RATE} gets/s for {secs} s"
        );
        let creates = self.foreground(&server, "create", "quiet", &get_url, secs)?;
        let gets = self.foreground(&server, "get", "quiet", &get_url, secs)?;
        let quiet_create = self.finish(creates, "create", "quiet", secs)?;
        let quiet_get = self.finish(gets, "get", "quiet", secs)?;
        server.ensure_running()?;

        let rate = soak.agents as f64 / 30.0;
        let beat_secs = secs + 4;
        let beat_log = self.scratch.path().join("soak-heartbeats.log");
        let mut cmd = self.command(&self.loadgen);
        cmd.arg("heartbeat")
            .args(["--base", &server.base])
            .arg("--agents")
            .arg(&agents)
            .args([
                "--count",
                &((rate * beat_secs as f64).ceil() as u64).to_string(),
            ])
            .args(["--concurrency", "256"])
            .args(["--rate", &format!("{rate}")])
            .args(["--max-secs", &beat_secs.to_string()]);
        eprintln!(
            "xtask: soak: loaded run: {rate:.0} heartbeats/s for {beat_secs} s, the same creates and gets"
        );
        let size_before = self.db_size_mib(store, &db)?;
        let cpu_before = cpu_seconds(server.pid())?;
        let started = Instant::now();
        let beats = Background::spawn(cmd, &beat_log)?;
        sleep(Duration::from_secs(2));
        let creates = self.foreground(&server, "create", "loaded", &get_url, secs)?;
        let gets = self.foreground(&server, "get", "loaded", &get_url, secs)?;
        let loaded_create = self.finish(creates, "create", "loaded", secs)?;
        let loaded_get = self.finish(gets, "get", "loaded", secs)?;
        let mut beats = beats;
        beats.wait(Duration::from_secs(beat_secs + 120))?;
        let cpu = cpu_seconds(server.pid())? - cpu_before;
        let wall = started.elapsed().as_secs_f64();
        server.ensure_running()?;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        outcome.cpu_share = Some(cpu / wall / cores);
        outcome.rss_mib = Some((
            server.rss_kib()? as f64 / 1024.0,
            server.peak_rss_kib()? as f64 / 1024.0,
        ));
        outcome.db_growth_mib = Some(self.db_size_mib(store, &db)? - size_before);
        let beat = last_measure(&beat_log).context("the heartbeats")?;
        if let Some(err) = &beat.first_error {
            eprintln!(
                "xtask: soak:   heartbeats: {} errors, the first: {err}",
                beat.errors
            );
        }
        outcome.heartbeats = Some(beat);
        outcome.creates = Some((quiet_create, loaded_create));
        outcome.gets = Some((quiet_get, loaded_get));

        let conns = CONNECTIONS.min(soak.agents);
        let measure = self.loadgen(
            &format!("{conns} agents on their own connections, closed loop"),
            "heartbeat",
            &[
                ("base", server.base.clone()),
                ("agents", path_str(&agents)?.to_owned()),
                ("count", (conns * 3).to_string()),
                ("concurrency", conns.to_string()),
                ("max-secs", "120".into()),
            ],
        )?;
        server.ensure_running()?;
        outcome.connections = Some((measure, server.peak_rss_kib()? as f64 / 1024.0));
        Ok(())
    }
}

fn markdown(soak: &Soak, date: &str, machine: &str, outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "# berth soak ({} agents, {} s per run)\n\n{date}; {machine}.\n\n",
        soak.agents, soak.secs
    );
    for o in outcomes {
        out.push_str(&format!("## {}\n\n", o.name));
        if let Some(f) = &o.failure {
            out.push_str(&format!("**Failed:** {f}\n\n"));
        }
        out.push_str("| figure | value | goal |\n|---|---|---|\n");
        if let Some(h) = &o.heartbeats {
            out.push_str(&format!(
                "| heartbeats/s (wanted {:.0}) | {:.0} | {:.0} |\n| heartbeat p50 / p99 | {:.2} / {:.2} ms | — |\n| heartbeat errors | {} | 0 |\n",
                o.beat_rate_wanted, h.throughput, o.beat_rate_wanted, h.p50_ms, h.p99_ms, h.errors
            ));
        }
        for (label, pair) in [("create", &o.creates), ("get", &o.gets)] {
            if let Some((quiet, loaded)) = pair {
                let r = if quiet.p99_ms > 0.0 {
                    loaded.p99_ms / quiet.p99_ms
                } else {
                    0.0
                };
                out.push_str(&format!(
                    "| {label} p99, loaded ÷ quiet | {:.2} ms ÷ {:.2} ms = {r:.2} ({:.0}/s achieved; {} + {} errors) | ≤ 1.2 |\n",
                    loaded.p99_ms, quiet.p99_ms, loaded.throughput, quiet.errors, loaded.errors
                ));
            }
        }
        if let Some(c) = o.cpu_share {
            out.push_str(&format!(
                "| server CPU share, loaded run | {:.0}% of all cores | — |\n",
                c * 100.0
            ));
        }
        if let Some((now, peak)) = o.rss_mib {
            out.push_str(&format!("| resident memory now / peak | {now:.0} / {peak:.0} MiB | < {RSS_GOAL_MIB:.0} MiB |\n"));
        }
        if let Some(g) = o.db_growth_mib {
            out.push_str(&format!(
                "| database growth, loaded run | {g:.1} MiB | — |\n"
            ));
        }
        if let Some((m, peak)) = &o.connections {
            out.push_str(&format!(
                "| {CONNECTIONS} connections at once: heartbeats/s, p99, errors, peak memory | {:.0}/s, {:.0} ms, {}, {peak:.0} MiB | 0 errors, < {RSS_GOAL_MIB:.0} MiB |\n",
                m.throughput, m.p99_ms, m.errors
            ));
        }
        out.push('\n');
    }
    out
}
