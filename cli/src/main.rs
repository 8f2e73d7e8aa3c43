//! `mkctl`: not built yet (issue 8).

fn main() -> std::process::ExitCode {
    eprintln!("mkctl: not implemented yet; see issue 8");
    std::process::ExitCode::from(2)
}
