//! The figures a benchmark records: printed with their goals, and merged into
//! `bench/results.json` with the machine and the date, so a change can be compared with the
//! last recorded run. Shared by the engine benchmark (`benches/engine.rs`) and the AWS one
//! (`control/aws`'s ignored `aws_costs` test), which `scripts/bench` both runs.

use std::path::Path;
use std::process::Command;

/// The figures of this run, by name: value, unit, and the goal where one is set.
#[derive(Default)]
pub struct Figures(serde_json::Map<String, serde_json::Value>);

impl Figures {
    pub fn record(&mut self, name: &str, value: f64, unit: &str, goal: Option<&str>) {
        let value = significant(value, 4);
        if let Some(goal) = goal {
            println!("  {name}: {value} {unit} (goal: {goal})");
        }
        self.0.insert(
            name.to_owned(),
            serde_json::json!({ "value": value, "unit": unit, "goal": goal }),
        );
    }

    /// Merges this run's figures into `path` with the machine and the date.
    pub fn save(self, path: &Path) {
        let mut all: serde_json::Value = std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_else(|| serde_json::json!({ "figures": {} }));
        for (name, figure) in self.0 {
            all["figures"][name] = figure;
        }
        all["machine"] = machine().into();
        all["measured_at"] = today().into();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, serde_json::to_string_pretty(&all).unwrap() + "\n").unwrap();
        println!("figures written to {}", path.display());
    }
}

/// Cores, memory and CPU model of this machine.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = (cpuinfo.lines())
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_owned();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: f64 = (meminfo.lines())
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {:.0} GiB, {model}", mem_kib / 1_048_576.0)
}

/// Today's date (UTC), `YYYY-MM-DD`, from `date`.
fn today() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `value` rounded to `digits` significant digits (28.649 → 28.65, 0.031249 → 0.03125).
fn significant(value: f64, digits: i32) -> f64 {
    if value == 0.0 || !value.is_finite() {
        return value;
    }
    let scale = 10f64.powi(digits - 1 - value.abs().log10().floor() as i32);
    (value * scale).round() / scale
}
