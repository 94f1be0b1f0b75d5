//! What the suite found: violations, and the figures of the summary.

use crate::Opts;

/// Violations and figures, filled in by the scenarios.
#[derive(Default)]
pub struct Report {
    /// `(scenario, what was wrong)`.
    pub violations: Vec<(String, String)>,
    /// Requests sent to berth, all scenarios together.
    pub requests: u64,
    /// PostgreSQL restarts done.
    pub restarts: u32,
    /// Seconds from PostgreSQL being back to `/health` answering 200, one per restart.
    pub recoveries: Vec<f64>,
    /// Free-form lines for the summary (per-scenario figures).
    pub notes: Vec<String>,
    /// Resident memory of the slow-WebSocket scenario, MB: baseline, peak, settled.
    pub rss_mb: Option<(f64, f64, f64)>,
    /// Wall time of the whole run.
    pub seconds: f64,
}

/// At most this many violations are printed per scenario; the rest are counted.
const PRINT_PER_SCENARIO: usize = 25;

impl Report {
    /// Records a violation of `scenario`.
    pub fn violation(&mut self, scenario: &str, what: impl Into<String>) {
        let what = what.into();
        eprintln!("chaos: VIOLATION [{scenario}] {}", first_line(&what));
        self.violations.push((scenario.to_owned(), what));
    }

    /// Adds a line to the summary and echoes it.
    pub fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        eprintln!("chaos: {line}");
        self.notes.push(line);
    }

    /// Prints the summary and the violations.
    pub fn print(&self, opts: &Opts) {
        println!();
        println!("== chaos summary ({} form) ==", opts.pick("short", "long"));
        println!("fuzz seed:          {}", opts.seed);
        println!("requests sent:      {}", self.requests);
        println!("PostgreSQL restarts: {}", self.restarts);
        if !self.recoveries.is_empty() {
            let mut sorted = self.recoveries.clone();
            sorted.sort_by(f64::total_cmp);
            let median = sorted[sorted.len() / 2];
            let max = sorted[sorted.len() - 1];
            println!("health recovery:    max {max:.2} s, median {median:.2} s");
        }
        if let Some((base, peak, settled)) = self.rss_mb {
            println!(
                "server RSS:         baseline {base:.0} MB, peak {peak:.0} MB, settled {settled:.0} MB"
            );
        }
        for line in &self.notes {
            println!("  {line}");
        }
        println!("seconds taken:      {:.0}", self.seconds);
        if self.violations.is_empty() {
            println!("result:             PASS (no violations)");
            return;
        }
        println!(
            "result:             FAIL ({} violations)",
            self.violations.len()
        );
        let mut scenarios: Vec<&str> = self.violations.iter().map(|(s, _)| s.as_str()).collect();
        scenarios.dedup();
        for scenario in scenarios {
            let all: Vec<&String> = self
                .violations
                .iter()
                .filter(|(s, _)| s == scenario)
                .map(|(_, w)| w)
                .collect();
            println!("-- {scenario}: {} violations", all.len());
            for what in all.iter().take(PRINT_PER_SCENARIO) {
                println!("   * {what}");
            }
            if all.len() > PRINT_PER_SCENARIO {
                println!("   … and {} more", all.len() - PRINT_PER_SCENARIO);
            }
        }
    }
}

/// The first line of `text`, for the running log.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}
