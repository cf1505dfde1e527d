//! Finding the Redis primary through Sentinel, finding it again each time it is lost, and
//! noticing when Sentinel names another one while the node's still works.
//!
//! The protocol is the one Redis documents for Sentinel clients: ask the sentinels where the
//! primary is, connect to the address they give, and believe it only if that instance says
//! `ROLE` master (a sentinel cut off from its peers, or one that has not heard of a failover
//! yet, names an old primary). Every question, to a sentinel or to an instance, has the
//! operation timeout (`REDIS_TIMEOUT_MS`), and all the sentinels are asked at once, so a
//! paused sentinel costs one timeout, never a stall.
//!
//! Besides the address (`SENTINEL get-master-addr-by-name`), the node asks each sentinel for
//! the configuration epoch of its answer (`SENTINEL master`), Sentinel's version number of the
//! primary's address. Each failover is authorised by a majority of the sentinels under a new,
//! higher epoch, and a sentinel adopts a configuration only from a higher epoch. So among the
//! answers, the highest epoch is the newest configuration, and a sentinel that has not heard
//! of the last failover can only answer with an older one: the node tries the answers newest
//! first, and a stale sentinel never moves it back to an old primary.
//!
//! [`follow`] runs for the node's life, off the request path. Whenever the node has no primary
//! (at start, and after [`PrimaryPool::let_go`]) it asks, every [`RETRY_INTERVAL`] until an
//! answer holds, and installs the primary it found; requests never wait for it, they get a 503
//! at once. While the node has a primary, it asks again every [`RECHECK_INTERVAL`]: a primary
//! that fails the node is let go of at the first failure, but one that merely stopped being
//! *the* primary does not fail it. That is the split brain of a primary paused past
//! `down-after-milliseconds`: Sentinel promotes a replica, and when the old primary resumes it
//! is still a primary, accepting writes, until Sentinel turns it into a replica (its check of
//! a returning instance takes ~10 s), and then it drops everything written to it meanwhile.
//! When the newest answer names another instance, under a newer epoch, and that instance says
//! it is the primary, the node moves to it and closes its pool to the old one.
//!
//! Measured on 2026-12-06 (2 cores, debug build, tests
//! `a_primary_paused_past_a_failover_gets_no_writes_a_second_after_it_resumes` and
//! `a_paused_sentinel_does_not_hold_the_nodes_on_a_resumed_old_primary`: two nodes, each
//! incrementing a counter every ~15 ms from the moment the old primary resumes, right after
//! Sentinel named its successor). Without the recheck, every increment of the 4 s watched went
//! to the old primary, 208 to 272 per node over four runs, each acknowledged by an instance
//! Sentinel had already replaced. With it, over ten runs, the nodes' increments reached the
//! new primary 0.08 to 1.19 s after the resume (a node that had asked since the failover was
//! there already), the old primary having acknowledged 0 to 68 per node before that, and
//! none after.
//!
//! Why polling once a second rather than subscribing to a sentinel's `+switch-master`: a
//! subscription is one long-lived connection to one sentinel, silent when that sentinel is
//! paused or cut off and deaf to what happens while it reconnects, so it needs the periodic
//! question as a fallback anyway; the question alone is simpler and bounded the same way. It
//! costs one small connection per sentinel per second per node.
//!
//! Why not redis-rs's `SentinelClient` (or deadpool-redis's `sentinel` pool, built on it): it
//! asks its sentinels in a fixed order with no timeout, so one paused or partitioned sentinel
//! at the head of the list hangs every new connection, and it cannot tell the node's pool that
//! the primary moved, so connections to a demoted primary would stay in it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, RedisConnectionInfo, Role,
};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::configuration::{SentinelAddress, SentinelSettings};
use crate::primary_pool::PrimaryPool;

/// How soon the follower asks again after a round found no primary: the delay between
/// Sentinel announcing a new primary and the node using it, at worst, when the node has none.
pub const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// How often a node that has a primary asks whether Sentinel still names it: the longest a
/// node keeps writing to a primary Sentinel has replaced (plus one round of questions).
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(1);

