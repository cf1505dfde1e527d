//! Exact accounting of every request the load generator sends.
//!
//! A request is recorded once when it is sent, which hands out a [`Ticket`],
//! and once when it ends, which consumes that ticket. A ticket cannot be copied
//! or reused, so the type system rules out counting one request twice; a ticket
//! that is never handed back is what "in flight" means. At every moment
//! `sent == ok + failed_status + failed_transport + in_flight`.
//!
//! Two more books serve the Redis failover scenarios, Jepsen style. Every acknowledged atomic
//! increment is recorded per session, so the final counters can be checked against them: a
//! counter below its acknowledged increments lost writes that users were told had happened.
//! And every run of failures is recorded as an outage, from its first failure to the next
//! success: what users saw of the failover.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The width of one timeline bucket.
pub const BUCKET: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `GET /whoami`: idempotent, so an LB may retry it.
    Read,
    /// `POST /counter/incr`: not idempotent, never retried.
    Write,
    /// `POST /counter/incr?mode=atomic`: one `INCR` in Redis, counted when acknowledged.
    Atomic,
    /// `POST /login`: a new session written to Redis.
    Login,
}

/// Where in a scenario a request was sent; latencies are split by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Before,
    During,
    After,
}

impl Phase {
    const ALL: [Phase; 3] = [Phase::Before, Phase::During, Phase::After];

    fn index(self) -> usize {
        self as usize
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestOutcome {
    /// A 2xx response.
    Ok,
    /// A response with any other status (the LB's 502, a node's 503...).
    FailedStatus(u16),
    /// No response: connection refused or reset, timeout.
    FailedTransport,
}

/// Proof that a request was sent; handing it back records how it ended.
#[must_use = "a ticket that is never finished counts as in flight"]
#[derive(Debug)]
pub struct Ticket {
    kind: Kind,
    phase: Phase,
    sent_at: Duration,
}

/// Counters for one kind of request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    pub failed_status: u64,
    pub failed_transport: u64,
    pub in_flight: u64,
}

impl Counts {
    pub fn failed(&self) -> u64 {
        self.failed_status + self.failed_transport
    }

    /// The ledger's invariant: every request sent is in exactly one bucket.
    pub fn balances(&self) -> bool {
        self.sent == self.ok + self.failed_status + self.failed_transport + self.in_flight
    }

    fn add(&mut self, other: &Counts) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.failed_status += other.failed_status;
        self.failed_transport += other.failed_transport;
        self.in_flight += other.in_flight;
    }
}

/// One 100 ms slice of the timeline: sends by send time, ends by end time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
}

/// A labelled moment of the run ("kill node2"), with what was in flight then.
#[derive(Debug, Clone, Serialize)]
pub struct Mark {
    pub at_ms: u64,
    pub label: String,
    pub reads_in_flight: u64,
    pub writes_in_flight: u64,
}

/// A run of failures: from the end of its first failed request to the end of the next
/// successful one (`None`: the load ended first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outage {
    pub from_ms: u64,
    pub to_ms: Option<u64>,
}

impl Outage {
    /// Its length, up to `end_ms` when it never ended.
    pub fn length_ms(&self, end_ms: u64) -> u64 {
        self.to_ms.unwrap_or(end_ms).saturating_sub(self.from_ms)
    }
}

/// Latency percentiles of the successful requests sent in one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseLatency {
    pub phase: Phase,
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Everything a load run measured, ready for the report.
#[derive(Debug, Clone, Serialize)]
pub struct LoadSummary {
    pub duration_ms: u64,
    pub total: Counts,
    pub reads: Counts,
    pub writes: Counts,
    pub atomic: Counts,
    pub logins: Counts,
    pub latency: Vec<PhaseLatency>,
    /// The slowest failed request, from send to failure: a fast 503 or a hang.
    pub slowest_failure_ms: f64,
    /// Every run of failures, in order.
    pub outages: Vec<Outage>,
    /// Acknowledged atomic increments per cookie (by its index in the plan).
    pub acked_increments: BTreeMap<usize, u64>,
    /// Successful responses per `X-Served-By`.
    pub served_by: BTreeMap<String, u64>,
    /// Failures by kind and origin, e.g. `"503 from node2"`, `"transport"`.
    pub failures: BTreeMap<String, u64>,
    pub marks: Vec<Mark>,
    pub timeline: Vec<Bucket>,
    /// Successful responses per `X-Served-By`, per timeline bucket (by end time).
    pub ok_by_node: BTreeMap<String, Vec<u64>>,
}

