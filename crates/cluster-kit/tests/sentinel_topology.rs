//! The Sentinel topology does what the failover tests and clusterctl rely on: Sentinel really
//! replaces a killed or paused primary, the data the replicas had survives, the old primary
//! comes back as a replica, and the options (passwords, `min-replicas-to-write`) take effect.
//!
//! A failover takes ~2 s with the teaching settings; the limits tell a failover that never
//! happens from a slow one on a busy machine.

use std::time::{Duration, Instant};

use cluster_kit::{wait_for, Member, MinReplicas, SentinelOptions, SentinelTopology};

const FAILOVER_LIMIT: Duration = Duration::from_secs(15);
/// Sentinel turns a returning old primary into a replica after its failover timeout (3 s) and
/// its next look at the instance (up to 10 s).
const REJOIN_LIMIT: Duration = Duration::from_secs(30);

fn connection(url: &str) -> redis::Connection {
    let client = redis::Client::open(url).expect("redis URL");
    let connection = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect to a topology instance");
    connection
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("read timeout");
    connection
}

/// Writes `key` on the primary and waits until both replicas have it.
fn write_replicated(topology: &SentinelTopology, primary: usize, key: &str) {
    let mut primary = connection(&topology.redis_url(primary));
    redis::cmd("SET")
        .arg(key)
        .arg("kept")
        .exec(&mut primary)
        .expect("SET");
    let confirmed: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(2000)
        .query(&mut primary)
        .expect("WAIT");
    assert_eq!(confirmed, 2, "both replicas have the write");
}

fn value_on(topology: &SentinelTopology, index: usize, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut connection(&topology.redis_url(index)))
        .expect("GET")
}

#[test]
fn a_killed_primary_is_replaced_and_comes_back_as_a_replica() {
    let mut topology = SentinelTopology::start();
    assert_eq!(topology.primary(), Some(0));
    assert_eq!(topology.replicas(), vec![1, 2]);
    write_replicated(&topology, 0, "before");

    topology.kill(Member::Redis(0));
    let killed = Instant::now();
    let new_primary = topology
        .wait_for_failover(0, FAILOVER_LIMIT)
        .expect("Sentinel promotes a replica");
    eprintln!("failover announced {:?} after the kill", killed.elapsed());
    assert_ne!(new_primary, 0);
    assert_eq!(topology.primary(), Some(new_primary));
    assert_eq!(
        value_on(&topology, new_primary, "before").as_deref(),
        Some("kept")
    );
    let other = 3 - new_primary;
    assert!(
        topology.wait_for_replica(other, FAILOVER_LIMIT),
        "the other replica follows the new primary"
    );

    topology.restart(Member::Redis(0)).expect("restart");
    let restarted = Instant::now();
    assert!(
        topology.wait_for_replica(0, REJOIN_LIMIT),
        "Sentinel turns the old primary into a replica"
    );
    eprintln!(
        "old primary a replica {:?} after its restart",
        restarted.elapsed()
    );
    assert_eq!(
        topology.primary(),
        Some(new_primary),
        "and does not take over"
    );
    assert_eq!(
        value_on(&topology, 0, "before").as_deref(),
        Some("kept"),
        "it copied the new primary's data"
    );
}

/// A paused primary keeps its sockets and answers nothing, as behind a broken network: Sentinel
/// replaces it all the same, and every sentinel names the new primary, the old one answering
/// again or not (Sentinel turns it into a replica after a few seconds, as after a restart).
#[test]
fn a_paused_primary_is_replaced_while_it_is_silent() {
    let topology = SentinelTopology::start();
    topology.pause(Member::Redis(0));
    let new_primary = topology
        .wait_for_failover(0, FAILOVER_LIMIT)
        .expect("Sentinel promotes a replica while the primary is silent");
    topology.resume(Member::Redis(0));
    let agreed = wait_for(FAILOVER_LIMIT, || topology.agreed_primary());
    assert_eq!(agreed, Some(new_primary));
}

