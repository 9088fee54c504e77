//! The report: one row per figure, each beside its same-run baseline and the target it is held
//! to; markdown for people, JSON for tools, and an SVG chart of the inbox latencies.

use std::{fmt::Write as _, path::Path};

use serde::Serialize;

use crate::{dataset::Scale, harness::Backend};

#[derive(Serialize, Clone)]
pub struct Row {
    pub phase: &'static str,
    pub database: Backend,
    pub figure: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: String,
    pub baseline_value: f64,
    /// value / baseline_value.
    pub ratio: f64,
    pub target: String,
    /// Whether the target is met (None: informational).
    pub met: Option<bool>,
}

#[derive(Serialize)]
pub struct Report {
    pub scale_name: String,
    pub scale: Scale,
    pub machine: String,
    pub notes: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    pub fn new(scale_name: &str, scale: Scale) -> Self {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned()))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024 / 1024);
        Self {
            scale_name: scale_name.to_owned(),
            scale,
            machine: format!("{cpus} CPUs, {memory} GiB"),
            notes: Vec::new(),
            rows: Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        phase: &'static str,
        database: Backend,
        figure: impl Into<String>,
        (value, unit): (f64, &'static str),
        (baseline, baseline_value): (impl Into<String>, f64),
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        let row = Row {
            phase,
            database,
            figure: figure.into(),
            value,
            unit,
            baseline: baseline.into(),
            baseline_value,
            ratio: value / baseline_value,
            target: target.into(),
            met,
        };
        eprintln!(
            "  {} {}: {:.2} {} (baseline {}: {:.2}, ratio {:.2}) {}",
            row.phase,
            row.figure,
            row.value,
            row.unit,
            row.baseline,
            row.baseline_value,
            row.ratio,
            match row.met {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "",
            }
        );
        self.rows.push(row);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("  note: {text}");
        self.notes.push(text);
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let s = &self.scale;
        let _ = writeln!(
            out,
            "## Omega benchmark ({} scale; {})\n\nDataset: one business with {} conversations and {} messages, one with {} and {}, {} more with {} and {} each.\n",
            self.scale_name,
            self.machine,
            s.large_conversations,
            s.large_messages,
            s.small_conversations,
            s.small_messages,
            s.other_businesses,
            s.other_conversations,
            s.other_messages
        );
        let _ = writeln!(
            out,
            "| phase | db | figure | value | baseline (same run) | baseline value | ratio | target | met |"
        );
        let _ = writeln!(out, "|---|---|---|---:|---|---:|---:|---|:-:|");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} {} | {} | {} | {:.2} | {} | {} |",
                r.phase,
                r.database.name(),
                r.figure,
                fmt(r.value),
                r.unit,
                r.baseline,
                fmt(r.baseline_value),
                r.ratio,
                r.target,
                match r.met {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "",
                }
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "\n- {note}");
        }
        out
    }

    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("report.md"), self.markdown())?;
        std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(self)?)?;
        std::fs::write(dir.join("inbox.svg"), self.inbox_chart())?;
        Ok(())
    }

    /// Grouped bars: each inbox (P2) and search (P3) figure's p99 at the large business beside
    /// its baseline (the small business's p99, or the target), per database.
    fn inbox_chart(&self) -> String {
        let rows: Vec<&Row> = self.rows.iter().filter(|r| r.phase == "P2" || r.phase == "P3").collect();
        let bar = 14.0;
        let gap = 10.0;
        let label_w = 360.0;
        let plot_w = 420.0;
        let height = 40.0 + rows.len() as f64 * (2.0 * bar + gap) + 30.0;
        let max = rows.iter().flat_map(|r| [r.value, r.baseline_value]).fold(1.0_f64, f64::max);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"10\" y=\"20\" font-size=\"14\">Inbox and search latency, ms (dark: figure, light: same-run baseline)</text>\n",
            label_w + plot_w + 80.0
        );
        for (i, r) in rows.iter().enumerate() {
            let y = 40.0 + i as f64 * (2.0 * bar + gap);
            let w = |v: f64| (v / max * plot_w).max(1.0);
            let _ = writeln!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} · {}</text>",
                label_w - 6.0,
                y + bar + 3.0,
                r.database.name(),
                escape(&r.figure)
            );
            let _ = writeln!(
                svg,
                "<rect x=\"{label_w}\" y=\"{y}\" width=\"{:.1}\" height=\"{bar}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{}\">{}</text>",
                w(r.value),
                if r.met == Some(false) { "#c0392b" } else { "#2c3e50" },
                label_w + w(r.value) + 4.0,
                y + bar - 3.0,
                fmt(r.value)
            );
            let _ = writeln!(
                svg,
                "<rect x=\"{label_w}\" y=\"{}\" width=\"{:.1}\" height=\"{bar}\" fill=\"#aab7c4\"/><text x=\"{:.1}\" y=\"{}\">{} ({})</text>",
                y + bar,
                w(r.baseline_value),
                label_w + w(r.baseline_value) + 4.0,
                y + 2.0 * bar - 3.0,
                fmt(r.baseline_value),
                escape(&r.baseline)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}

fn fmt(v: f64) -> String {
    if v >= 100.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
