//! `mkube-pki`: creates a cluster's CA and tokens, issues member
//! certificates, and rotates tokens, in a PKI directory (see the library doc).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

/// The cluster CA, member certificates and tokens.
#[derive(Parser)]
#[command(
    name = "mkube-pki",
    version,
    after_help = "Examples:\n  mkube-pki init /etc/mkube/pki\n  mkube-pki issue /etc/mkube/pki --name m0 --group mkube:masters --host 10.0.0.4 --host m0\n  mkube-pki token add /etc/mkube/pki user      # rotation, step 1\n  mkube-pki token retire /etc/mkube/pki user   # rotation, step 2"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Creates the CA (ca.crt, ca.key) and one token per role; never
    /// overwrites an existing CA.
    Init {
        /// The PKI directory.
        dir: PathBuf,
        /// The cluster's name, in the CA's subject.
        #[arg(long, default_value = "mkube")]
        cluster: String,
    },
    /// Issues `<name>.crt` and `<name>.key` signed by the directory's CA.
    Issue {
        /// The PKI directory (holding ca.crt and ca.key).
        dir: PathBuf,
        /// The member's name (the certificate's common name).
        #[arg(long)]
        name: String,
        /// Its group: mkube:masters, mkube:workers or mkube:viewers (Prometheus).
        #[arg(long, value_parser = ["mkube:masters", "mkube:workers", "mkube:viewers"])]
        group: String,
        /// A DNS name or IP address clients dial it at (repeatable).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u64,
        /// Where to write the files (default: the PKI directory).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Token rotation.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Puts a new token first in the role's file and prints it: servers
    /// accept old and new from their next reload (within a few seconds).
    Add {
        /// The PKI directory.
        dir: PathBuf,
        /// admin, user, viewer, join or member.
        role: String,
    },
    /// Keeps only the newest token of the role: the older ones are refused
    /// from the servers' next reload.
    Retire {
        /// The PKI directory.
        dir: PathBuf,
        /// admin, user, viewer, join or member.
        role: String,
    },
}

fn main() -> Result<()> {
    match Args::parse().command {
        Command::Init { dir, cluster } => {
            let ca = pki::Ca::generate(&cluster)?;
            ca.write(&dir)?;
            pki::init_tokens(&dir)?;
            println!(
                "created the {cluster} cluster CA and tokens in {}",
                dir.display()
            );
        }
        Command::Issue {
            dir,
            name,
            group,
            hosts,
            days,
            out,
        } => {
            let ca = pki::Ca::load(&dir).context("loading the CA")?;
            let mut request = pki::Request::new(&name, &group, hosts);
            request.not_after = request.not_before + std::time::Duration::from_secs(days * 86_400);
            let issued = ca.issue(&request)?;
            let out = out.unwrap_or(dir);
            issued.write(&out, &name)?;
            println!("issued {}/{name}.crt ({group})", out.display());
        }
        Command::Token { action } => match action {
            TokenAction::Add { dir, role } => {
                let token = pki::add_token(&dir, &role)?;
                println!("{token}");
            }
            TokenAction::Retire { dir, role } => {
                let n = pki::retire_tokens(&dir, &role)?;
                println!("retired {n} {role} token(s)");
            }
        },
    }
    Ok(())
}