#[test]
fn a_primary_with_min_replicas_refuses_writes_while_its_replicas_are_silent() {
    let topology = SentinelTopology::start_with(SentinelOptions {
        min_replicas: Some(MinReplicas {
            replicas: 1,
            max_lag_secs: 1,
        }),
        ..SentinelOptions::default()
    });
    let mut primary = connection(&topology.redis_url(0));
    let write = |primary: &mut redis::Connection| {
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .exec(primary)
            .map_err(|err| err.code().unwrap_or_default().to_string())
    };
    assert_eq!(write(&mut primary), Ok(()));

    topology.pause(Member::Redis(1));
    topology.pause(Member::Redis(2));
    let refused = wait_for(Duration::from_secs(10), || write(&mut primary).err());
    assert_eq!(refused.as_deref(), Some("NOREPLICAS"));

    topology.resume(Member::Redis(1));
    let accepted = wait_for(Duration::from_secs(10), || write(&mut primary).ok());
    assert!(
        accepted.is_some(),
        "writes are accepted again with a replica back"
    );
}

#[test]
fn passwords_guard_the_instances_and_the_sentinels() {
    let topology = SentinelTopology::start_with(SentinelOptions {
        redis_password: Some("redis-secret".to_string()),
        sentinel_password: Some("sentinel-secret".to_string()),
        ..SentinelOptions::default()
    });
    assert_eq!(topology.primary(), Some(0), "the probes authenticate");
    assert_eq!(value_on(&topology, 0, "absent"), None);

    let without_password = |port: u16| {
        let mut connection = connection(&format!("redis://127.0.0.1:{port}"));
        redis::cmd("PING")
            .query::<String>(&mut connection)
            .map_err(|err| err.code().unwrap_or_default().to_string())
    };
    assert_eq!(
        without_password(topology.redis_port(0)),
        Err("NOAUTH".to_string())
    );
    assert_eq!(
        without_password(topology.sentinel_port(0)),
        Err("NOAUTH".to_string())
    );
}

fn min_replicas_on(topology: &SentinelTopology, index: usize) -> String {
    let (_name, value): (String, String) = redis::cmd("CONFIG")
        .arg("GET")
        .arg("min-replicas-to-write")
        .query(&mut connection(&topology.redis_url(index)))
        .expect("CONFIG GET");
    value
}

#[test]
fn min_replicas_set_while_running_applies_to_every_instance_and_can_be_lifted() {
    let topology = SentinelTopology::start();
    let mut primary = connection(&topology.redis_url(0));
    let write = |primary: &mut redis::Connection| {
        redis::cmd("SET")
            .arg("k")
            .arg("v")
            .exec(primary)
            .map_err(|err| err.code().unwrap_or_default().to_string())
    };

    topology
        .set_min_replicas(Some(MinReplicas {
            replicas: 1,
            max_lag_secs: 1,
        }))
        .expect("set on every instance");
    for index in 0..3 {
        assert_eq!(min_replicas_on(&topology, index), "1", "redis {index}");
    }
    topology.pause(Member::Redis(1));
    topology.pause(Member::Redis(2));
    let refused = wait_for(Duration::from_secs(10), || write(&mut primary).err());
    assert_eq!(refused.as_deref(), Some("NOREPLICAS"));
    topology.resume(Member::Redis(1));
    topology.resume(Member::Redis(2));
    assert!(
        wait_for(Duration::from_secs(10), || write(&mut primary).ok()).is_some(),
        "writes are accepted again with the replicas back"
    );

    topology
        .set_min_replicas(None)
        .expect("lift on every instance");
    for index in 0..3 {
        assert_eq!(min_replicas_on(&topology, index), "0", "redis {index}");
    }
    topology.pause(Member::Redis(1));
    topology.pause(Member::Redis(2));
    // Once the primary has not heard from either replica for longer than the lag that refused
    // writes above: lifted, the rule no longer does.
    let silent = wait_for(Duration::from_secs(10), || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut primary)
            .ok()?;
        let lags: Vec<u64> = info
            .lines()
            .filter_map(|line| line.split("lag=").nth(1))
            .filter_map(|lag| {
                lag.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        (lags.len() == 2 && lags.iter().all(|&lag| lag >= 2)).then_some(())
    });
    let lifted = write(&mut primary);
    topology.resume(Member::Redis(1));
    topology.resume(Member::Redis(2));
    assert!(silent.is_some(), "the primary saw its replicas go silent");
    assert_eq!(lifted, Ok(()), "no replica needed once lifted");
}
