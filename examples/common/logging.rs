//! Logs to stderr through `tracing`, at `info` unless `RUST_LOG` says otherwise.

pub(crate) fn init() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}
