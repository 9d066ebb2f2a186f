//! What every benchmark shares: the machine's description, a process's footprint from `/proc`,
//! and writing one benchmark's section of docs/benchmarks.md without touching the others'.

use std::path::Path;
use std::process::Command;

/// "N cores (CPU model)".
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cores} cores ({cpu})")
}

/// Peak resident memory (MiB) and CPU seconds of process `pid` so far.
pub fn footprint(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
        .sum();
    (peak_kib / 1024.0, ticks / clock_ticks())
}

/// CPU time of process `pid` so far, in nanoseconds, over all its threads (the scheduler's own
/// count, finer than the clock ticks of `footprint`).
pub fn cpu_nanos(pid: u32) -> u64 {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    threads
        .filter_map(|thread| std::fs::read_to_string(thread.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Replaces the section `name` of the Markdown file at `path` (between `<!-- name:begin -->`
/// and `<!-- name:end -->`) with `body`, or appends it when the file has none.
pub fn write_section(path: &Path, name: &str, body: &str) {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let current = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let updated = match (current.find(&begin), current.find(&end)) {
        (Some(start), Some(stop)) if start < stop => format!(
            "{}{section}{}",
            &current[..start],
            &current[stop + end.len()..]
        ),
        _ => format!("{}\n{section}\n", current.trim_end()),
    };
    std::fs::write(path, updated).expect("write the results");
}
