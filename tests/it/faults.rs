//! A fault-injecting upstream: every fault gives the client a bounded, correct outcome (502,
//! 504, or a cut connection once the body has begun). That faulted requests leak nothing is
//! checked in `tests/memory.rs`, which measures the whole process.

use crate::support;

use std::time::{Duration, Instant};

use http::StatusCode;
use support::faulty::*;
use support::*;

#[tokio::test]
async fn every_upstream_fault_has_a_bounded_correct_outcome() {
    use UpstreamFault::*;
    let cases = [
        (AcceptThenClose, StatusCode::BAD_GATEWAY, true),
        (ResetMidHeaders, StatusCode::BAD_GATEWAY, true),
        (Garbage, StatusCode::BAD_GATEWAY, true),
        (HugeHeaders, StatusCode::BAD_GATEWAY, true),
        (SlowerThanTimeout, StatusCode::GATEWAY_TIMEOUT, true),
        // The body had begun: the status is gone, the connection is cut.
        (ResetMidBody, StatusCode::OK, false),
        (StallMidBody, StatusCode::OK, false),
        (Healthy, StatusCode::OK, true),
    ];
    for (fault, status, whole) in cases {
        let upstream = faulty_upstream(fault).await;
        let gateway = TestGateway::start(&fault_route(upstream)).await;
        let started = Instant::now();
        let seen = tokio::time::timeout(
            Duration::from_secs(5),
            outcome(&gateway.url(&format!("/img/{H}"))),
        )
        .await
        .unwrap_or_else(|_| panic!("{fault:?}: no outcome within 5 s"));
        assert_eq!(seen, (status, whole), "{fault:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{fault:?} took {:?}",
            started.elapsed()
        );
        // And the gateway serves normally afterwards.
        let healthy = TestGateway::start(&fault_route(faulty_upstream(Healthy).await)).await;
        assert_eq!(
            outcome(&healthy.url(&format!("/img/{H}"))).await,
            (StatusCode::OK, true)
        );
    }
}
