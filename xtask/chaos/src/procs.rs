//! Counting agent processes through `/proc`: the process backend puts `WORKSPACE_ID=<id>` in
//! every agent's environment, and the agent of the `echo` template is `berth agent`.

use std::collections::HashMap;

/// Agent processes (not zombies) by workspace id, among `ids`: processes whose environment holds
/// `WORKSPACE_ID=<id>` and whose first argument is `agent`.
pub fn agents_by_workspace(ids: &[String]) -> HashMap<String, Vec<u32>> {
    let mut found: HashMap<String, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim().chars().next());
        if !matches!(state, Some(s) if s != 'Z' && s != 'X') {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let Some(id) = environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"WORKSPACE_ID="))
            .and_then(|v| std::str::from_utf8(v).ok())
        else {
            continue;
        };
        if !ids.iter().any(|i| i == id) {
            continue;
        }
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if cmdline.split(|b| *b == 0).nth(1) == Some(&b"agent"[..]) {
            found.entry(id.to_owned()).or_default().push(pid);
        }
    }
    found
}

/// Kills (`kill -9`) every process, agent or not, that works for one of `ids`.
pub fn kill_all(ids: &[String]) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()) {
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let ours = environ
            .split(|b| *b == 0)
            .filter_map(|kv| kv.strip_prefix(b"WORKSPACE_ID="))
            .any(|v| ids.iter().any(|i| i.as_bytes() == v));
        if ours {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}
