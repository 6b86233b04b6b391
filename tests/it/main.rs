//! The integration tests, in one binary: one link step instead of one per file, and the
//! monomorphised client and server code built once. Each module is one area; `support` holds
//! the stand-in CDN, the gateway harness and the raw-socket helpers they share.
//!
//! Run one area with `cargo test --test it proxy::`. Checks that measure the whole process
//! (resident memory, descriptors) live in `tests/memory.rs`, a binary of their own.

#[path = "../support/mod.rs"]
mod support;

mod admin;
mod authorize;
mod bodies;
mod browser;
mod canary;
mod cdn_schemes;
mod cli;
mod config;
mod demo;
mod deploy;
mod explain;
mod external;
mod faults;
mod forwarding;
mod hostile;
mod limits;
mod logging;
mod pool;
mod properties;
mod proxy;
mod redirect;
mod reload;
mod safe_defaults;
mod scale_out;
mod scheme_akamai;
mod scheme_cloudfront;
mod scheme_s3;
mod schemes;
mod signing;
mod site;
mod tls;
mod upload_path;
mod upstream;
mod vectors;
mod verify;
mod websocket;
