//! Omega's benchmark: every figure beside a baseline measured in the same run, on the same
//! machine, against real processes (the `omega` binary, Envoy with the project's config, the
//! database). It asserts nothing; it reports (markdown on stdout, JSON and an SVG chart in
//! `--out`).
//!
//! ```sh
//! cargo build --release --bins && target/release/omega-bench --database sqlite --scale full
//! ```
//!
//! P1 ingest, P2 inbox lists, P3 search, P4 dispatch, P5 transports, P6 footprint, P7 two
//! replicas, P8 live events, P9 outbound webhooks: see the README.

mod cpu;
mod dataset;
mod harness;
mod ingest_limit;
mod live;
mod phases;
mod report;
mod stats;
mod transports;
mod webhooks;

use std::path::PathBuf;

use clap::Parser;
use harness::{Backend, BenchDb};
use report::Report;

#[derive(Parser, Debug)]
#[command(about = "Omega benchmarks: figures beside a baseline measured in the same run")]
pub struct Cli {
    /// Databases to run on.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "sqlite,postgres")]
    database: Vec<Backend>,
    /// PostgreSQL server for the PostgreSQL runs (a fresh database is created on it and dropped).
    #[arg(long, env = "OMEGA_TEST_POSTGRES_URL", default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    postgres_url: String,
    /// Dataset size: full (1M conversations, 10M messages in one business), tiny (CI), or
    /// dispatch (P4's business at full size, the rest tiny: P4 figures without the hour that
    /// generating the full dataset takes).
    #[arg(long, default_value = "full")]
    scale: String,
    /// Phases to run (p1..p9), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "p1,p2,p3,p4,p5,p6,p7,p8,p9")]
    only: Vec<String>,
    /// Timed calls per latency figure.
    #[arg(long)]
    samples: Option<usize>,
    /// Messages per ingest and dispatch run.
    #[arg(long)]
    messages: Option<usize>,
    /// Worker counts to dispatch with.
    #[arg(long, value_delimiter = ',', default_value = "4,32")]
    workers: Vec<usize>,
    /// Where the report goes (report.md, report.json, inbox.svg).
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Directory for the SQLite database and logs (a temp dir under it is removed at the end).
    #[arg(long, default_value = "target/bench/work")]
    work_dir: PathBuf,
    /// Keep the generated dataset (under --work-dir/kept-<database>) for later runs.
    #[arg(long)]
    keep: bool,
    /// Run on the dataset an earlier `--keep` run left (skips generation).
    #[arg(long)]
    reuse: bool,
}

pub struct Settings {
    pub samples: usize,
    pub messages: usize,
    pub workers: Vec<usize>,
    pub tiny: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tiny = cli.scale == "tiny";
    let scale = match cli.scale.as_str() {
        "full" => dataset::Scale::full(),
        "tiny" => dataset::Scale::tiny(),
        "dispatch" => dataset::Scale::dispatch(),
        other => anyhow::bail!("unknown scale {other:?}: full, tiny or dispatch"),
    };
    let settings = Settings {
        samples: cli.samples.unwrap_or(if tiny { 10 } else { 200 }),
        messages: cli.messages.unwrap_or(if tiny { 40 } else { 4_000 }),
        workers: cli.workers.clone(),
        tiny,
    };
    let mut report = Report::new(&cli.scale, scale);
    std::fs::create_dir_all(&cli.work_dir)?;
    for backend in cli.database.iter().copied() {
        let dir = tempfile::tempdir_in(&cli.work_dir)?;
        let kept = std::path::absolute(cli.work_dir.join(format!("kept-{backend:?}").to_lowercase()))?;
        let (mut db, dataset) = if cli.reuse {
            let url = std::fs::read_to_string(kept.join("url"))?;
            let dataset: dataset::Dataset = serde_json::from_slice(&std::fs::read(kept.join("dataset.json"))?)?;
            (BenchDb::existing(backend, url.trim().to_owned()), Some(dataset))
        } else if cli.keep {
            std::fs::create_dir_all(&kept)?;
            (BenchDb::fresh(backend, &kept, &cli.postgres_url).await?, None)
        } else {
            (BenchDb::fresh(backend, dir.path(), &cli.postgres_url).await?, None)
        };
        eprintln!("== {} ==", backend.name());
        let result = phases::run_all(&db, dir.path(), scale, &settings, &cli.only, dataset, &mut report).await;
        if cli.keep {
            if let Ok(data) = &result {
                std::fs::write(kept.join("url"), &db.url)?;
                std::fs::write(kept.join("dataset.json"), serde_json::to_vec(data)?)?;
            }
            db.keep();
        }
        db.drop_now().await?;
        result?;
        // Each database's figures are saved as soon as they exist.
        report.write(&cli.out)?;
    }
    print!("{}", report.markdown());
    report.write(&cli.out)?;
    eprintln!("report written to {}", cli.out.display());
    Ok(())
}
