//! What a bench run measured, and the report written from it (`report.md`, `report.json`).
//!
//! xtask has no JSON library, so the one-line results of `berth-loadgen` are read by a small
//! parser for flat objects, and the report JSON is written by hand.

use std::fmt::Write as _;

use anyhow::{Context, Result, bail};

/// One measured run: from `berth-loadgen`, `pgbench` or `psql`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Measure {
    /// Successful operations.
    pub count: u64,
    /// Failed operations.
    pub errors: u64,
    /// Wall time, seconds.
    pub duration_s: f64,
    /// Operations per second.
    pub throughput: f64,
    /// Median latency, ms.
    pub p50_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// The first error, if any.
    pub first_error: Option<String>,
    /// `body_bytes` of a `get` run.
    pub body_bytes: Option<u64>,
}

impl Measure {
    /// Reads the JSON line `berth-loadgen` prints.
    pub fn from_loadgen(line: &str) -> Result<Self> {
        let fields = parse_flat_json(line)?;
        let num = |key: &str| -> Result<f64> {
            match fields.iter().find(|(k, _)| k == key) {
                Some((_, Scalar::Num(n))) => Ok(*n),
                _ => bail!("loadgen output lacks number {key:?}: {line}"),
            }
        };
        let first_error = fields.iter().find_map(|(k, v)| match (k.as_str(), v) {
            ("first_error", Scalar::Str(s)) => Some(s.clone()),
            _ => None,
        });
        Ok(Self {
            count: num("count")? as u64,
            errors: num("errors")? as u64,
            duration_s: num("duration_s")?,
            throughput: num("throughput")?,
            p50_ms: num("p50_ms")?,
            p99_ms: num("p99_ms")?,
            first_error,
            body_bytes: num("body_bytes").ok().map(|n| n as u64),
        })
    }

    /// A measure from raw latencies (ms) and the time they took.
    pub fn from_latencies(mut ms: Vec<f64>, errors: u64, duration_s: f64) -> Self {
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if ms.is_empty() {
                return 0.0;
            }
            let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            ms[rank - 1]
        };
        Self {
            count: ms.len() as u64,
            errors,
            duration_s,
            throughput: if duration_s > 0.0 {
                ms.len() as f64 / duration_s
            } else {
                0.0
            },
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            first_error: None,
            body_bytes: None,
        }
    }
}

/// A scalar of a flat JSON object.
#[derive(Clone, Debug, PartialEq)]
enum Scalar {
    Num(f64),
    Str(String),
    Other,
}

/// Parses `{"k": scalar, …}` (no nesting), enough for loadgen's output.
fn parse_flat_json(text: &str) -> Result<Vec<(String, Scalar)>> {
    let mut chars = text.trim().chars().peekable();
    let mut out = Vec::new();
    let expect = |c: Option<char>, want: char| -> Result<()> {
        if c != Some(want) {
            bail!("expected {want:?} in {text:?}");
        }
        Ok(())
    };
    fn string(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<String> {
        let mut s = String::new();
        loop {
            match chars.next().context("unterminated string")? {
                '"' => return Ok(s),
                '\\' => match chars.next().context("unterminated escape")? {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        let code = u32::from_str_radix(&hex, 16).unwrap_or(0xFFFD);
                        s.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
                    }
                    other => s.push(other),
                },
                c => s.push(c),
            }
        }
    }
    expect(chars.next(), '{')?;
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        match chars.next() {
            Some('}') => return Ok(out),
            Some('"') => {}
            _ => bail!("expected a key in {text:?}"),
        }
        let key = string(&mut chars)?;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        expect(chars.next(), ':')?;
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            Scalar::Str(string(&mut chars)?)
        } else {
            let mut raw = String::new();
            while let Some(&c) = chars.peek() {
                if c == ',' || c == '}' {
                    break;
                }
                raw.push(c);
                chars.next();
            }
            match raw.trim().parse::<f64>() {
                Ok(n) => Scalar::Num(n),
                Err(_) if matches!(raw.trim(), "null" | "true" | "false") => Scalar::Other,
                Err(_) => bail!("unsupported value {raw:?} in {text:?}"),
            }
        };
        out.push((key, value));
    }
}