impl LoadSummary {
    pub fn latency(&self, phase: Phase) -> Option<&PhaseLatency> {
        self.latency.iter().find(|l| l.phase == phase)
    }

    /// The longest run of failures, in milliseconds (0: none).
    pub fn longest_outage_ms(&self) -> u64 {
        self.outages
            .iter()
            .map(|outage| outage.length_ms(self.duration_ms))
            .max()
            .unwrap_or(0)
    }
}

pub struct Ledger {
    reads: Counts,
    writes: Counts,
    atomic: Counts,
    logins: Counts,
    phase: Phase,
    slowest_failure: Duration,
    /// The end of the first failure since the last success, while failures go on.
    outage_since: Option<Duration>,
    outages: Vec<Outage>,
    acked_increments: BTreeMap<usize, u64>,
    /// Microseconds, 1 µs to 60 s, 3 significant digits.
    latency: [Histogram<u64>; 3],
    timeline: Vec<Bucket>,
    /// Per node: when (since start) each of its successful responses arrived.
    served: BTreeMap<String, Vec<Duration>>,
    failures: BTreeMap<String, u64>,
    marks: Vec<Mark>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new()
    }
}

impl Ledger {
    pub fn new() -> Ledger {
        let histogram = || {
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
        };
        Ledger {
            reads: Counts::default(),
            writes: Counts::default(),
            atomic: Counts::default(),
            logins: Counts::default(),
            phase: Phase::Before,
            slowest_failure: Duration::ZERO,
            outage_since: None,
            outages: Vec::new(),
            acked_increments: BTreeMap::new(),
            latency: [histogram(), histogram(), histogram()],
            timeline: Vec::new(),
            served: BTreeMap::new(),
            failures: BTreeMap::new(),
            marks: Vec::new(),
        }
    }

    /// Records a request leaving at `at` (time since the run started).
    pub fn send(&mut self, kind: Kind, at: Duration) -> Ticket {
        let counts = self.counts_mut(kind);
        counts.sent += 1;
        counts.in_flight += 1;
        self.bucket(at).sent += 1;
        Ticket {
            kind,
            phase: self.phase,
            sent_at: at,
        }
    }

    /// Records how the request of `ticket` ended at `at`.
    pub fn finish(
        &mut self,
        ticket: Ticket,
        outcome: RequestOutcome,
        served_by: Option<&str>,
        at: Duration,
    ) {
        let counts = self.counts_mut(ticket.kind);
        counts.in_flight -= 1;
        match outcome {
            RequestOutcome::Ok => counts.ok += 1,
            RequestOutcome::FailedStatus(_) => counts.failed_status += 1,
            RequestOutcome::FailedTransport => counts.failed_transport += 1,
        }
        if outcome == RequestOutcome::Ok {
            if let Some(since) = self.outage_since.take() {
                self.outages.push(Outage {
                    from_ms: since.as_millis() as u64,
                    to_ms: Some(at.as_millis() as u64),
                });
            }
        } else {
            self.outage_since.get_or_insert(at);
            self.slowest_failure = self.slowest_failure.max(at.saturating_sub(ticket.sent_at));
        }
        let bucket = self.bucket(at);
        if outcome == RequestOutcome::Ok {
            bucket.ok += 1;
            let micros = at.saturating_sub(ticket.sent_at).as_micros() as u64;
            self.latency[ticket.phase.index()].saturating_record(micros.max(1));
            if let Some(node) = served_by {
                self.served.entry(node.to_string()).or_default().push(at);
            }
        } else {
            bucket.failed += 1;
            let origin = served_by.unwrap_or("the LB");
            let label = match outcome {
                RequestOutcome::FailedStatus(status) => format!("{status} from {origin}"),
                _ => "transport".to_string(),
            };
            *self.failures.entry(label).or_default() += 1;
        }
    }