/// The sentinels, and what they named when the node found its primary.
pub struct Sentinels {
    settings: Arc<SentinelSettings>,
    timeout: Duration,
    /// The answer the node's primary was installed from, epoch kept up to date.
    in_use: Option<Named>,
}

/// One sentinel's answer: where the primary is, in which configuration epoch.
#[derive(Debug, Clone)]
struct Named {
    host: String,
    port: u16,
    epoch: u64,
}

impl Named {
    fn is_instance_of(&self, other: &Named) -> bool {
        self.host == other.host && self.port == other.port
    }

    fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Whether a node on the primary `in_use` moves to this one: another instance, in a newer
    /// configuration. An older one is a sentinel that has not heard of the last failover.
    fn replaces(&self, in_use: &Named) -> bool {
        !self.is_instance_of(in_use) && self.epoch > in_use.epoch
    }
}

/// The sentinels' answers (each with the sentinel's place in the configuration), newest
/// epoch first, equally new ones in the configured order.
fn newest_first(
    mut answers: Vec<(usize, SentinelAddress, Named)>,
) -> Vec<(SentinelAddress, Named)> {
    answers.sort_by_key(|(index, _, named)| (std::cmp::Reverse(named.epoch), *index));
    answers
        .into_iter()
        .map(|(_, sentinel, named)| (sentinel, named))
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("sentinel {sentinel} did not answer: {reason}")]
    SentinelSilent {
        sentinel: SentinelAddress,
        reason: String,
    },
    #[error("sentinel {sentinel} does not know a primary named {name:?}")]
    UnknownMaster {
        sentinel: SentinelAddress,
        name: String,
    },
    #[error("sentinel {sentinel} names {primary}, which {reason}")]
    NotPrimary {
        sentinel: SentinelAddress,
        primary: String,
        reason: String,
    },
}

impl Sentinels {
    pub fn new(settings: SentinelSettings, timeout: Duration) -> Sentinels {
        Sentinels {
            settings: Arc::new(settings),
            timeout,
            in_use: None,
        }
    }

    /// One round of questions: the newest primary the sentinels name that confirms it is
    /// one, or what went wrong with the last one tried.
    pub async fn find_primary(&mut self) -> Result<ConnectionInfo, DiscoveryError> {
        let (answers, mut last_error) = self.ask_all().await;
        let mut tried: Vec<Named> = Vec::new();
        for (sentinel, named) in answers {
            // Several sentinels naming the same instance: one check is enough.
            if tried.iter().any(|seen| seen.is_instance_of(&named)) {
                continue;
            }
            match self.confirm(&named).await {
                Ok(info) => {
                    self.in_use = Some(named);
                    return Ok(info);
                }
                Err(reason) => {
                    last_error = Some(DiscoveryError::NotPrimary {
                        sentinel,
                        primary: named.address(),
                        reason,
                    });
                    tried.push(named);
                }
            }
        }
        Err(last_error.expect("the configuration holds at least one sentinel"))
    }

    /// Asks whether the sentinels name the primary in use still: `Some` with the primary they
    /// name now when it is another instance, under a newer epoch, that says it is the primary.
    /// `None` when nothing moved, or when no sentinel answered (the node keeps a primary that
    /// works while it cannot ask). An error: the newer primary did not confirm it.
    pub async fn find_successor(&mut self) -> Result<Option<ConnectionInfo>, DiscoveryError> {
        let (answers, _) = self.ask_all().await;
        let Some((sentinel, newest)) = answers.into_iter().next() else {
            return Ok(None);
        };
        if let Some(in_use) = &mut self.in_use {
            if newest.is_instance_of(in_use) {
                in_use.epoch = in_use.epoch.max(newest.epoch);
            }
            if !newest.replaces(in_use) {
                return Ok(None);
            }
        }
        match self.confirm(&newest).await {
            Ok(info) => {
                self.in_use = Some(newest);
                Ok(Some(info))
            }
            Err(reason) => Err(DiscoveryError::NotPrimary {
                sentinel,
                primary: newest.address(),
                reason,
            }),
        }
    }

