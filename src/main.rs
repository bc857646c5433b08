//! The `oz-agent-worker` binary: parse and validate the config, set up logging, wire the
//! worker, run until a signal, and map the outcome to an exit code. The runtime's own shutdown
//! is bounded, so a blocking call still running never delays the exit.

use std::process::ExitCode;

use oz_agent_worker::adapters::host::HostEnv;
use oz_agent_worker::app::config::{self, Invocation};
use oz_agent_worker::app::{bootstrap, logging, shutdown};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one read of the process environment: a snapshot every other part gets"
    )]
    let process_env = HostEnv::from_pairs(std::env::vars_os());
    let env = |name: &str| process_env.var(name);
    let loaded = match config::load(std::env::args_os(), &env) {
        Ok(loaded) => loaded,
        Err(err) if err.is_informational() => {
            println!("{err}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("oz-agent-worker: {err}");
            return ExitCode::from(err.exit_code());
        }
    };
    let config = loaded.invocation.config().clone();
    if let Invocation::Check(_) = loaded.invocation {
        for warning in &loaded.warnings {
            eprintln!("warning: {warning}");
        }
        print!("{}", config::effective_config_text(&config));
        return ExitCode::SUCCESS;
    }
    let no_color = process_env.get("NO_COLOR").is_some_and(|v| !v.is_empty());
    logging::init(config.log_level, config.log_format, no_color);
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let root = CancellationToken::new();
        let app = match bootstrap::build(&config, &process_env).await {
            Ok(app) => app,
            Err(err) => {
                tracing::error!("{err:#}");
                return ExitCode::FAILURE;
            }
        };
        tokio::select! {
            result = app.run(root.clone()) => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(err) => {
                    tracing::error!("{err:#}");
                    ExitCode::FAILURE
                }
            },
            second = shutdown::watch_signals(root.clone()) => match second {
                Ok(signal) => ExitCode::from(signal.exit_code()),
                Err(err) => {
                    tracing::error!("cannot install signal handlers: {err}");
                    ExitCode::FAILURE
                }
            },
        }
    });
    shutdown::stop_runtime(runtime);
    code
}
