//! `mkctl`: the mini-kubectl (see the crate docs and `mkctl --help`).

use std::process::ExitCode;

use clap::Parser;

/// The exit code of a process killed by SIGPIPE, as shells report it.
const BROKEN_PIPE_EXIT: i32 = 128 + 13;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, so printing to a closed pipe (`mkctl get pods |
    // head -1`) panics in `println!`; end quietly instead, as kubectl does.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Broken pipe") {
            std::process::exit(BROKEN_PIPE_EXIT);
        }
        default_hook(info);
    }));
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