    /// Every sentinel asked at once: the answers, newest epoch first (equal epochs in the
    /// configured order), and an error if a sentinel gave none.
    async fn ask_all(&self) -> (Vec<(SentinelAddress, Named)>, Option<DiscoveryError>) {
        let mut questions = JoinSet::new();
        for (index, sentinel) in self.settings.sentinels.iter().enumerate() {
            let settings = Arc::clone(&self.settings);
            let sentinel = sentinel.clone();
            let timeout = self.timeout;
            questions.spawn(async move {
                let answer = ask(&settings, &sentinel, timeout).await;
                (index, sentinel, answer)
            });
        }
        let mut answers = Vec::new();
        let mut error = None;
        while let Some(finished) = questions.join_next().await {
            match finished {
                Ok((index, sentinel, Ok(named))) => answers.push((index, sentinel, named)),
                Ok((_, _, Err(err))) => error = Some(err),
                Err(panicked) => log::error!("a question to a sentinel failed: {panicked}"),
            }
        }
        (newest_first(answers), error)
    }

    /// The instance `named` if it says `ROLE` master; else why not.
    async fn confirm(&self, named: &Named) -> Result<ConnectionInfo, String> {
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(named.host.clone(), named.port),
            redis: RedisConnectionInfo {
                password: self.settings.redis_password.clone(),
                ..RedisConnectionInfo::default()
            },
        };
        let question = async {
            let mut connection = connect(info.clone(), self.timeout).await?;
            redis::cmd("ROLE")
                .query_async::<Role>(&mut connection)
                .await
        };
        match tokio::time::timeout(self.timeout, question).await {
            Err(_elapsed) => Err(format!("did not answer within {:?}", self.timeout)),
            Ok(Err(err)) => Err(format!("cannot be asked: {err}")),
            Ok(Ok(Role::Primary { .. })) => Ok(info),
            Ok(Ok(Role::Replica {
                primary_ip,
                primary_port,
                ..
            })) => Err(format!("is a replica of {primary_ip}:{primary_port}")),
            Ok(Ok(Role::Sentinel { .. })) => Err("is a sentinel".to_string()),
        }
    }
}

/// `SENTINEL get-master-addr-by-name` and `SENTINEL master`, in one round trip within the
/// timeout: where the primary is and the configuration epoch of that answer.
///
/// The address comes from the first: during a failover the sentinel that leads it gives the
/// promoted replica's there as soon as it reports being a primary, when it also raises the
/// epoch, while the second still gives the old address until the failover ends.
async fn ask(
    settings: &SentinelSettings,
    sentinel: &SentinelAddress,
    timeout: Duration,
) -> Result<Named, DiscoveryError> {
    let silent = |reason: String| DiscoveryError::SentinelSilent {
        sentinel: sentinel.clone(),
        reason,
    };
    let unknown = || DiscoveryError::UnknownMaster {
        sentinel: sentinel.clone(),
        name: settings.master_name.clone(),
    };
    let info = ConnectionInfo {
        addr: ConnectionAddr::Tcp(sentinel.host.clone(), sentinel.port),
        redis: RedisConnectionInfo {
            password: settings.sentinel_password.clone(),
            ..RedisConnectionInfo::default()
        },
    };
    let question = async {
        let mut connection = connect(info, timeout).await?;
        redis::pipe()
            .cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&settings.master_name)
            .cmd("SENTINEL")
            .arg("master")
            .arg(&settings.master_name)
            .query_async::<(Option<(String, u16)>, HashMap<String, String>)>(&mut connection)
            .await
    };
    let ((host, port), state) = match tokio::time::timeout(timeout, question).await {
        Err(_elapsed) => return Err(silent(format!("no answer within {timeout:?}"))),
        Ok(Err(err)) if is_unknown_master(&err) => return Err(unknown()),
        Ok(Err(err)) => return Err(silent(err.to_string())),
        Ok(Ok((None, _))) => return Err(unknown()),
        Ok(Ok((Some(address), state))) => (address, state),
    };
    let epoch = state
        .get("config-epoch")
        .and_then(|epoch| epoch.parse().ok())
        .ok_or_else(|| silent("its answer has no config-epoch".to_string()))?;
    Ok(Named { host, port, epoch })
}