    /// Records that an atomic increment with the cookie at `cookie` (its index in the plan)
    /// was acknowledged: the node answered 200, so the increment must be in the final counter.
    pub fn acknowledge_increment(&mut self, cookie: usize) {
        *self.acked_increments.entry(cookie).or_default() += 1;
    }

    /// The end of the first failure of the run of failures going on now, if one is.
    pub fn outage_since(&self) -> Option<Duration> {
        self.outage_since
    }

    /// Requests sent from now on belong to `phase`.
    pub fn set_phase(&mut self, phase: Phase) {
        self.phase = phase;
    }

    /// Labels the moment `at`; returns the mark with what was in flight then.
    pub fn mark(&mut self, label: &str, at: Duration) -> Mark {
        let mark = Mark {
            at_ms: at.as_millis() as u64,
            label: label.to_string(),
            reads_in_flight: self.reads.in_flight,
            writes_in_flight: self.writes.in_flight,
        };
        self.marks.push(mark.clone());
        mark
    }

    /// When `node` last answered successfully.
    pub fn last_served(&self, node: &str) -> Option<Duration> {
        self.served
            .get(node)
            .and_then(|times| times.last().copied())
    }

    /// The first successful answer of `node` at or after `since`.
    pub fn first_served_since(&self, node: &str, since: Duration) -> Option<Duration> {
        self.served
            .get(node)?
            .iter()
            .copied()
            .filter(|t| *t >= since)
            .min()
    }

    /// Successful answers of `node` at or after `since`.
    pub fn served_since(&self, node: &str, since: Duration) -> u64 {
        self.served
            .get(node)
            .map(|times| times.iter().filter(|t| **t >= since).count() as u64)
            .unwrap_or(0)
    }

    pub fn summary(&self, duration: Duration) -> LoadSummary {
        let mut total = self.reads;
        total.add(&self.writes);
        total.add(&self.atomic);
        total.add(&self.logins);
        let mut outages = self.outages.clone();
        outages.extend(self.outage_since.map(|since| Outage {
            from_ms: since.as_millis() as u64,
            to_ms: None,
        }));
        let latency = Phase::ALL
            .iter()
            .map(|&phase| {
                let histogram = &self.latency[phase.index()];
                let ms = |micros: u64| micros as f64 / 1000.0;
                PhaseLatency {
                    phase,
                    count: histogram.len(),
                    p50_ms: ms(histogram.value_at_quantile(0.50)),
                    p99_ms: ms(histogram.value_at_quantile(0.99)),
                    max_ms: ms(histogram.max()),
                }
            })
            .collect();
        LoadSummary {
            duration_ms: duration.as_millis() as u64,
            total,
            reads: self.reads,
            writes: self.writes,
            atomic: self.atomic,
            logins: self.logins,
            latency,
            slowest_failure_ms: self.slowest_failure.as_secs_f64() * 1000.0,
            outages,
            acked_increments: self.acked_increments.clone(),
            served_by: self
                .served
                .iter()
                .map(|(node, times)| (node.clone(), times.len() as u64))
                .collect(),
            failures: self.failures.clone(),
            marks: self.marks.clone(),
            timeline: self.timeline.clone(),
            ok_by_node: self
                .served
                .iter()
                .map(|(node, times)| (node.clone(), self.per_bucket(times)))
                .collect(),
        }
    }

    /// How many of `times` fall in each bucket of the timeline.
    fn per_bucket(&self, times: &[Duration]) -> Vec<u64> {
        let mut counts = vec![0; self.timeline.len()];
        for at in times {
            let index = (at.as_millis() / BUCKET.as_millis()) as usize;
            if let Some(count) = counts.get_mut(index) {
                *count += 1;
            }
        }
        counts
    }

    fn counts_mut(&mut self, kind: Kind) -> &mut Counts {
        match kind {
            Kind::Read => &mut self.reads,
            Kind::Write => &mut self.writes,
            Kind::Atomic => &mut self.atomic,
            Kind::Login => &mut self.logins,
        }
    }

