//! Nodes behind Sentinel through a failover: the primary killed, paused, or demoted under the
//! nodes' open connections, or paused past a failover and resumed, still a primary. Sessions
//! survive, nothing hangs, nothing stays on an old primary, and once Sentinel names the new
//! primary the nodes serve again, and write only to it, within about a second.
//!
//! Each test runs one node per session store on one topology (a primary, two replicas, three
//! sentinels, real processes). A failover takes ~2 s with the teaching settings; the bounds
//! tell a hang or a node stuck on the old primary from a slow machine, and the figures are
//! printed (`--no-capture`).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cluster_kit::{wait_for, Member, SentinelTopology};
use common::{Browser, Node, NodeOptions, Reply};

const FAILOVER_LIMIT: Duration = Duration::from_secs(15);
/// An answer, not a hang: the node's operation timeout is 500 ms.
const BOUND: Duration = Duration::from_secs(3);
/// From Sentinel naming the new primary to the node serving from it. The node is built for
/// ~0.1 s (it asks again every 100 ms while it has no primary); a debug build on two busy
/// cores gets slack.
const SERVE_AGAIN_BOUND: Duration = Duration::from_secs(2);
/// A node without a primary does not wait for one: well under the 500 ms timeout.
const AT_ONCE: Duration = Duration::from_millis(400);
/// From an old primary resuming (still a primary) to the nodes writing to its successor
/// only. The nodes ask the sentinels every second, a round taking at most two 500 ms
/// timeouts; a debug build on two busy cores gets slack. Sentinel itself demotes the old
/// primary only ~10 s after it resumes.
const MOVE_BOUND: Duration = Duration::from_secs(3);
/// How long the nodes are watched after they moved, for one going back.
const STAY_WATCH: Duration = Duration::from_secs(1);

/// One node per session store, with the same session key.
fn nodes(topology: &SentinelTopology) -> Vec<Node> {
    ["redis", "redis-versioned"]
        .into_iter()
        .map(|store| {
            NodeOptions::behind_sentinel(store, topology)
                .env("SESSION_STORE", store)
                .start()
        })
        .collect()
}

/// A user per node, with a session counter of 1 and an atomic counter of 3, all of it on
/// every replica.
fn users_with_counters(topology: &SentinelTopology, nodes: &[Node]) -> Vec<Browser> {
    let browsers = nodes
        .iter()
        .map(|node| {
            let mut browser = Browser::logged_in(node, &format!("user-of-{}", node.node_id));
            assert_eq!(browser.post(node, "/counter/incr").status, 200);
            for _ in 0..3 {
                assert_eq!(browser.post(node, "/counter/incr?mode=atomic").status, 200);
            }
            browser
        })
        .collect();
    assert!(topology.wait_for_replicas_in_sync(BOUND));
    browsers
}

/// What the user had before the failover is there after it (a session counter of 1, an
/// atomic counter of `atomic`), and can be changed.
fn assert_state_survived(node: &Node, browser: &mut Browser, atomic: i64) {
    let whoami = browser.get(node, "/whoami");
    assert_eq!(
        whoami.body["user"],
        format!("user-of-{}", node.node_id),
        "{}",
        whoami.text
    );
    assert_eq!(whoami.body["counter"], 1);
    assert_eq!(
        browser.get(node, "/counter?mode=atomic").body["counter"],
        atomic
    );
    assert_eq!(browser.post(node, "/counter/incr").body["counter"], 2);
    assert_eq!(
        browser.post(node, "/counter/incr?mode=atomic").body["counter"],
        atomic + 1
    );
    assert_eq!(browser.get(node, "/readyz").status, 200);
}