/// A sentinel's answer for a name it does not monitor: `ERR No such master with that name`.
fn is_unknown_master(err: &redis::RedisError) -> bool {
    err.code() == Some("ERR")
        && err
            .detail()
            .is_some_and(|detail| detail.contains("No such master"))
}

async fn connect(
    info: ConnectionInfo,
    timeout: Duration,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout);
    Client::open(info)?
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Keeps `pool` on the primary Sentinel names, for as long as the node runs.
pub async fn follow(pool: PrimaryPool, mut sentinels: Sentinels) {
    let mut failing = false;
    let mut recheck_failing = false;
    let mut next_recheck = Instant::now() + RECHECK_INTERVAL;
    loop {
        if let Some(primary) = pool.primary() {
            tokio::select! {
                () = pool.lost() => continue,
                () = tokio::time::sleep_until(next_recheck) => {}
            }
            // A round's timeouts (a silent sentinel) do not stretch the period.
            next_recheck = Instant::now() + RECHECK_INTERVAL;
            match sentinels.find_successor().await {
                Ok(None) => recheck_failing = false,
                Ok(Some(info)) => {
                    recheck_failing = false;
                    log::warn!(
                        "Sentinel names {} as the Redis primary now; leaving {}",
                        info.addr,
                        primary.address
                    );
                    if let Err(err) = pool.install_found(info) {
                        log::error!("cannot open a pool for the Redis primary: {err}");
                        // Still on the old one: the next round must move it again.
                        sentinels.in_use = None;
                    }
                }
                Err(err) => {
                    // Once in a row: the node asks every second until it holds.
                    if !recheck_failing {
                        log::warn!("keeping the Redis primary {}: {err}", primary.address);
                        recheck_failing = true;
                    }
                }
            }
            continue;
        }
        match sentinels.find_primary().await {
            Ok(info) => {
                failing = false;
                if let Err(err) = pool.install_found(info) {
                    log::error!("cannot open a pool for the Redis primary: {err}");
                    tokio::time::sleep(RETRY_INTERVAL).await;
                }
            }
            Err(err) => {
                // Once per outage: the node asks ten times a second until it ends.
                if !failing {
                    log::warn!("no Redis primary: {err}; asking the sentinels again");
                    failing = true;
                }
                tokio::time::sleep(RETRY_INTERVAL).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The rule that keeps a node from following a stale sentinel. (A real stale sentinel is
    //! hard to stage: one paused through a failover reads the others' announcements, waiting
    //! in its sockets, as soon as it resumes.)

    use super::*;

    fn named(port: u16, epoch: u64) -> Named {
        Named {
            host: "127.0.0.1".to_string(),
            port,
            epoch,
        }
    }

    fn sentinel(port: u16) -> SentinelAddress {
        SentinelAddress {
            host: "127.0.0.1".to_string(),
            port,
        }
    }

    #[test]
    fn the_newest_configuration_comes_first_whoever_answered_it() {
        let answers = vec![
            (0, sentinel(26379), named(6379, 0)),
            (1, sentinel(26380), named(6380, 1)),
            (2, sentinel(26381), named(6380, 1)),
        ];
        let ordered = newest_first(answers);
        assert_eq!(ordered[0].0, sentinel(26380));
        assert_eq!(ordered[0].1.port, 6380);
        assert_eq!(ordered[2].1.port, 6379);
    }

    #[test]
    fn equally_new_answers_keep_the_configured_order() {
        let answers = vec![
            (2, sentinel(26381), named(6381, 3)),
            (0, sentinel(26379), named(6380, 3)),
        ];
        assert_eq!(newest_first(answers)[0].0, sentinel(26379));
    }

    #[test]
    fn only_another_instance_in_a_newer_configuration_replaces_the_primary_in_use() {
        let promoted = named(6380, 1);
        let old = named(6379, 0);
        assert!(promoted.replaces(&old));
        assert!(
            !old.replaces(&promoted),
            "a stale answer sends the node back"
        );
        assert!(
            !named(6379, 1).replaces(&promoted),
            "an equal epoch is no news"
        );
        assert!(
            !named(6380, 2).replaces(&promoted),
            "the same instance is no move"
        );
    }
}
