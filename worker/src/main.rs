//! `mkube-worker`: not built yet (issue 6).

fn main() -> std::process::ExitCode {
    eprintln!("mkube-worker: not implemented yet; see issue 6");
    std::process::ExitCode::from(2)
}
