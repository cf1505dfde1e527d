//! SIGTERM: not ready at once, still serving during the drain, then exit 0.

mod common;

use std::time::{Duration, Instant};

use cluster_kit::{wait_for, RedisServer};
use common::{Browser, NodeOptions};
use serde_json::json;

const DRAIN: Duration = Duration::from_millis(3000);
/// Readiness turns 503 at once after SIGTERM; the bound catches "not at all"
/// or "only at the end of the drain", not a slow debug build on busy cores.
const READINESS_BOUND: Duration = Duration::from_millis(1000);

#[test]
fn sigterm_drains_then_exits_cleanly() {
    let redis = RedisServer::start();
    let mut node = NodeOptions::new("a", &redis.url())
        .drain_ms(DRAIN.as_millis() as u64)
        .start();
    let mut user = Browser::logged_in(&node, "alice");
    let mut balancer = Browser::new();
    assert_eq!(balancer.get(&node, "/readyz").status, 200);

    node.process.signal(libc::SIGTERM);
    let signalled = Instant::now();
    let draining = wait_for(READINESS_BOUND, || {
        let reply = balancer.get(&node, "/readyz");
        (reply.status == 503).then_some(reply)
    });
    let draining =
        draining.unwrap_or_else(|| panic!("/readyz still 200 {READINESS_BOUND:?} after SIGTERM"));
    assert_eq!(draining.body, json!({"node": "a", "status": "draining"}));

    // Until the drain is over, everything else is served as usual, on kept
    // connections and on new ones alike.
    let mut served = 0;
    while signalled.elapsed() < DRAIN - Duration::from_millis(300) {
        let incr = user.post(&node, "/counter/incr");
        assert_eq!(incr.status, 200, "during the drain: {}", incr.text);
        served += 1;
        assert_eq!(incr.body["counter"], served);
        assert_eq!(
            Browser::with_cookie(user.cookie.clone())
                .get(&node, "/whoami")
                .status,
            200
        );
        assert_eq!(balancer.get(&node, "/readyz").status, 503);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(served >= 5, "only {served} requests during the drain");
    assert!(
        node.process.is_running(),
        "the node must not exit before the drain is over"
    );

    // Clients close their idle connections, as a load balancer that stopped
    // routing here would; the server then has nothing left to finish.
    drop(user);
    drop(balancer);
    let status = node
        .process
        .wait_timeout(DRAIN + Duration::from_secs(5))
        .expect("the node must exit after the drain");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        signalled.elapsed() >= DRAIN,
        "exited before the drain was over"
    );
}
