//! CPU time by process, read from `/proc`: where a phase's CPU went (the benchmark's own client
//! load, Omega, Envoy, the database server), per unit of work. On two cores every process of the
//! stack competes for the same CPU, so a rate is bounded by the sum of their costs; this says
//! which one to look at. Resolution is the kernel's clock tick (10 ms), so a figure is only as
//! good as the CPU seconds it sums.

use std::{collections::BTreeMap, fmt::Write as _};

/// A process to account for: by its pid, or every process with a command name (the database
/// server's processes, one per connection).
#[derive(Clone)]
pub enum Source {
    Pid(u32),
    Command(&'static str),
    Me,
}

/// The CPU seconds each named source used between `start` and `stop`, summed over repeats.
#[derive(Default)]
pub struct CpuMeter {
    sources: Vec<(&'static str, Source)>,
    started: Vec<f64>,
    used: BTreeMap<&'static str, f64>,
}

impl CpuMeter {
    pub fn new(sources: Vec<(&'static str, Source)>) -> Self {
        Self { sources, ..Default::default() }
    }

    pub fn start(&mut self) {
        self.started = self.sources.iter().map(|(_, source)| seconds(source)).collect();
    }

    pub fn stop(&mut self) {
        for ((name, source), before) in self.sources.iter().zip(&self.started) {
            *self.used.entry(name).or_default() += (seconds(source) - before).max(0.0);
        }
    }

    /// "client 120 µs, Omega 310 µs, …" per unit when `units` were done while measured.
    pub fn per_unit(&self, units: usize) -> String {
        let mut out = String::new();
        let mut total = 0.0;
        for (name, _) in &self.sources {
            let used = self.used.get(name).copied().unwrap_or_default();
            total += used;
            let _ = write!(out, "{name} {:.0} µs, ", used * 1e6 / units.max(1) as f64);
        }
        let _ = write!(out, "all {:.0} µs", total * 1e6 / units.max(1) as f64);
        out
    }
}

/// CPU seconds (user and system, all threads) a source has used so far; 0 for what cannot be
/// read (a process that exited takes its time with it).
fn seconds(source: &Source) -> f64 {
    match source {
        Source::Pid(pid) => process_seconds(&format!("/proc/{pid}/stat")).unwrap_or(0.0),
        Source::Me => process_seconds("/proc/self/stat").unwrap_or(0.0),
        Source::Command(name) => std::fs::read_dir("/proc")
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())))
                    .filter_map(|e| {
                        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
                        (command(&stat)? == *name).then(|| ticks(&stat)).flatten()
                    })
                    .sum::<f64>()
            })
            .unwrap_or(0.0),
    }
}

fn process_seconds(path: &str) -> Option<f64> {
    ticks(&std::fs::read_to_string(path).ok()?)
}

/// The command name in a `/proc/<pid>/stat` line: between the first `(` and the last `)`.
fn command(stat: &str) -> Option<&str> {
    Some(&stat[stat.find('(')? + 1..stat.rfind(')')?])
}

/// utime + stime (fields 14 and 15 of `stat`, counted from 1) in seconds.
fn ticks(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    // The kernel's USER_HZ: 100 on every Linux ABI Omega is built for.
    Some((user + system) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stat_line_whose_command_has_spaces_and_parentheses() {
        let stat = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 130 0 0 20 0 4 0 100 0 0";
        assert_eq!(command(stat), Some("a (b) c"));
        assert_eq!(ticks(stat), Some(3.8));
    }
}