    fn bucket(&mut self, at: Duration) -> &mut Bucket {
        let index = (at.as_millis() / BUCKET.as_millis()) as usize;
        if self.timeline.len() <= index {
            self.timeline.resize(index + 1, Bucket::default());
        }
        &mut self.timeline[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_outcome_lands_in_exactly_one_counter() {
        let mut ledger = Ledger::new();
        let outcomes = [
            RequestOutcome::Ok,
            RequestOutcome::FailedStatus(502),
            RequestOutcome::FailedTransport,
            RequestOutcome::Ok,
        ];
        for (i, outcome) in outcomes.into_iter().enumerate() {
            let ticket = ledger.send(Kind::Read, ms(i as u64));
            ledger.finish(ticket, outcome, Some("node1"), ms(i as u64 + 1));
        }
        let reads = ledger.summary(ms(0)).reads;
        assert_eq!(
            reads,
            Counts {
                sent: 4,
                ok: 2,
                failed_status: 1,
                failed_transport: 1,
                in_flight: 0
            }
        );
        assert_eq!(ledger.summary(ms(0)).writes, Counts::default());
    }

    #[test]
    fn unfinished_tickets_stay_in_flight_and_the_books_balance() {
        let mut ledger = Ledger::new();
        let mut open = Vec::new();
        // A deterministic mix: every third request never ends, every fifth fails.
        for i in 0..300u64 {
            let kind = if i % 10 == 9 { Kind::Write } else { Kind::Read };
            let ticket = ledger.send(kind, ms(i));
            match i {
                _ if i % 3 == 0 => open.push(ticket),
                _ if i % 5 == 0 => {
                    ledger.finish(ticket, RequestOutcome::FailedStatus(503), None, ms(i + 2))
                }
                _ => ledger.finish(ticket, RequestOutcome::Ok, Some("node2"), ms(i + 2)),
            }
            let summary = ledger.summary(ms(i));
            for counts in [summary.reads, summary.writes, summary.total] {
                assert!(counts.balances(), "after request {i}: {counts:?}");
            }
        }
        let summary = ledger.summary(ms(300));
        assert_eq!(summary.total.sent, 300);
        assert_eq!(summary.total.in_flight, open.len() as u64);
        assert_eq!(summary.total.in_flight, 100);
        // i % 5 == 0 but not i % 3 == 0: 60 - 20 = 40 failures.
        assert_eq!(summary.total.failed_status, 40);
        assert_eq!(summary.total.ok, 160);
        assert_eq!(summary.served_by.get("node2"), Some(&160));
        assert_eq!(summary.failures.get("503 from the LB"), Some(&40));
        // Finishing the open ones later moves them out of in_flight, once each.
        for ticket in open {
            ledger.finish(ticket, RequestOutcome::FailedTransport, None, ms(400));
        }
        let total = ledger.summary(ms(400)).total;
        assert_eq!(
            total,
            Counts {
                sent: 300,
                ok: 160,
                failed_status: 40,
                failed_transport: 100,
                in_flight: 0
            }
        );
    }

    #[test]
    fn timeline_counts_sends_by_send_time_and_ends_by_end_time() {
        let mut ledger = Ledger::new();
        let first = ledger.send(Kind::Read, ms(50));
        let second = ledger.send(Kind::Write, ms(150));
        ledger.finish(first, RequestOutcome::Ok, None, ms(250));
        ledger.finish(second, RequestOutcome::FailedTransport, None, ms(260));
        let timeline = ledger.summary(ms(300)).timeline;
        assert_eq!(
            timeline,
            vec![
                Bucket {
                    sent: 1,
                    ok: 0,
                    failed: 0
                },
                Bucket {
                    sent: 1,
                    ok: 0,
                    failed: 0
                },
                Bucket {
                    sent: 0,
                    ok: 1,
                    failed: 1
                },
            ]
        );
    }

    #[test]
    fn each_nodes_answers_are_counted_per_bucket_by_end_time() {
        let mut ledger = Ledger::new();
        for (sent, ended, node) in [(10, 20, "node1"), (30, 150, "node2"), (40, 160, "node1")] {
            let ticket = ledger.send(Kind::Read, ms(sent));
            ledger.finish(ticket, RequestOutcome::Ok, Some(node), ms(ended));
        }
        let failed = ledger.send(Kind::Read, ms(210));
        ledger.finish(failed, RequestOutcome::FailedTransport, None, ms(220));
        let by_node = ledger.summary(ms(300)).ok_by_node;
        assert_eq!(by_node["node1"], vec![1, 1, 0]);
        assert_eq!(by_node["node2"], vec![0, 1, 0]);
        assert_eq!(by_node.len(), 2);
    }

    #[test]
    fn latency_is_split_by_the_phase_a_request_was_sent_in() {
        let mut ledger = Ledger::new();
        let before = ledger.send(Kind::Read, ms(0));
        ledger.set_phase(Phase::During);
        // Sent before the phase change, finished after: still "before".
        ledger.finish(before, RequestOutcome::Ok, None, ms(10));
        let during = ledger.send(Kind::Read, ms(20));
        ledger.finish(during, RequestOutcome::Ok, None, ms(120));
        let summary = ledger.summary(ms(200));
        let before = summary.latency(Phase::Before).unwrap();
        let during = summary.latency(Phase::During).unwrap();
        assert_eq!((before.count, during.count), (1, 1));
        assert!((before.p50_ms - 10.0).abs() < 0.1, "{before:?}");
        assert!((during.p99_ms - 100.0).abs() < 0.2, "{during:?}");
        assert_eq!(summary.latency(Phase::After).unwrap().count, 0);
    }

    #[test]
    fn marks_record_what_was_in_flight() {
        let mut ledger = Ledger::new();
        let _read = ledger.send(Kind::Read, ms(0));
        let _write = ledger.send(Kind::Write, ms(1));
        let mark = ledger.mark("kill node2", ms(2));
        assert_eq!((mark.reads_in_flight, mark.writes_in_flight), (1, 1));
    }

    #[test]
    fn a_run_of_failures_is_one_outage_from_its_first_failure_to_the_next_success() {
        let mut ledger = Ledger::new();
        // ok at 10, failures ending at 100, 150, 120 (out of order), ok at 400, failure at 500.
        for (sent, ended, outcome) in [
            (0, 10, RequestOutcome::Ok),
            (50, 100, RequestOutcome::FailedStatus(503)),
            (60, 150, RequestOutcome::FailedTransport),
            (70, 120, RequestOutcome::FailedStatus(503)),
            (300, 400, RequestOutcome::Ok),
            (450, 500, RequestOutcome::FailedStatus(503)),
        ] {
            let ticket = ledger.send(Kind::Atomic, ms(sent));
            ledger.finish(ticket, outcome, Some("node1"), ms(ended));
            if outcome != RequestOutcome::Ok {
                assert!(ledger.outage_since().is_some());
            }
        }
        let summary = ledger.summary(ms(600));
        assert_eq!(
            summary.outages,
            vec![
                Outage {
                    from_ms: 100,
                    to_ms: Some(400)
                },
                Outage {
                    from_ms: 500,
                    to_ms: None
                }
            ]
        );
        assert_eq!(summary.longest_outage_ms(), 300);
        assert!((summary.slowest_failure_ms - 90.0).abs() < 0.1);
        assert_eq!(summary.atomic.sent, 6);
        assert_eq!(summary.total.sent, 6);
    }

    #[test]
    fn acknowledged_increments_are_counted_per_cookie() {
        let mut ledger = Ledger::new();
        for cookie in [0, 2, 0, 0] {
            ledger.acknowledge_increment(cookie);
        }
        let acked = ledger.summary(ms(0)).acked_increments;
        assert_eq!(acked.get(&0), Some(&3));
        assert_eq!(acked.get(&1), None);
        assert_eq!(acked.get(&2), Some(&1));
    }

    #[test]
    fn served_times_answer_first_and_last() {
        let mut ledger = Ledger::new();
        for at in [10, 20, 300] {
            let ticket = ledger.send(Kind::Read, ms(at));
            ledger.finish(ticket, RequestOutcome::Ok, Some("node3"), ms(at + 1));
        }
        assert_eq!(ledger.last_served("node3"), Some(ms(301)));
        assert_eq!(ledger.first_served_since("node3", ms(100)), Some(ms(301)));
        assert_eq!(ledger.served_since("node3", ms(15)), 2);
        assert_eq!(ledger.last_served("node1"), None);
    }
}
