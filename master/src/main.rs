//! `mkube-master`: not built yet (issue 7).

fn main() -> std::process::ExitCode {
    eprintln!("mkube-master: not implemented yet; see issue 7");
    std::process::ExitCode::from(2)
}
