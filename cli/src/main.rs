//! `mkctl`: the mini-kubectl (see the crate docs and `mkctl --help`).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::commands::Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(cli::commands::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(cli::errors::CliError::Silent) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