/// Reads `/whoami` over and over (every 10 ms, for at most 30 s) until told to stop, keeping
/// every reply: requests in flight when the primary goes, and the first one served after.
struct Reader {
    stop: AtomicBool,
    replies: Mutex<Vec<(Instant, Reply)>>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            stop: AtomicBool::new(false),
            replies: Mutex::new(Vec::new()),
        }
    }

    fn run(&self, node: &Node, cookie: Option<String>) {
        let mut browser = Browser::with_cookie(cookie);
        let started = Instant::now();
        while !self.stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
            let reply = browser.get(node, "/whoami");
            self.replies.lock().unwrap().push((Instant::now(), reply));
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every reply was a 200 or a fast 503, and the first 200 after `since`.
    fn first_served_after(&self, node: &Node, since: Instant) -> Option<Instant> {
        let replies = self.replies.lock().unwrap();
        for (_, reply) in replies.iter() {
            assert!(
                reply.status == 200 || reply.status == 503,
                "{}: {} {}",
                node.node_id,
                reply.status,
                reply.text
            );
            assert!(
                reply.elapsed < BOUND,
                "{} took {:?}",
                node.node_id,
                reply.elapsed
            );
            if reply.status == 503 {
                assert_eq!(reply.header("retry-after"), Some("1"));
            }
        }
        replies
            .iter()
            .find(|(at, reply)| *at > since && reply.status == 200)
            .map(|(at, _)| *at)
    }
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
fn millis_between(from: Instant, to: Instant) -> i128 {
    if to >= from {
        (to - from).as_millis() as i128
    } else {
        -((from - to).as_millis() as i128)
    }
}

#[test]
fn sessions_survive_a_killed_primary_and_the_nodes_serve_again_within_a_second() {
    let mut topology = SentinelTopology::start();
    let nodes = nodes(&topology);
    let mut browsers = users_with_counters(&topology, &nodes);
    let readers: Vec<Reader> = nodes.iter().map(|_| Reader::new()).collect();

    std::thread::scope(|scope| {
        for ((node, reader), browser) in nodes.iter().zip(&readers).zip(&browsers) {
            let cookie = browser.cookie.clone();
            scope.spawn(move || reader.run(node, cookie));
        }
        std::thread::sleep(Duration::from_millis(100));
        topology.kill(Member::Redis(0));
        let killed = Instant::now();
        let new_primary = topology
            .wait_for_failover(0, FAILOVER_LIMIT)
            .expect("Sentinel promotes a replica");
        let announced = Instant::now();
        let served_again = wait_for(SERVE_AGAIN_BOUND, || {
            let served: Vec<Instant> = nodes
                .iter()
                .zip(&readers)
                .filter_map(|(node, reader)| reader.first_served_after(node, killed))
                .collect();
            (served.len() == nodes.len()).then_some(served)
        });
        for reader in &readers {
            reader.stop.store(true, Ordering::Relaxed);
        }
        let served_again = served_again.unwrap_or_else(|| {
            panic!("a node did not serve within {SERVE_AGAIN_BOUND:?} of the new primary")
        });
        eprintln!(
            "primary killed; redis {new_primary} announced after {} ms",
            killed.elapsed().as_millis() - announced.elapsed().as_millis()
        );
        for (node, served) in nodes.iter().zip(served_again) {
            eprintln!(
                "{}: serving {} ms after the kill, {} ms after the announcement",
                node.node_id,
                millis_between(killed, served),
                millis_between(announced, served)
            );
        }
    });

    for (node, browser) in nodes.iter().zip(&mut browsers) {
        assert_state_survived(node, browser, 3);
    }
}

/// A paused primary keeps its sockets open and answers nothing: the nodes' reads and writes
/// give up at the timeout, and the nodes let go of it then. From the first request that gave
/// up, they answer 503 at once instead of waiting on it again, and once Sentinel names its
/// successor they use it.
#[test]
fn a_paused_primary_is_let_go_and_the_nodes_serve_from_its_successor() {
    let topology = SentinelTopology::start();
    let nodes = nodes(&topology);
    let mut browsers = users_with_counters(&topology, &nodes);

    topology.pause(Member::Redis(0));
    for (node, browser) in nodes.iter().zip(&mut browsers) {
        let reply = browser.get(node, "/whoami");
        assert_eq!(reply.status, 503, "{}: {}", node.node_id, reply.text);
        assert!(reply.elapsed < BOUND, "{:?}", reply.elapsed);
        let ready = browser.get(node, "/readyz");
        assert_eq!(ready.status, 503);
        assert!(
            ready.elapsed < AT_ONCE,
            "{} still waits on the silent primary: /readyz took {:?}",
            node.node_id,
            ready.elapsed
        );
    }
    topology
        .wait_for_failover(0, FAILOVER_LIMIT)
        .expect("Sentinel promotes a replica while the primary is silent");
    let announced = Instant::now();
    for (node, browser) in nodes.iter().zip(&mut browsers) {
        let served = wait_for(SERVE_AGAIN_BOUND, || {
            (browser.get(node, "/whoami").status == 200).then(Instant::now)
        });
        let served = served.unwrap_or_else(|| {
            panic!(
                "{} did not serve within {SERVE_AGAIN_BOUND:?} of the new primary",
                node.node_id
            )
        });
        eprintln!(
            "{}: serving {} ms after the announcement",
            node.node_id,
            millis_between(announced, served)
        );
        assert_state_survived(node, browser, 3);
    }
}

/// The nodes hold open connections to the primary when it becomes a replica of the new one
/// without closing them (an operator's `REPLICAOF`; Sentinel's own reconfiguration also
/// closes client connections, but a node that reconnects to an old address meets the same
/// replica). Writes there are answered `READONLY`: the first one fails, and the node lets go
/// of that primary and finds the new one, instead of writing to a replica for ever.
#[test]
fn a_primary_demoted_under_the_nodes_is_let_go_at_its_first_read_only_answer() {
    let topology = SentinelTopology::start();
    let nodes = nodes(&topology);
    let mut browsers = users_with_counters(&topology, &nodes);

    let mut sentinel = redis_connection(topology.sentinel_port(0));
    redis::cmd("SENTINEL")
        .arg("FAILOVER")
        .arg(topology.master_name())
        .exec(&mut sentinel)
        .expect("SENTINEL FAILOVER");
    let new_primary = topology
        .wait_for_failover(0, FAILOVER_LIMIT)
        .expect("Sentinel promotes a replica");
    let mut old_primary = redis_connection(topology.redis_port(0));
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(topology.redis_port(new_primary))
        .exec(&mut old_primary)
        .expect("REPLICAOF");

    for (node, browser) in nodes.iter().zip(&mut browsers) {
        let mut refused = 0;
        let written = wait_for(BOUND, || {
            let reply = browser.post(node, "/counter/incr?mode=atomic");
            if reply.status != 200 {
                refused += 1;
            }
            (reply.status == 200).then_some(reply)
        });
        let written = written.unwrap_or_else(|| {
            panic!(
                "{} kept failing writes for {BOUND:?} after its primary was demoted",
                node.node_id
            )
        });
        eprintln!(
            "{}: {refused} write(s) refused before one succeeded",
            node.node_id
        );
        assert_eq!(written.body["counter"], 4);
        assert_state_survived(node, browser, 4);
    }
    let role: redis::Role = redis::cmd("ROLE").query(&mut old_primary).expect("ROLE");
    assert!(
        matches!(role, redis::Role::Replica { .. }),
        "the writes went to the new primary, not the old one: {role:?}"
    );
}

/// Where the nodes' writes went once the old primary resumed, per node.
#[derive(Default)]
struct WritesAfterResume {
    /// Acknowledged increments the old primary counted.
    to_old: u32,
    /// Of those, the ones after the first on the new primary: the node went back.
    to_old_after_moving: u32,
    to_new: u32,
    refused: u32,
    /// From the resume to the first increment on the new primary.
    moved_after: Option<Duration>,
}

/// What the new primary's counters are raised by, so that a reply tells which primary
/// counted the increment: the old one's counters stay below it.
const NEW_PRIMARY_BUMP: i64 = 1000;

/// The split brain of a primary paused past `down-after`: Sentinel promotes a replica, and the
/// old primary, resumed, is still a primary for several seconds, accepting writes it will drop
/// when Sentinel makes it a replica of the new one. Nothing fails a node that kept its
/// connections to it, so only asking the sentinels again moves the node. Each node increments
/// its counter every ~15 ms from the resume; within [`MOVE_BOUND`] every increment must land on
/// the new primary, and none on the old one after that. With `sentinel_paused`, the first
/// sentinel is silent throughout (SIGSTOP): asking it must not hold the nodes up.
fn writes_leave_a_resumed_old_primary(sentinel_paused: bool) {
    let topology = SentinelTopology::start();
    if sentinel_paused {
        topology.pause(Member::Sentinel(0));
    }
    let nodes = nodes(&topology);
    let mut browsers = users_with_counters(&topology, &nodes);

    // No request meanwhile: no node sees the old primary fail.
    topology.pause(Member::Redis(0));
    let new_primary = topology
        .wait_for_failover(0, FAILOVER_LIMIT)
        .expect("Sentinel promotes a replica while the primary is paused");
    let mut promoted = redis_connection(topology.redis_port(new_primary));
    let counters: Vec<String> = common::session_keys_in_redis(&topology.redis_url(new_primary))
        .into_iter()
        .filter(|key| key.contains("counter:"))
        .collect();
    assert_eq!(counters.len(), nodes.len(), "{counters:?}");
    for key in &counters {
        redis::cmd("INCRBY")
            .arg(key)
            .arg(NEW_PRIMARY_BUMP)
            .exec(&mut promoted)
            .expect("INCRBY on the new primary");
    }

    topology.resume(Member::Redis(0));
    let resumed = Instant::now();
    let mut old_primary = redis_connection(topology.redis_port(0));
    let role: redis::Role = redis::cmd("ROLE").query(&mut old_primary).expect("ROLE");
    assert!(
        matches!(role, redis::Role::Primary { .. }),
        "the old primary is still a primary when it resumes: {role:?}"
    );

    let mut writes: Vec<WritesAfterResume> = nodes.iter().map(|_| Default::default()).collect();
    // Until every node has moved and then stayed a second, or the bound is over.
    let watched = wait_for(MOVE_BOUND + STAY_WATCH, || {
        for ((node, browser), writes) in nodes.iter().zip(&mut browsers).zip(&mut writes) {
            let reply = browser.post(node, "/counter/incr?mode=atomic");
            match reply.body["counter"].as_i64() {
                Some(value) if reply.status == 200 && value > NEW_PRIMARY_BUMP => {
                    writes.to_new += 1;
                    writes.moved_after.get_or_insert(resumed.elapsed());
                }
                Some(_) if reply.status == 200 => {
                    writes.to_old += 1;
                    if writes.moved_after.is_some() {
                        writes.to_old_after_moving += 1;
                    }
                }
                _ => writes.refused += 1,
            }
        }
        let all_moved = writes
            .iter()
            .map(|writes| writes.moved_after)
            .collect::<Option<Vec<Duration>>>()?;
        let last = all_moved.into_iter().max()?;
        (resumed.elapsed() > last + STAY_WATCH).then_some(())
    });
    let role: redis::Role = redis::cmd("ROLE").query(&mut old_primary).expect("ROLE");
    for (node, writes) in nodes.iter().zip(&writes) {
        eprintln!(
            "{}: after the old primary resumed, {} increment(s) acknowledged by it, {} by the \
             new one, {} refused; first on the new one after {:?} (old primary now {})",
            node.node_id,
            writes.to_old,
            writes.to_new,
            writes.refused,
            writes.moved_after,
            if matches!(role, redis::Role::Primary { .. }) {
                "still a primary"
            } else {
                "a replica"
            },
        );
    }
    assert!(
        watched.is_some(),
        "a node still wrote to the old primary {MOVE_BOUND:?} after it resumed"
    );
    for (node, writes) in nodes.iter().zip(&writes) {
        let moved_after = writes.moved_after.unwrap_or(MOVE_BOUND + STAY_WATCH);
        assert!(
            moved_after <= MOVE_BOUND,
            "{} first wrote to the new primary {moved_after:?} after the old one resumed",
            node.node_id
        );
        assert_eq!(
            writes.to_old_after_moving, 0,
            "{} went back to the old primary",
            node.node_id
        );
    }
}

#[test]
fn a_primary_paused_past_a_failover_gets_no_writes_a_second_after_it_resumes() {
    writes_leave_a_resumed_old_primary(false);
}

/// Every sentinel is asked at once, each within the operation timeout: a silent one costs the
/// recheck one timeout, never a stall.
#[test]
fn a_paused_sentinel_does_not_hold_the_nodes_on_a_resumed_old_primary() {
    writes_leave_a_resumed_old_primary(true);
}

fn redis_connection(port: u16) -> redis::Connection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).expect("URL");
    client
        .get_connection_with_timeout(BOUND)
        .expect("connect to a topology process")
}