/// A target of issue 8, judged from one row.
#[derive(Clone, Debug)]
pub struct Target {
    /// How it reads in the report, e.g. `ratio ≥ 0.7`.
    pub text: String,
    /// Whether the run met it.
    pub met: bool,
}

/// One scenario of one store.
#[derive(Clone, Debug)]
pub struct Row {
    /// What was measured.
    pub scenario: String,
    /// berth's figures.
    pub measure: Measure,
    /// What it is compared with ("" when nothing).
    pub baseline_name: String,
    /// The baseline's figures.
    pub baseline: Option<Measure>,
    /// The comparison (see `ratio_note`).
    pub ratio: Option<f64>,
    /// What `ratio` divides, when it is not throughput ÷ baseline throughput.
    pub ratio_note: Option<&'static str>,
    /// The issue's target, when it has one for this row.
    pub target: Option<Target>,
}

/// A resident-memory reading.
#[derive(Clone, Debug)]
pub struct Memory {
    /// When it was read.
    pub label: String,
    /// VmRSS in KiB.
    pub kib: u64,
    /// The issue's ceiling, MiB.
    pub target_mib: f64,
}

/// Everything measured for one store.
#[derive(Debug, Default)]
pub struct StoreReport {
    /// `SQLite` or `PostgreSQL …`.
    pub name: String,
    /// Scenarios in the order they ran.
    pub rows: Vec<Row>,
    /// Memory readings.
    pub memory: Vec<Memory>,
    /// Set when the store's run stopped early.
    pub failure: Option<String>,
}

