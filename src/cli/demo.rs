//! `signgate demo`: run the embedded demo until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use super::logs::init_tracing;
use super::signals::Signals;
use super::{EXIT_OK, EXIT_USAGE};
use crate::demo::Demo;

/// Starts the stand-in CDN, the gallery and the gateway on `listen`, and prints where to look.
pub fn run(listen: SocketAddr, log_format: crate::config::LogFormat) -> ExitCode {
    init_tracing(log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("signgate: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    runtime.block_on(async {
        let demo = match Demo::start(listen).await {
            Ok(demo) => demo,
            Err(e) => {
                eprintln!("signgate: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let signals = match Signals::install() {
            Ok(signals) => signals,
            Err(e) => {
                eprintln!("signgate: cannot catch SIGINT, SIGTERM and SIGHUP: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        println!("signgate demo: open http://{}/", demo.gateway);
        println!(
            "  the gallery site (no secret, bare CDN URLs): http://{}/",
            demo.site
        );
        println!(
            "  the stand-in CDN (refuses unsigned URLs):     http://{}/",
            demo.cdn
        );
        println!(
            "  the admin listener (/healthz, /readyz, /metrics, status page): http://{}/",
            demo.admin
        );
        println!(
            "  a second gateway, a verify route in front of a folder: http://{}/ (the folder's own file server: http://{}/)",
            demo.verify, demo.folder
        );
        println!(
            "  a stand-in S3-compatible store (serves only SigV4 presigned URLs): http://{}/ (the gateway presigns at http://{}{}/KEY)",
            demo.s3,
            demo.gateway,
            crate::demo::DEMO_S3_ROUTE
        );
        println!("  secrets were generated for this run only; Ctrl-C to stop");
        if let Some(command) = demo.explain_command() {
            // The secret is random per run and signs for nothing but this demo: safe to show.
            println!("  to decode and check a signed URL (paste any from the gallery in place of this one):");
            println!("    {command}");
        }
        match demo.serve(signals.recv()).await {
            Ok(()) => ExitCode::from(EXIT_OK),
            Err(e) => {
                eprintln!("signgate: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        }
    })
}
