//! Figures a fault test measured, printed and appended to `target/faults/figures.md` so that
//! `docs/reliability.md` states numbers a run produced.

use std::io::Write;

pub fn record(test: &str, figure: &str) {
    println!("[figure] {test}: {figure}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("faults");
    let _ = std::fs::create_dir_all(&dir);
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("figures.md"))
    {
        let mode = if crate::full() { "full" } else { "short" };
        let _ = writeln!(file, "- {test} ({mode}): {figure}");
    }
}