/// The run's context, printed at the top of the report.
pub struct Header {
    /// `quick` or `full`.
    pub mode: &'static str,
    /// CPU, cores, memory, kernel.
    pub machine: String,
    /// UTC time of the run.
    pub date: String,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn rate(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The markdown report.
pub fn markdown(header: &Header, stores: &[StoreReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# berth benchmark report ({} run)\n", header.mode);
    let _ = writeln!(out, "- machine: {}", header.machine);
    let _ = writeln!(out, "- date: {}", header.date);
    let _ = writeln!(
        out,
        "- rerun: `cargo xtask bench{}`; load from `berth-loadgen` over loopback, release builds\n",
        if header.mode == "quick" {
            " --quick"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "`ratio` is berth's throughput ÷ the baseline's (1.0 = as fast as the limit) unless the \
         row says otherwise; latencies are per request, in ms.\n"
    );
    for store in stores {
        let _ = writeln!(out, "## {}\n", store.name);
        if let Some(failure) = &store.failure {
            let _ = writeln!(out, "**The run stopped early:** {failure}\n");
        }
        let _ = writeln!(
            out,
            "| scenario | n | throughput /s | p50 | p99 | baseline | baseline /s | baseline p50 | ratio | target |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---:|---:|---:|---|");
        for row in &store.rows {
            let m = &row.measure;
            let n = if m.errors > 0 {
                format!("{} ({} err)", m.count, m.errors)
            } else {
                m.count.to_string()
            };
            let (b_rate, b_p50) = match &row.baseline {
                Some(b) if b.errors > 0 => (
                    format!("{} ({} err)", rate(b.throughput), b.errors),
                    ms(b.p50_ms),
                ),
                Some(b) => (rate(b.throughput), ms(b.p50_ms)),
                None => ("—".into(), "—".into()),
            };
            let ratio = match (row.ratio, row.ratio_note) {
                (Some(r), Some(note)) => format!("{r:.2} ({note})"),
                (Some(r), None) => format!("{r:.2}"),
                (None, _) => "—".into(),
            };
            let target = match &row.target {
                Some(t) => format!("{}: {}", t.text, if t.met { "met" } else { "**not met**" }),
                None => "—".into(),
            };
            let _ = writeln!(
                out,
                "| {} | {n} | {} | {} | {} | {} | {b_rate} | {b_p50} | {ratio} | {target} |",
                row.scenario,
                rate(m.throughput),
                ms(m.p50_ms),
                ms(m.p99_ms),
                if row.baseline_name.is_empty() {
                    "—"
                } else {
                    &row.baseline_name
                },
            );
        }
        if !store.memory.is_empty() {
            let _ = writeln!(out, "\n| resident memory (VmRSS) | MiB | target |");
            let _ = writeln!(out, "|---|---:|---|");
            for m in &store.memory {
                let mib = m.kib as f64 / 1024.0;
                let met = mib < m.target_mib;
                let _ = writeln!(
                    out,
                    "| {} | {mib:.1} | < {} MiB: {} |",
                    m.label,
                    m.target_mib,
                    if met { "met" } else { "**not met**" }
                );
            }
        }
        let _ = writeln!(out);
    }
    out
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn json_measure(m: &Measure) -> String {
    format!(
        "{{\"count\":{},\"errors\":{},\"duration_s\":{},\"throughput\":{},\"p50_ms\":{},\"p99_ms\":{},\"first_error\":{}}}",
        m.count,
        m.errors,
        json_num(m.duration_s),
        json_num(m.throughput),
        json_num(m.p50_ms),
        json_num(m.p99_ms),
        m.first_error.as_deref().map_or("null".into(), json_str),
    )
}

/// The JSON report.
pub fn json(header: &Header, stores: &[StoreReport]) -> String {
    let stores: Vec<String> = stores
        .iter()
        .map(|store| {
            let rows: Vec<String> = store
                .rows
                .iter()
                .map(|row| {
                    format!(
                        "{{\"scenario\":{},\"measure\":{},\"baseline_name\":{},\"baseline\":{},\"ratio\":{},\"ratio_note\":{},\"target\":{},\"met\":{}}}",
                        json_str(&row.scenario),
                        json_measure(&row.measure),
                        json_str(&row.baseline_name),
                        row.baseline.as_ref().map_or("null".into(), json_measure),
                        row.ratio.map_or("null".into(), json_num),
                        row.ratio_note.map_or("null".into(), json_str),
                        row.target.as_ref().map_or("null".into(), |t| json_str(&t.text)),
                        row.target.as_ref().map_or("null".into(), |t| t.met.to_string()),
                    )
                })
                .collect();
            let memory: Vec<String> = store
                .memory
                .iter()
                .map(|m| {
                    format!(
                        "{{\"label\":{},\"rss_kib\":{},\"target_mib\":{},\"met\":{}}}",
                        json_str(&m.label),
                        m.kib,
                        json_num(m.target_mib),
                        (m.kib as f64 / 1024.0) < m.target_mib,
                    )
                })
                .collect();
            format!(
                "{{\"store\":{},\"failure\":{},\"rows\":[{}],\"memory\":[{}]}}",
                json_str(&store.name),
                store.failure.as_deref().map_or("null".into(), json_str),
                rows.join(","),
                memory.join(","),
            )
        })
        .collect();
    format!(
        "{{\"mode\":{},\"machine\":{},\"date\":{},\"stores\":[{}]}}\n",
        json_str(header.mode),
        json_str(&header.machine),
        json_str(&header.date),
        stores.join(","),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_loadgen_output() -> Result<()> {
        let line = r#"{"count":10,"errors":1,"duration_s":0.5,"throughput":20.0,"p50_ms":1.5,"p99_ms":3.25,"mean_ms":1.6,"first_error":"answered 500 \"x\"","body_bytes":812}"#;
        let m = Measure::from_loadgen(line)?;
        assert_eq!((m.count, m.errors, m.body_bytes), (10, 1, Some(812)));
        assert_eq!((m.p50_ms, m.p99_ms), (1.5, 3.25));
        assert_eq!(m.first_error.as_deref(), Some("answered 500 \"x\""));
        let m = Measure::from_loadgen(
            r#"{"count":1,"errors":0,"duration_s":1,"throughput":1,"p50_ms":1,"p99_ms":1,"first_error":null}"#,
        )?;
        assert_eq!(m.first_error, None);
        assert!(Measure::from_loadgen("{\"count\":[1]}").is_err());
        Ok(())
    }

    #[test]
    fn percentiles_of_raw_latencies() {
        let m = Measure::from_latencies((1..=100).rev().map(f64::from).collect(), 0, 2.0);
        assert_eq!(
            (m.count, m.p50_ms, m.p99_ms, m.throughput),
            (100, 50.0, 99.0, 50.0)
        );
    }

    #[test]
    fn json_escapes_strings() {
        assert_eq!(json_str("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }
}
