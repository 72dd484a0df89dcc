//! Where the CPU went during a measurement, from `/proc`: each service, the broker, PostgreSQL (the
//! postmaster and its children), the load generator itself, and the whole machine. On a 2-core machine
//! this usually names what limits a figure: a process near 1 core per thread it can use, or the machine
//! near 2 cores in all.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;

/// Linux reports process times in USER_HZ ticks, 100 per second on every mainstream architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// A process (or process tree) to account for.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
    /// Also count the process's direct children (PostgreSQL's backends).
    pub with_children: bool,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    at: Instant,
    ticks: BTreeMap<String, u64>,
    machine_busy: u64,
    machine_total: u64,
}

/// Cores used on average between two snapshots (1.0 = one core busy all the time).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Usage {
    pub cores: BTreeMap<String, f64>,
    /// All processes of the machine together (`/proc/stat`).
    pub machine_busy_cores: f64,
    /// What the named processes do not explain: other processes of the machine (compilers of other
    /// people on a shared machine, for one).
    pub unaccounted_cores: f64,
}

impl Usage {
    /// `name 1.23, name 0.40, …` for the table, biggest first.
    pub fn summary(&self) -> String {
        let mut parts: Vec<(&String, &f64)> =
            self.cores.iter().filter(|(_, &c)| c >= 0.005).collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1));
        let mut text: Vec<String> = parts.iter().map(|(n, c)| format!("{n} {c:.2}")).collect();
        text.push(format!("other {:.2}", self.unaccounted_cores));
        format!(
            "{} of {:.2} busy cores",
            text.join(", "),
            self.machine_busy_cores
        )
    }
}

pub fn snapshot(watched: &[Watched]) -> Snapshot {
    let children = if watched.iter().any(|w| w.with_children) {
        parents()
    } else {
        BTreeMap::new()
    };
    let mut ticks = BTreeMap::new();
    for w in watched {
        let mut total = process_ticks(w.pid).unwrap_or(0);
        if w.with_children {
            total += children
                .get(&w.pid)
                .map(|kids| kids.iter().filter_map(|&k| process_ticks(k)).sum::<u64>())
                .unwrap_or(0);
        }
        *ticks.entry(w.name.clone()).or_insert(0) += total;
    }
    ticks.insert(
        "bench".to_owned(),
        process_ticks(std::process::id()).unwrap_or(0),
    );
    let (machine_busy, machine_total) = machine_ticks().unwrap_or((0, 0));
    Snapshot {
        at: Instant::now(),
        ticks,
        machine_busy,
        machine_total,
    }
}

pub fn usage(before: &Snapshot, after: &Snapshot) -> Usage {
    let seconds = after.at.duration_since(before.at).as_secs_f64().max(1e-3);
    let mut cores = BTreeMap::new();
    for (name, &end) in &after.ticks {
        let start = before.ticks.get(name).copied().unwrap_or(0);
        cores.insert(
            name.clone(),
            end.saturating_sub(start) as f64 / TICKS_PER_SECOND / seconds,
        );
    }
    // /proc/stat counts ticks of every CPU: busy share of all ticks times the number of CPUs.
    let busy = after.machine_busy.saturating_sub(before.machine_busy) as f64;
    let total = after.machine_total.saturating_sub(before.machine_total) as f64;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let machine_busy_cores = if total > 0.0 {
        busy / total * cpus
    } else {
        0.0
    };
    let explained: f64 = cores.values().sum();
    Usage {
        cores,
        machine_busy_cores,
        unaccounted_cores: (machine_busy_cores - explained).max(0.0),
    }
}

/// utime + stime of a process (all its threads), in ticks.
fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = fields_after_comm(&stat)?;
    // Fields after the command: state is field 3 of the line, utime 14, stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The fields of a `/proc/<pid>/stat` line after `pid (comm)`; the command may contain spaces and
/// parentheses, so the split happens at the last `)`.
fn fields_after_comm(stat: &str) -> Option<Vec<&str>> {
    let end = stat.rfind(')')?;
    Some(stat[end + 1..].split_whitespace().collect())
}

/// Parent pid → children pids, for every process of the machine.
fn parents() -> BTreeMap<u32, Vec<u32>> {
    let mut map: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some(ppid) = parent_of(pid) {
            map.entry(ppid).or_default().push(pid);
        }
    }
    map
}

pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    fields_after_comm(&stat)?.get(1)?.parse().ok()
}

/// (busy, total) ticks of all CPUs since boot.
fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already inside user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// Peak resident set size of a process (`VmHWM`), in MiB.
pub fn peak_rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(process_ticks(std::process::id()).is_some());
        assert!(peak_rss_mb(std::process::id()).unwrap() > 0.0);
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }

    #[test]
    fn command_with_parentheses_and_spaces() {
        let line = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 1 0";
        let fields = fields_after_comm(line).unwrap();
        assert_eq!(fields[0], "S");
        assert_eq!(fields[1], "7");
        assert_eq!(fields[11], "250");
        assert_eq!(fields[12], "30");
    }

    #[test]
    fn usage_splits_what_is_not_named() {
        let t0 = Instant::now();
        let before = Snapshot {
            at: t0,
            ticks: BTreeMap::from([("a".to_owned(), 0)]),
            machine_busy: 0,
            machine_total: 0,
        };
        let after = Snapshot {
            at: t0 + std::time::Duration::from_secs(2),
            ticks: BTreeMap::from([("a".to_owned(), 100)]),
            machine_busy: 300,
            machine_total: 400,
        };
        let u = usage(&before, &after);
        assert!((u.cores["a"] - 0.5).abs() < 1e-9);
        let cpus = std::thread::available_parallelism().unwrap().get() as f64;
        assert!((u.machine_busy_cores - 0.75 * cpus).abs() < 1e-9);
    }
}
