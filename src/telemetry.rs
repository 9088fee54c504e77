//! Structured logs: human-readable text by default, one JSON object per line when asked.

use std::io::IsTerminal;

use anyhow::Context;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{LogArgs, LogFormat};

/// Installs the subscriber; a filter that does not parse is an error, never a silent default.
pub fn init(args: &LogArgs) -> anyhow::Result<()> {
    check_filter(&args.log)?;
    let filter = EnvFilter::builder().parse(&args.log).with_context(|| {
        format!("OMEGA_LOG / --log {:?} is not a valid log filter (e.g. `info,omega=debug`)", args.log)
    })?;
    let registry = tracing_subscriber::registry().with(filter);
    // Logs go to stderr so that commands can print results (keys, descriptors) on stdout.
    match args.log_format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            )
            .init(),
        // Colours only for a person at a terminal: escape codes in a file or a log collector
        // are noise around every field.
        LogFormat::Text => {
            registry.with(fmt::layer().with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr)).init()
        }
    }
    Ok(())
}

/// EnvFilter reads a bare word as a target to trace (`verbose` would trace a target that does
/// not exist and leave Omega's own logs off): a directive without `=` must be a level, or a
/// module path (`omega::delivery`).
fn check_filter(filter: &str) -> anyhow::Result<()> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    for directive in filter.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=')
            && !directive.contains("::")
            && !directive.contains('[')
            && !LEVELS.contains(&directive.to_ascii_lowercase().as_str())
        {
            anyhow::bail!(
                "OMEGA_LOG / --log {filter:?}: {directive:?} is neither a level ({}) nor `target=level`",
                LEVELS.join(", ")
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_are_checked() {
        for good in ["info", "INFO", "info,omega=debug", "omega::delivery", "warn,sqlx=off", ""] {
            assert!(super::check_filter(good).is_ok(), "{good:?}");
            assert!(tracing_subscriber::EnvFilter::builder().parse(good).is_ok(), "{good:?}");
        }
        for bad in ["verbose", "info,loud"] {
            assert!(super::check_filter(bad).is_err(), "{bad:?}");
        }
        assert!(tracing_subscriber::EnvFilter::builder().parse("omega=loud").is_err());
    }
}
