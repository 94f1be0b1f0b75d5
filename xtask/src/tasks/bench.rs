//! `cargo xtask bench [--quick]`: berth's benchmarks (issue 8), every figure next to a baseline
//! measured in the same run.
//!
//! Builds release binaries of `berth` and `berth-loadgen`, then for each store, SQLite (a fresh
//! data directory) and PostgreSQL (a throwaway cluster with fsync on, as in production), starts
//! `target/release/berth serve` on a free loopback port and drives it with `berth-loadgen`
//! subprocesses. Scenarios and their baselines:
//!
//! | scenario | baseline |
//! |---|---|
//! | `POST /workspaces` (external) at concurrency 1 and 32 | the create's SQL: `pgbench` script / sqlx loop |
//! | `GET /workspaces/{id}` | an axum route with a fixed body of the same size |
//! | `GET /workspaces` with 100, 1,000, 10,000 rows | the list SELECT: `psql` into /dev/null / sqlx |
//! | `POST /registry/heartbeat`, 1,000 and 10,000 agents, c=32 and c=256 | the per-heartbeat SQL (`pgbench` / sqlx), and the batched SQL at berth's mean batch size |
//! | create p99 while 10,000 agents beat every 30 s | the same creates without the beats |
//! | create → `online`, process provisioner | `berth agent` started by hand, to its first register |
//! | event fan-out: 1,000 `/ws` subscribers, 20 events/s | an axum WebSocket route fed by a bare `tokio::sync::broadcast`, same frame size |
//! | resident memory, idle and with 10,000 workspaces | — |
//!
//! `--quick` runs fewer requests, list sizes 100 and 1,000 and 1,000 agents. Each store runs in
//! four phases on fresh databases (create/get; list/heartbeat/memory; event fan-out; create →
//! online), so the row counts a scenario sees do not depend on the others. Targets are reported, never asserted:
//! the task exits 0 unless something crashed. Output: `target/bench/report.md` (also printed) and
//! `target/bench/report.json`. Every process started here has a guard that ends it; scratch
//! files live in `target/bench/tmp-<pid>` and are removed at the end.

mod procs;
mod report;
mod soak;
mod sql;

pub use soak::run as soak;

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitCode},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};

use self::{
    procs::{Background, Server, TempDir, free_port, run_bounded},
    report::{Header, Measure, Memory, Row, StoreReport, Target},
};
use crate::{
    cluster::{Cluster, Durability},
    process::{cargo, path_str, run_captured, run_echoed},
    workspace_root,
};

/// The admin bearer of the bench servers (loopback only, thrown away with them).
const ADMIN_TOKEN: &str = "bench-admin-token";

/// Creates per second in the create-under-heartbeat-load scenario.
const CREATE_RATE: u64 = 20;

/// WebSocket subscribers of the event fan-out scenario (issue 6).
const FANOUT_SUBSCRIBERS: usize = 1000;
/// Events per second produced in the fan-out scenario.
const FANOUT_RATE: u64 = 20;

/// The phases `--only` can pick: creates and gets; lists and heartbeats; event fan-out;
/// create → online (cold, warm pools, bursts, on the process and Docker backends).
const PHASES: [&str; 4] = ["create", "heartbeat", "fanout", "online"];

/// How much each scenario does.
struct Sizes {
    mode: &'static str,
    create_c1: usize,
    create_c32: usize,
    get_one: usize,
    list_sizes: &'static [usize],
    agent_sizes: &'static [usize],
    heartbeats: usize,
    /// Seconds of paced creates timed with, and without, the background heartbeats.
    load_secs: u64,
    online: usize,
    /// Seconds of events produced in the fan-out scenario.
    fanout_secs: u64,
    /// Time bound of each load run.
    max_secs: u64,
}

impl Sizes {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                mode: "quick",
                create_c1: 200,
                create_c32: 1000,
                get_one: 5000,
                list_sizes: &[100, 1000],
                agent_sizes: &[1000],
                heartbeats: 5000,
                load_secs: 10,
                online: 10,
                fanout_secs: 5,
                max_secs: 60,
            }
        } else {
            Self {
                mode: "full",
                create_c1: 1000,
                create_c32: 5000,
                get_one: 20000,
                list_sizes: &[100, 1000, 10000],
                agent_sizes: &[1000, 10000],
                heartbeats: 20000,
                load_secs: 30,
                online: 30,
                fanout_secs: 15,
                max_secs: 120,
            }
        }
    }

    /// Sequential list requests at `size` rows: enough for a p99, bounded for 10,000 rows.
    fn list_requests(&self, size: usize) -> usize {
        let quick = self.mode == "quick";
        if size <= 100 {
            300
        } else if size <= 1000 {
            if quick { 50 } else { 100 }
        } else if quick {
            10
        } else {
            20
        }
    }
}

/// The store a phase runs against.
enum Store<'a> {
    Sqlite,
    Postgres(&'a Cluster),
}

/// One phase's database: a data directory, and for PostgreSQL a database of its own.
struct Db {
    data_dir: PathBuf,
    /// `postgres://…` for PostgreSQL.
    url: Option<String>,
    /// The PostgreSQL database name.
    name: String,
}

impl Db {
    /// berth's SQLite file.
    fn sqlite_file(&self) -> PathBuf {
        self.data_dir.join("berth.db")
    }
}

/// What a run has: binaries, sizes, scratch space.
struct Bench {
    root: PathBuf,
    berth: PathBuf,
    loadgen: PathBuf,
    sizes: Sizes,
    scratch: TempDir,
    /// The open-file limit berth and the loadgen are started with, when this process's soft
    /// limit is too low for the fan-out scenario's sockets.
    nofile: Option<u64>,
    /// `--only PHASE`: the one phase to run (all when `None`).
    only: Option<String>,
    /// The installation ids of the berths this run started on Docker: the only containers and
    /// volumes its cleanup removes (others on the same daemon are left alone).
    docker_installations: std::sync::Mutex<Vec<String>>,
}

/// Runs the task; `args` may be `--quick` and `--only PHASE` (one of [`PHASES`]).
pub fn run(args: &[String]) -> Result<ExitCode> {
    let mut quick = false;
    let mut only = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--only" => {
                let phase = rest.next().context("--only needs a phase")?;
                ensure!(
                    PHASES.contains(&phase.as_str()),
                    "--only takes one of {PHASES:?}, got {phase:?}"
                );
                only = Some(phase.clone());
            }
            _ => bail!("`cargo xtask bench` takes `--quick` and `--only PHASE`, got {args:?}"),
        }
    }
    let root = workspace_root();
    let mut build = cargo();
    build.args(["build", "--release", "-p", "berth", "-p", "berth-loadgen"]);
    let status = run_echoed(&mut build)?;
    ensure!(status.success(), "building the release binaries failed");

    let out_dir = root.join("target").join("bench");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let bench = Bench {
        berth: root.join("target/release/berth"),
        loadgen: root.join("target/release/berth-loadgen"),
        sizes: Sizes::new(quick),
        only,
        docker_installations: Default::default(),
        scratch: TempDir::create(out_dir.join(format!("tmp-{}", std::process::id())))?,
        nofile: raised_nofile(NOFILE_NEEDED),
        root,
    };

    let mut stores = Vec::new();
    stores.push(bench.store_run("SQLite (WAL, synchronous=NORMAL)", &Store::Sqlite));
    match Cluster::start_with(&bench.root, Durability::Production) {
        Ok(cluster) => {
            let version = run_captured(Command::new(cluster.program("postgres")?).arg("--version"))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default();
            let name = format!("PostgreSQL (fsync on; {version})");
            stores.push(bench.store_run(&name, &Store::Postgres(&cluster)));
            if let Err(err) = cluster.stop() {
                eprintln!("xtask: error: {err:#}");
            }
        }
        Err(err) => stores.push(StoreReport {
            name: "PostgreSQL".into(),
            failure: Some(format!("could not start PostgreSQL: {err:#}")),
            ..StoreReport::default()
        }),
    }

    let header = Header {
        mode: bench.sizes.mode,
        machine: machine(),
        date: run_captured(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
            .map(|d| d.trim().to_owned())
            .unwrap_or_default(),
    };
    let markdown = report::markdown(&header, &stores);
    fs::write(out_dir.join("report.md"), &markdown)?;
    fs::write(out_dir.join("report.json"), report::json(&header, &stores))?;
    println!("{markdown}");
    eprintln!(
        "xtask: wrote {} and report.json",
        out_dir.join("report.md").display()
    );
    let crashed = stores.iter().any(|s| s.failure.is_some());
    Ok(if crashed {
        eprintln!("xtask: bench incomplete: a store's run failed (see the report)");
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// CPU model, cores, memory and kernel, for the report header.
fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    let kernel = run_captured(Command::new("uname").args(["-sr"]))
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, {mem_gib:.0} GiB RAM, {kernel}")
}

/// Open files the fan-out scenario needs in one process: a socket per subscriber, plus room for
/// database connections, log files and the rest.
const NOFILE_NEEDED: u64 = FANOUT_SUBSCRIBERS as u64 + 1024;

/// The open-file limit to start children with when the soft limit (from `/proc/self/limits`) is
/// below `needed`: the hard limit, at most 4 × that. `None` when no raise is needed (or the
/// limits cannot be read, in which case the run reports its connect errors).
fn raised_nofile(needed: u64) -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let mut nums = line.split_whitespace().filter_map(|w| {
        w.parse::<u64>()
            .ok()
            .or((w == "unlimited").then_some(u64::MAX))
    });
    let (soft, hard) = (nums.next()?, nums.next()?);
    if soft >= needed {
        return None;
    }
    if hard < needed {
        eprintln!(
            "xtask: bench: the open-file hard limit ({hard}) is below the {needed} the run needs; expect connect errors"
        );
    }
    Some(hard.min(4 * needed))
}

impl Bench {
    /// A command for `program`, started through `sh -c 'ulimit -n …; exec …'` when the open-file
    /// limit must be raised (`exec` keeps the pid, so the guards and RSS readings still apply).
    fn command(&self, program: &Path) -> Command {
        match self.nofile {
            None => Command::new(program),
            Some(n) => {
                let mut cmd = Command::new("sh");
                cmd.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" \"$@\""))
                    .arg(program);
                cmd
            }
        }
    }

    /// All phases of one store; an error ends the store's run and is recorded in its report.
    fn store_run(&self, name: &str, store: &Store<'_>) -> StoreReport {
        eprintln!("xtask: bench: === {name} ===");
        let mut report = StoreReport {
            name: name.to_owned(),
            ..StoreReport::default()
        };
        let runs = |phase: &str| self.only.as_deref().is_none_or(|only| only == phase);
        let result = (|| {
            if runs("create") {
                self.phase_create_get(store, &mut report)?;
            }
            if runs("heartbeat") {
                self.phase_list_heartbeat(store, &mut report)?;
            }
            if runs("fanout") {
                self.phase_fanout(store, &mut report)?;
            }
            if runs("online") {
                self.phase_online(store, &mut report)?;
            }
            Ok::<(), anyhow::Error>(())
        })();
        if let Err(err) = result {
            eprintln!("xtask: bench: {name} failed: {err:#}");
            report.failure = Some(format!("{err:#}"));
        }
        report
    }

    /// A fresh database for phase `phase`.
    fn fresh_db(&self, store: &Store<'_>, phase: &str) -> Result<Db> {
        let data_dir = self.scratch.path().join(format!(
            "{}-{phase}",
            match store {
                Store::Sqlite => "sqlite",
                Store::Postgres(_) => "pg",
            }
        ));
        fs::create_dir_all(&data_dir)?;
        let name = format!("bench_{phase}");
        let url = match store {
            Store::Sqlite => None,
            Store::Postgres(cluster) => {
                cluster.create_database(&name)?;
                Some(cluster.database_url(&name))
            }
        };
        Ok(Db {
            data_dir,
            url,
            name,
        })
    }

    /// Starts `berth serve` on `db` with the given provisioner.
    fn serve(&self, db: &Db, provisioner: &str) -> Result<Server> {
        self.serve_with(db, provisioner, &[])
    }

    /// [`Self::serve`] with extra `berth serve` flags.
    fn serve_with(&self, db: &Db, provisioner: &str, extra: &[&str]) -> Result<Server> {
        let port = free_port()?;
        let mut cmd = self.command(&self.berth);
        cmd.current_dir(&self.root)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(&db.data_dir)
            .args(["--provisioner", provisioner])
            .arg("--templates-dir")
            .arg(self.root.join("fixtures/templates"))
            // No sweep may flip the bench's agents to `awaiting_agent` mid-run (unless `extra`
            // sets the interval: the soak sweeps at berth's default).
            .args(
                (!extra.contains(&"--sweep-interval-secs"))
                    .then_some(["--sweep-interval-secs", "3600"])
                    .into_iter()
                    .flatten(),
            )
            .args(["--remote-stale-after-secs", "3600"])
            // The rate limiter stays on, as in production, but with a budget no scenario reaches:
            // its per-request cost is part of every figure, its 429s are not.
            .args(["--rate-limit", &u32::MAX.to_string()])
            .args(extra)
            .env("BERTH_ADMIN_TOKEN", ADMIN_TOKEN)
            .env_remove("DATABASE_URL")
            .env_remove("BERTH_DEV");
        if let Some(url) = &db.url {
            cmd.env("DATABASE_URL", url);
        }
        let log = db.data_dir.join(format!("berth-{port}.log"));
        eprintln!("xtask: bench: starting berth ({provisioner} provisioner) on 127.0.0.1:{port}");
        let server = Server::start(cmd, port, log.clone())?;
        if provisioner == "docker" {
            // `store ready … installation=<id>`, logged before berth listens.
            let text = fs::read_to_string(&log).unwrap_or_default();
            let id = text
                .split("installation=")
                .nth(1)
                .map(|rest| rest.chars().take(36).collect::<String>())
                .context("berth logged no installation id")?;
            self.docker_installations
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(id);
        }
        Ok(server)
    }

    /// Removes the containers and volumes the Docker berths of this run left, by their
    /// installation label.
    fn remove_bench_containers(&self) {
        let ids = self
            .docker_installations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        for id in ids {
            let label = format!("label=berth.installation={id}");
            let script = format!(
                "docker ps -aq --filter {label} | xargs -r docker rm -f >/dev/null; docker volume ls -q --filter {label} | xargs -r docker volume rm >/dev/null"
            );
            let _ = Command::new("sh").args(["-c", &script]).status();
        }
    }

    /// Runs `berth-loadgen <mode> <args>` and reads its result line.
    fn loadgen(&self, what: &str, mode: &str, args: &[(&str, String)]) -> Result<Measure> {
        eprintln!("xtask: bench: {what}");
        let mut cmd = self.command(&self.loadgen);
        cmd.arg(mode);
        for (name, value) in args {
            cmd.arg(format!("--{name}")).arg(value);
        }
        let max_secs = match args.iter().find(|(name, _)| *name == "max-secs") {
            Some((_, secs)) => secs.parse().unwrap_or(self.sizes.max_secs),
            None => {
                cmd.arg("--max-secs").arg(self.sizes.max_secs.to_string());
                self.sizes.max_secs
            }
        };
        let timeout = Duration::from_secs(max_secs + 60);
        let stdout = run_bounded(&mut cmd, timeout, self.scratch.path())
            .with_context(|| format!("berth-loadgen ({what})"))?;
        let line = stdout.lines().last().unwrap_or_default();
        let measure = Measure::from_loadgen(line)?;
        if let Some(err) = &measure.first_error {
            eprintln!(
                "xtask: bench:   {} errors, the first: {err}",
                measure.errors
            );
        }
        Ok(measure)
    }

    /// Fills berth up to `target` external workspaces (from `have`), appending `id token`
    /// lines to `agents`; returns the new agents' file.
    fn fill(&self, server: &Server, have: usize, target: usize, agents: &Path) -> Result<PathBuf> {
        let dir = agents.parent().unwrap_or(self.scratch.path());
        let new = dir.join(format!("agents-{target}.txt"));
        let measure = self.loadgen(
            &format!("filling to {target} workspaces"),
            "create",
            &[
                ("base", server.base.clone()),
                ("token", ADMIN_TOKEN.into()),
                ("count", (target - have).to_string()),
                ("concurrency", "32".into()),
                ("prefix", format!("fill{target}")),
                ("out", path_str(&new)?.to_owned()),
            ],
        )?;
        ensure!(
            measure.count as usize == target - have,
            "filling created {} of {} workspaces ({} errors: {})",
            measure.count,
            target - have,
            measure.errors,
            measure.first_error.unwrap_or_default()
        );
        let mut all = fs::read_to_string(agents).unwrap_or_default();
        all.push_str(&fs::read_to_string(&new)?);
        fs::write(agents, all)?;
        Ok(new)
    }

    /// Phase 1: create at concurrency 1 and 32, and get one, with their baselines.
    fn phase_create_get(&self, store: &Store<'_>, report: &mut StoreReport) -> Result<()> {
        let db = self.fresh_db(store, "create")?;
        let mut server = self.serve(&db, "none")?;
        // Idle: started, migrated, nothing served yet but /health.
        sleep(Duration::from_secs(1));
        report.memory.push(Memory {
            label: "idle".into(),
            kib: server.rss_kib()?,
            target_mib: 30.0,
        });

        let first = db.data_dir.join("create-c1.txt");
        for (concurrency, count) in [(1usize, self.sizes.create_c1), (32, self.sizes.create_c32)] {
            let mut args = vec![
                ("base", server.base.clone()),
                ("token", ADMIN_TOKEN.to_owned()),
                ("count", count.to_string()),
                ("concurrency", concurrency.to_string()),
                ("prefix", format!("c{concurrency}")),
            ];
            if concurrency == 1 {
                args.push(("out", path_str(&first)?.to_owned()));
            }
            let measure = self.loadgen(
                &format!("POST /workspaces c={concurrency} ×{count}"),
                "create",
                &args,
            )?;
            server.ensure_running()?;
            let (baseline_name, baseline) = match store {
                Store::Sqlite => (
                    "sqlx loop, same SQL",
                    self.loadgen(
                        &format!("baseline: create SQL via sqlx c={concurrency}"),
                        "sqlite-create",
                        &[
                            ("db", path_str(&db.sqlite_file())?.to_owned()),
                            ("count", count.to_string()),
                            ("concurrency", concurrency.to_string()),
                            ("prefix", format!("sqlb{concurrency}")),
                        ],
                    )?,
                ),
                Store::Postgres(cluster) => (
                    "pgbench, same SQL",
                    self.pgbench(
                        cluster,
                        &db.name,
                        &format!("create-c{concurrency}"),
                        &sql::create_script(),
                        concurrency,
                        count,
                    )?,
                ),
            };
            let ratio = ratio(measure.throughput, baseline.throughput);
            let target = (concurrency == 32).then(|| Target {
                text: "ratio ≥ 0.7".into(),
                met: ratio.is_some_and(|r| r >= 0.7),
            });
            report.rows.push(Row {
                scenario: format!("POST /workspaces (external), c={concurrency}"),
                measure,
                baseline_name: baseline_name.into(),
                baseline: Some(baseline),
                ratio,
                ratio_note: None,
                target,
            });
        }

        let id = fs::read_to_string(&first)?
            .split_whitespace()
            .next()
            .map(str::to_owned)
            .context("no workspace was created")?;
        let get = |base: &str, path: &str, what: &str| {
            self.loadgen(
                what,
                "get",
                &[
                    ("url", format!("{base}{path}")),
                    ("count", self.sizes.get_one.to_string()),
                    ("concurrency", "32".into()),
                ],
            )
        };
        let measure = get(
            &server.base,
            &format!("/workspaces/{id}"),
            "GET /workspaces/{id} c=32",
        )?;
        server.ensure_running()?;
        let bytes = measure.body_bytes.unwrap_or(1000);
        let fixed_log = self.scratch.path().join("serve-fixed.log");
        let mut fixed_cmd = self.command(&self.loadgen);
        fixed_cmd.args(["serve-fixed", "--bytes", &bytes.to_string()]);
        let fixed = Background::spawn(fixed_cmd, &fixed_log)?;
        let fixed_url = wait_for_line(&fixed_log, "listening ")?;
        let baseline = get(&fixed_url, "/fixed", "baseline: fixed-body axum route c=32")?;
        drop(fixed);
        let ratio = ratio(measure.throughput, baseline.throughput);
        report.rows.push(Row {
            scenario: format!("GET /workspaces/{{id}} ({bytes} B), c=32"),
            measure,
            baseline_name: "axum fixed body, same size".into(),
            baseline: Some(baseline),
            ratio,
            ratio_note: None,
            target: Some(Target {
                text: "ratio ≥ 0.5".into(),
                met: ratio.is_some_and(|r| r >= 0.5),
            }),
        });
        drop(server);
        Ok(())
    }

    /// Phase 2: list at each size, register and heartbeat the agents, memory with many rows,
    /// and create latency under the agents' steady heartbeat load.
    fn phase_list_heartbeat(&self, store: &Store<'_>, report: &mut StoreReport) -> Result<()> {
        let db = self.fresh_db(store, "list")?;
        let mut server = self.serve(&db, "none")?;
        // Per phase (in its data directory): tokens of one store are no good in the other.
        let agents = db.data_dir.join("agents-all.txt");
        let mut sizes: Vec<usize> = self
            .sizes
            .list_sizes
            .iter()
            .chain(self.sizes.agent_sizes)
            .copied()
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        let mut have = 0;
        let mut unregistered: Vec<PathBuf> = Vec::new();
        for &size in &sizes {
            unregistered.push(self.fill(&server, have, size, &agents)?);
            have = size;
            server.ensure_running()?;

            if self.sizes.list_sizes.contains(&size) {
                let requests = self.sizes.list_requests(size);
                let measure = self.loadgen(
                    &format!("GET /workspaces with {size} rows ×{requests}"),
                    "get",
                    &[
                        ("url", format!("{}/workspaces", server.base)),
                        ("token", ADMIN_TOKEN.into()),
                        ("count", requests.to_string()),
                        ("concurrency", "1".into()),
                    ],
                )?;
                let (name, baseline) = match store {
                    Store::Sqlite => (
                        "sqlx, same SELECT",
                        self.loadgen(
                            "baseline: list SELECT via sqlx",
                            "sqlite-list",
                            &[
                                ("db", path_str(&db.sqlite_file())?.to_owned()),
                                ("count", requests.to_string()),
                            ],
                        )?,
                    ),
                    Store::Postgres(cluster) => (
                        "psql > /dev/null, same SELECT",
                        self.psql_timed(cluster, &db.name, sql::LIST, requests)?,
                    ),
                };
                let time_ratio = ratio(measure.p50_ms, baseline.p50_ms);
                report.rows.push(Row {
                    scenario: format!("GET /workspaces, {size} rows, c=1"),
                    ratio: ratio(measure.throughput, baseline.throughput),
                    ratio_note: None,
                    target: Some(Target {
                        text: format!(
                            "p50 ≤ 1.5× baseline (is {})",
                            time_ratio.map_or("?".into(), |r| format!("{r:.2}×"))
                        ),
                        met: time_ratio.is_some_and(|r| r <= 1.5),
                    }),
                    measure,
                    baseline_name: name.into(),
                    baseline: Some(baseline),
                });
            }

            if self.sizes.agent_sizes.contains(&size) {
                for file in unregistered.drain(..) {
                    let m = self.loadgen(
                        "registering agents (poll mode)",
                        "register",
                        &[
                            ("base", server.base.clone()),
                            ("agents", path_str(&file)?.to_owned()),
                            ("concurrency", "32".into()),
                        ],
                    )?;
                    ensure!(
                        m.errors == 0,
                        "registering agents failed: {}",
                        m.first_error.unwrap_or_default()
                    );
                }
                let count = self.sizes.heartbeats;
                let agents_in_db = match store {
                    Store::Sqlite => 0,
                    Store::Postgres(cluster) => {
                        let n: u64 = self
                            .psql(cluster, &db.name, sql::AGENTS_TABLE)?
                            .lines()
                            .last()
                            .and_then(|l| l.trim().parse().ok())
                            .context("counting the registered agents")?;
                        ensure!(n > 0, "no online agents to replay heartbeats for");
                        n
                    }
                };
                for concurrency in [32usize, 256] {
                    let batches_before = scrape_batches(&server.base)?;
                    let measure = self.loadgen(
                        &format!(
                            "POST /registry/heartbeat, {size} agents ×{count} c={concurrency}"
                        ),
                        "heartbeat",
                        &[
                            ("base", server.base.clone()),
                            ("agents", path_str(&agents)?.to_owned()),
                            ("count", count.to_string()),
                            ("concurrency", concurrency.to_string()),
                        ],
                    )?;
                    server.ensure_running()?;
                    let batches_after = scrape_batches(&server.base)?;
                    // berth's mean batch in this run: the batched baseline runs the same size.
                    let batch = ((batches_after.1 - batches_before.1)
                        / (batches_after.0 - batches_before.0).max(1.0))
                    .round()
                    .max(1.0) as usize;
                    let (name, baseline, batched) = match store {
                        Store::Sqlite => (
                            "sqlx, same SQL, one transaction per heartbeat",
                            self.loadgen(
                                &format!("baseline: heartbeat SQL via sqlx c={concurrency}"),
                                "sqlite-heartbeat",
                                &[
                                    ("db", path_str(&db.sqlite_file())?.to_owned()),
                                    ("count", count.to_string()),
                                    ("concurrency", concurrency.to_string()),
                                ],
                            )?,
                            self.loadgen(
                                &format!("baseline: batched heartbeat SQL via sqlx, batch {batch}"),
                                "sqlite-heartbeat-batch",
                                &[
                                    ("db", path_str(&db.sqlite_file())?.to_owned()),
                                    ("count", count.to_string()),
                                    ("batch", batch.to_string()),
                                ],
                            )?,
                        ),
                        Store::Postgres(cluster) => {
                            let single = self.pgbench(
                                cluster,
                                &db.name,
                                &format!("heartbeat-{size}-c{concurrency}"),
                                &sql::heartbeat_script(agents_in_db),
                                concurrency,
                                count,
                            )?;
                            let mut batched = self.pgbench(
                                cluster,
                                &db.name,
                                &format!("heartbeat-batch-{size}-c{concurrency}"),
                                &sql::heartbeat_batch_script(agents_in_db, batch),
                                1,
                                count.div_ceil(batch).max(20),
                            )?;
                            // Transactions per second → heartbeats per second.
                            batched.throughput *= batch as f64;
                            batched.count *= batch as u64;
                            (
                                "pgbench, same SQL, one transaction per heartbeat",
                                single,
                                batched,
                            )
                        }
                    };
                    let single_ratio = ratio(measure.throughput, baseline.throughput);
                    report.rows.push(Row {
                        scenario: format!(
                            "POST /registry/heartbeat, {size} agents, c={concurrency}"
                        ),
                        measure: measure.clone(),
                        baseline_name: name.into(),
                        baseline: Some(baseline),
                        ratio: single_ratio,
                        ratio_note: None,
                        target: Some(Target {
                            text: "≥ 20,000 heartbeats/s (issue 15)".into(),
                            met: measure.throughput >= 20_000.0,
                        }),
                    });
                    let batched_ratio = ratio(measure.throughput, batched.throughput);
                    report.rows.push(Row {
                        scenario: format!(
                            "POST /registry/heartbeat, {size} agents, c={concurrency}, vs its batched SQL"
                        ),
                        measure,
                        baseline_name: format!(
                            "the batched statements alone, batch {batch} (berth's mean), one at a time"
                        ),
                        baseline: Some(batched),
                        ratio: batched_ratio,
                        ratio_note: None,
                        target: None,
                    });
                }
            }
        }
        report.memory.push(Memory {
            label: format!("with {have} workspaces (after list and heartbeats)"),
            kib: server.rss_kib()?,
            target_mib: 100.0,
        });

        // Create latency while every agent beats once per 30 s (the steady state).
        if let Some(&agent_count) = self.sizes.agent_sizes.iter().max() {
            self.create_under_load(&server, &agents, agent_count, report)?;
            server.ensure_running()?;
        }
        drop(server);
        Ok(())
    }

    /// Creates paced at [`CREATE_RATE`] per second, without and then with a paced heartbeat load
    /// of `agent_count` beats per 30 s (the steady state), compared by p99. Paced rather
    /// than flat out, so the creates measure latency instead of saturating the two cores.
    fn create_under_load(
        &self,
        server: &Server,
        agents: &Path,
        agent_count: usize,
        report: &mut StoreReport,
    ) -> Result<()> {
        let secs = self.sizes.load_secs;
        let creates = |prefix: &str, what: &str| {
            self.loadgen(
                what,
                "create",
                &[
                    ("base", server.base.clone()),
                    ("token", ADMIN_TOKEN.into()),
                    ("count", (CREATE_RATE * secs).to_string()),
                    ("concurrency", "4".into()),
                    ("rate", CREATE_RATE.to_string()),
                    ("prefix", prefix.into()),
                    ("max-secs", (secs + 5).to_string()),
                ],
            )
        };
        let quiet = creates("quiet", "paced creates, no heartbeats")?;
        // The beats start a second early and end a few seconds late, covering the loaded run.
        let beat_secs = secs + 4;
        let rate = agent_count as f64 / 30.0;
        let log = db_log(agents, "heartbeat-load.log");
        let mut cmd = self.command(&self.loadgen);
        cmd.arg("heartbeat")
            .args(["--base", &server.base])
            .arg("--agents")
            .arg(agents)
            .args([
                "--count",
                &((rate * beat_secs as f64).ceil() as u64).to_string(),
            ])
            .args(["--concurrency", "32"])
            .args(["--rate", &format!("{rate}")])
            .args(["--max-secs", &beat_secs.to_string()]);
        eprintln!("xtask: bench: background heartbeats at {rate:.0}/s for {beat_secs} s");
        let mut beats = Background::spawn(cmd, &log)?;
        sleep(Duration::from_secs(1));
        let loaded = creates("loaded", "paced creates, with heartbeats")?;
        beats.wait(Duration::from_secs(beat_secs + 60))?;
        let beat = last_measure(&log).context("the background heartbeats")?;
        let p99 = ratio(loaded.p99_ms, quiet.p99_ms);
        report.rows.push(Row {
            scenario: format!(
                "POST /workspaces at {CREATE_RATE}/s while {agent_count} agents beat every 30 s \
                 ({:.0}/s achieved, {} err)",
                beat.throughput, beat.errors
            ),
            measure: loaded,
            baseline_name: "same creates, no heartbeats".into(),
            baseline: Some(quiet),
            ratio: p99,
            ratio_note: Some("p99 ÷ baseline p99"),
            target: Some(Target {
                text: "p99 within 20%".into(),
                met: p99.is_some_and(|r| r <= 1.2),
            }),
        });
        Ok(())
    }

    /// Phase 3: event fan-out. [`FANOUT_SUBSCRIBERS`] admin WebSocket subscribers on `/ws`, one
    /// agent whose heartbeats change its `current_task` [`FANOUT_RATE`] times a second (each a
    /// recorded `TASK_UPDATED` event), latency from the event's timestamp to its receipt at each
    /// subscriber. Baseline: the same subscribers on an axum WebSocket route fed by a bare
    /// `tokio::sync::broadcast` with frames of the same size (the stack's limit without the
    /// database, the event log and its tailer).
    fn phase_fanout(&self, store: &Store<'_>, report: &mut StoreReport) -> Result<()> {
        let db = self.fresh_db(store, "fanout")?;
        let mut server = self.serve(&db, "none")?;
        let secs = self.sizes.fanout_secs.to_string();
        let args = |base: &str, producer: &str| {
            vec![
                ("base", base.to_owned()),
                ("token", ADMIN_TOKEN.to_owned()),
                ("producer", producer.to_owned()),
                ("subscribers", FANOUT_SUBSCRIBERS.to_string()),
                ("rate", FANOUT_RATE.to_string()),
                ("secs", secs.clone()),
            ]
        };
        let measure = self.loadgen(
            &format!("event fan-out: {FANOUT_SUBSCRIBERS} /ws subscribers, {FANOUT_RATE} events/s"),
            "fanout",
            &args(&server.base, "berth"),
        )?;
        server.ensure_running()?;
        drop(server);
        let bytes = measure.body_bytes.unwrap_or(200);
        let log = self.scratch.path().join("serve-fanout.log");
        let mut cmd = self.command(&self.loadgen);
        cmd.args(["serve-fanout", "--bytes", &bytes.to_string()]);
        let bare = Background::spawn(cmd, &log)?;
        let base = wait_for_line(&log, "listening ")?;
        let baseline = self.loadgen(
            "baseline: bare broadcast fan-out over axum WebSockets",
            "fanout",
            &args(&base, "emit"),
        )?;
        drop(bare);
        report.rows.push(Row {
            scenario: format!(
                "event fan-out, {FANOUT_SUBSCRIBERS} `/ws` subscribers, {FANOUT_RATE} events/s \
                 ({bytes} B frames; latency = event timestamp → receipt; baseline p99 {:.1} ms)",
                baseline.p99_ms
            ),
            ratio: ratio(measure.p50_ms, baseline.p50_ms),
            ratio_note: Some("p50 ÷ baseline p50"),
            target: None,
            measure,
            baseline_name: "bare tokio broadcast → axum WebSocket".into(),
            baseline: Some(baseline),
        });
        Ok(())
    }

    /// Phase 4: create → `online` under the process provisioner, against `berth agent` alone.
    fn phase_online(&self, store: &Store<'_>, report: &mut StoreReport) -> Result<()> {
        let db = self.fresh_db(store, "online")?;
        let mut server = self.serve(&db, "process")?;
        let count = self.sizes.online.to_string();
        let measure = self.loadgen(
            "create → online (process provisioner, template echo)",
            "create-online",
            &[
                ("base", server.base.clone()),
                ("token", ADMIN_TOKEN.into()),
                ("template", "echo".into()),
                ("count", count.clone()),
            ],
        )?;
        server.ensure_running()?;
        // Stops berth and its agents before the baseline starts agents of its own.
        drop(server);
        let cold = measure.clone();
        let warm = self.warm_online(store, "process", &[], "echo", self.sizes.online, &[])?;
        let baseline = self.loadgen(
            "baseline: berth agent to its first register",
            "agent-start",
            &[
                ("berth", path_str(&self.berth)?.to_owned()),
                ("count", count),
            ],
        )?;
        report.rows.push(Row {
            scenario: "create → online, process provisioner (sequential)".into(),
            ratio: ratio(measure.p50_ms, baseline.p50_ms),
            ratio_note: Some("p50 ÷ baseline p50"),
            target: Some(Target {
                text: "p50 < 300 ms".into(),
                met: measure.count > 0 && measure.p50_ms < 300.0,
            }),
            measure,
            baseline_name: "`berth agent` spawn → first register".into(),
            baseline: Some(baseline),
        });
        report.rows.push(Row {
            scenario: "create → online from a warm pool, process provisioner (sequential)".into(),
            ratio: ratio(warm.p50_ms, cold.p50_ms),
            ratio_note: Some("p50 ÷ cold start p50"),
            target: Some(Target {
                text: "p50 < 2 ms".into(),
                met: warm.count > 0 && warm.p50_ms < 2.0,
            }),
            measure: warm,
            baseline_name: "the same create, cold (row above)".into(),
            baseline: Some(cold),
        });
        self.phase_burst(store, report, "process", &[], "echo", &[])?;
        self.phase_online_docker(store, report)
    }

    /// Create → `online` with a warm pool of `size` members of `pool` (`TEMPLATE[:TIER]`), all
    /// ready before the first create, one create at a time (`create` adds loadgen arguments).
    fn warm_online(
        &self,
        store: &Store<'_>,
        provisioner: &str,
        extra: &[&str],
        pool: &str,
        size: usize,
        create: &[(&'static str, String)],
    ) -> Result<Measure> {
        let (mut server, mut args) =
            self.pool_server(store, "warm", provisioner, extra, pool, size, create)?;
        let pool_name = pool.to_owned();
        args.extend([
            ("count", size.to_string()),
            ("prefix", "w".into()),
            ("poll-us", "0".into()),
        ]);
        let measure = self.loadgen(
            &format!("create → online from a warm pool of {size} ({provisioner})"),
            "create-online",
            &args,
        )?;
        let claims = metric(
            &scrape(&server.base)?,
            &format!("berth_pool_claims_total{{pool=\"{pool_name}\"}}"),
        );
        ensure!(
            claims as u64 == measure.count,
            "{} creates online but {claims} claimed from the pool",
            measure.count
        );
        server.ensure_running()?;
        Ok(measure)
    }

    /// A berth with a warm pool of `size` members of `pool` (`TEMPLATE[:TIER]`), all ready, and
    /// the `create-online` arguments that create from its template (plus `create`).
    #[allow(clippy::too_many_arguments)]
    fn pool_server(
        &self,
        store: &Store<'_>,
        phase: &str,
        provisioner: &str,
        extra: &[&str],
        pool: &str,
        size: usize,
        create: &[(&'static str, String)],
    ) -> Result<(Server, Vec<(&'static str, String)>)> {
        let db = self.fresh_db(store, &format!("{phase}-{provisioner}"))?;
        let spec = format!("{pool}={size}");
        let mut flags = extra.to_vec();
        flags.extend(["--warm-pool", &spec]);
        let server = self.serve_with(&db, provisioner, &flags)?;
        wait_pool_ready(&server.base, pool, size)?;
        let template = pool.split(':').next().unwrap_or(pool).to_owned();
        let mut args = vec![
            ("base", server.base.clone()),
            ("token", ADMIN_TOKEN.into()),
            ("template", template),
        ];
        args.extend(create.iter().cloned());
        Ok((server, args))
    }

    /// The burst: 50 creates at concurrency 8 against a pool of 10 (so 10 claim and the rest
    /// start cold while the pool refills); reports how many claimed, the latencies, and how long
    /// the pool took to be full again after the burst.
    fn phase_burst(
        &self,
        store: &Store<'_>,
        report: &mut StoreReport,
        provisioner: &str,
        extra: &[&str],
        pool: &str,
        create: &[(&'static str, String)],
    ) -> Result<()> {
        const POOL: usize = 10;
        const CREATES: usize = 50;
        let (mut server, mut args) =
            self.pool_server(store, "burst", provisioner, extra, pool, POOL, create)?;
        args.extend([
            ("count", CREATES.to_string()),
            ("concurrency", "8".into()),
            ("prefix", "burst".into()),
            ("poll-us", "1000".into()),
        ]);
        let measure = self.loadgen(
            &format!("burst: {CREATES} creates at concurrency 8, pool of {POOL} ({provisioner})"),
            "create-online",
            &args,
        )?;
        let burst_end = Instant::now();
        let text = scrape(&server.base)?;
        let claims = metric(
            &text,
            &format!("berth_pool_claims_total{{pool=\"{pool}\"}}"),
        );
        let misses = metric(
            &text,
            &format!("berth_pool_misses_total{{pool=\"{pool}\"}}"),
        );
        wait_pool_ready(&server.base, pool, POOL)?;
        let refill = burst_end.elapsed().as_secs_f64();
        server.ensure_running()?;
        report.rows.push(Row {
            scenario: format!(
                "burst, {provisioner}: {CREATES} creates at c=8, pool of {POOL}: {claims:.0} claimed, {misses:.0} cold; pool full again {refill:.1} s after"
            ),
            ratio: None,
            ratio_note: None,
            target: None,
            measure,
            baseline_name: String::new(),
            baseline: None,
        });
        Ok(())
    }

    /// Create → `online` under the Docker provisioner with the locally built image (tier 4:
    /// the container shares the host network, so the agent reaches berth on loopback). Skipped,
    /// with a note in the report, when the daemon or the image is missing.
    fn phase_online_docker(&self, store: &Store<'_>, report: &mut StoreReport) -> Result<()> {
        let image_ok = Command::new("docker")
            .args(["image", "inspect", "berth-agent:test"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !image_ok {
            eprintln!(
                "xtask: bench: Docker or the image berth-agent:test is missing (run `cargo xtask image`); skipping Docker create → online"
            );
            return Ok(());
        }
        let db = self.fresh_db(store, "online-docker")?;
        let mut server =
            self.serve_with(&db, "docker", &["--docker-image", "echo=berth-agent:test"])?;
        let measure = self.loadgen(
            "create → online (Docker provisioner, template echo, tier 4)",
            "create-online",
            &[
                ("base", server.base.clone()),
                ("token", ADMIN_TOKEN.into()),
                ("template", "echo".into()),
                ("tier", "4".into()),
                ("prefix", "d".into()),
                ("count", (self.sizes.online / 2).max(3).to_string()),
            ],
        )?;
        server.ensure_running()?;
        drop(server);
        self.remove_bench_containers();
        let docker_run = self.loadgen(
            "baseline: docker run --network host of the image to its first register",
            "agent-start",
            &[
                ("docker-image", "berth-agent:test".into()),
                ("count", (self.sizes.online / 2).max(3).to_string()),
            ],
        )?;
        let docker = ["--docker-image", "echo=berth-agent:test"];
        let tier4 = [("tier", "4".to_owned())];
        let warm = self.warm_online(
            store,
            "docker",
            &docker,
            "echo:4",
            self.sizes.online,
            &tier4,
        );
        self.remove_bench_containers();
        let warm = warm?;
        report.rows.push(Row {
            scenario: "create → online, Docker provisioner (sequential, tier 4)".into(),
            ratio: ratio(measure.p50_ms, docker_run.p50_ms),
            ratio_note: Some("p50 ÷ docker run p50"),
            target: None,
            measure: measure.clone(),
            baseline_name: "bare `docker run` of the image → first register".into(),
            baseline: Some(docker_run),
        });
        report.rows.push(Row {
            scenario: "create → online from a warm pool, Docker provisioner (sequential, tier 4)"
                .into(),
            ratio: ratio(warm.p50_ms, measure.p50_ms),
            ratio_note: Some("p50 ÷ cold start p50"),
            target: Some(Target {
                text: "p50 < 50 ms".into(),
                met: warm.count > 0 && warm.p50_ms < 50.0,
            }),
            measure: warm,
            baseline_name: "the same create, cold (row above)".into(),
            baseline: Some(measure),
        });
        let burst = self.phase_burst(store, report, "docker", &docker, "echo:4", &tier4);
        self.remove_bench_containers();
        burst
    }

    /// `psql -c <sql>` on database `db`, unaligned and tuples-only; returns stdout.
    fn psql(&self, cluster: &Cluster, db: &str, sql: &str) -> Result<String> {
        let mut cmd = Command::new(cluster.program("psql")?);
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &cluster.port().to_string()])
            .args(["-U", "postgres", "-d", db, "-c", sql]);
        run_bounded(&mut cmd, Duration::from_secs(120), self.scratch.path())
    }

    /// Runs `sql` `count` times in one `psql` session with its rows sent to /dev/null, reading
    /// each statement's time from `\timing` (which psql prints to stdout, not to `\o`).
    fn psql_timed(&self, cluster: &Cluster, db: &str, sql: &str, count: usize) -> Result<Measure> {
        eprintln!("xtask: bench: baseline: list SELECT via psql ×{count}");
        let script = self.scratch.path().join("psql-timed.sql");
        let mut text = String::from("\\o /dev/null\n\\timing on\n");
        for _ in 0..count {
            text.push_str(sql);
            text.push_str(";\n");
        }
        fs::write(&script, text)?;
        let mut cmd = Command::new(cluster.program("psql")?);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &cluster.port().to_string()])
            .args(["-U", "postgres", "-d", db, "-f"])
            .arg(&script);
        let out = run_bounded(
            &mut cmd,
            Duration::from_secs(self.sizes.max_secs + 60),
            self.scratch.path(),
        )?;
        let times: Vec<f64> = out
            .lines()
            .filter_map(|l| l.strip_prefix("Time: "))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        ensure!(
            times.len() == count,
            "psql printed {} timings for {count} queries:\n{out}",
            times.len()
        );
        // Sequential: the throughput is queries over the time they took.
        let total: f64 = times.iter().sum::<f64>() / 1000.0;
        Ok(Measure::from_latencies(times, 0, total))
    }

    /// Runs `script` with pgbench: `clients` connections, `count` transactions in all, prepared
    /// statements (as sqlx uses); latencies from its per-transaction log.
    fn pgbench(
        &self,
        cluster: &Cluster,
        db: &str,
        label: &str,
        script: &str,
        clients: usize,
        count: usize,
    ) -> Result<Measure> {
        eprintln!("xtask: bench: baseline: pgbench {label} c={clients} ×{count}");
        let dir = self.scratch.path().join(format!("pgbench-{label}"));
        fs::create_dir_all(&dir)?;
        let file = dir.join("script.sql");
        fs::write(&file, script)?;
        let per_client = count.div_ceil(clients);
        let threads = clients.min(2);
        let mut cmd = Command::new(cluster.program("pgbench")?);
        cmd.args(["-n", "-M", "prepared", "-l"])
            .args(["-c", &clients.to_string(), "-j", &threads.to_string()])
            .args(["-t", &per_client.to_string()])
            .arg(format!("--log-prefix={}", path_str(&dir.join("log"))?))
            .arg("-f")
            .arg(&file)
            .args(["-h", "127.0.0.1", "-p", &cluster.port().to_string()])
            .args(["-U", "postgres", db]);
        let started = Instant::now();
        let out = run_bounded(
            &mut cmd,
            Duration::from_secs(self.sizes.max_secs * 3),
            self.scratch.path(),
        )?;
        let wall = started.elapsed().as_secs_f64();
        let tps: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("tps = "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no tps line in pgbench's output:\n{out}"))?;
        let mut latencies = Vec::new();
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            if !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("log."))
            {
                continue;
            }
            // "client_id transaction_no time_us script_no epoch epoch_us"
            for line in fs::read_to_string(&path)?.lines() {
                if let Some(us) = line
                    .split_whitespace()
                    .nth(2)
                    .and_then(|t| t.parse::<f64>().ok())
                {
                    latencies.push(us / 1000.0);
                }
            }
        }
        fs::remove_dir_all(&dir)?;
        ensure!(
            !latencies.is_empty(),
            "pgbench wrote no transaction log:\n{out}"
        );
        let mut m = Measure::from_latencies(latencies, 0, wall);
        // pgbench's own tps leaves out connection set-up, like the loadgen's warm pool.
        m.throughput = tps;
        m.duration_s = m.count as f64 / tps;
        Ok(m)
    }
}

/// A file next to `agents` (in the phase's data directory).
/// The result line a background `berth-loadgen` wrote last to its log.
fn last_measure(log: &Path) -> Result<Measure> {
    fs::read_to_string(log)?
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .map(Measure::from_loadgen)
        .transpose()?
        .context("no result line")
}

fn db_log(agents: &Path, name: &str) -> PathBuf {
    agents.with_file_name(name)
}

/// `a / b`, when both are positive.
/// The heartbeat batch histogram's `_count` and `_sum` from a bench server's `/metrics` (a plain
/// HTTP/1.0 request: xtask has no HTTP client).
fn scrape_batches(base: &str) -> Result<(f64, f64)> {
    let text = scrape(base)?;
    ensure!(
        text.contains("berth_heartbeat_batch_size"),
        "no heartbeat batch histogram in /metrics:\n{text}"
    );
    // Absent until the first batch.
    Ok((
        metric(&text, "berth_heartbeat_batch_size_count"),
        metric(&text, "berth_heartbeat_batch_size_sum"),
    ))
}

/// berth's `/metrics` text (admin bearer), over a raw HTTP/1.0 exchange.
fn scrape(base: &str) -> Result<String> {
    use std::io::{Read as _, Write as _};
    let addr = base
        .strip_prefix("http://")
        .context("a bench server's base URL is http://")?;
    let mut conn = std::net::TcpStream::connect(addr).context("connecting for /metrics")?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        conn,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    )?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text)
}

/// The value of the series `series` (name and labels as exposed) in `text`; 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Waits (up to 3 minutes) until the warm pool `pool` of the server at `base` has `size` ready
/// members.
fn wait_pool_ready(base: &str, pool: &str, size: usize) -> Result<()> {
    let series = format!("berth_pool_members{{pool=\"{pool}\",state=\"ready\"}}");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let ready = metric(&scrape(base)?, &series);
        if ready as usize >= size {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the warm pool {pool} has {ready} of {size} members ready after 3 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (a > 0.0 && b > 0.0).then(|| a / b)
}

/// Waits (up to 10 s) for `log` to hold a line starting with `prefix`; returns the rest of it.
fn wait_for_line(log: &Path, prefix: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.lines().find_map(|l| l.strip_prefix(prefix)) {
            return Ok(rest.trim().to_owned());
        }
        if Instant::now() >= deadline {
            bail!(
                "no {prefix:?} line in {} within 10 s:\n{text}",
                log.display()
            );
        }
        sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_mode_is_smaller() {
        let (quick, full) = (Sizes::new(true), Sizes::new(false));
        assert!(quick.create_c32 < full.create_c32);
        assert_eq!(quick.list_sizes, [100, 1000]);
        assert_eq!(full.list_sizes, [100, 1000, 10000]);
        assert_eq!(quick.agent_sizes, [1000]);
        assert!(full.list_requests(10000) < full.list_requests(100));
    }

    #[test]
    fn ratio_needs_two_positive_figures() {
        assert_eq!(ratio(2.0, 4.0), Some(0.5));
        assert_eq!(ratio(0.0, 4.0), None);
        assert_eq!(ratio(1.0, 0.0), None);
    }
}
