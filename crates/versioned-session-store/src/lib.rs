//! Session writes that are never silently lost, and logouts that stay logged out.
//!
//! # The race
//!
//! actix-session's stock `RedisSessionStore` reads a session at the start of a request
//! (`GET key`) and, if the handler changed it, writes the *whole* state back at the end
//! (`SET key state XX`). Two requests for the same session that overlap — two browser
//! tabs, a double click, a retry, or simply two nodes behind a load balancer — both read
//! the same state, both compute a new one, and the second `SET` overwrites the first:
//!
//! ```text
//! node A: GET  counter=0 ───────────────▶ SET counter=1   (200)
//! node B:      GET  counter=0 ─────────────────▶ SET counter=1   (200)
//! result: counter=1 after two acknowledged increments — last writer wins
//! ```
//!
//! Logout is worse. Node B deletes the session (`DEL key`) while node A is still in
//! a request for it. A's `SET key … XX` finds no key, and the stock store then falls back
//! to `SET newkey … NX`: it re-creates the session, with its pre-logout state, under a
//! fresh key and hands the browser a new cookie. The user is logged in again.
//!
//! # The fix: compare-and-set on a version
//!
//! [`VersionedRedisStore`] keeps a version number next to each session. `load` hands the
//! version to the middleware inside the session state itself (the reserved key
//! [`VERSION_KEY`]), so the middleware carries it, unaware, from the start of the request
//! to the `update` at its end. `update` then runs one Lua script — atomic inside Redis —
//! that writes only if the stored version is still the one this request read, and bumps
//! it. Otherwise nothing is written and the request fails with a [`SessionConflict`]:
//! [`ConflictReason::Stale`] (someone wrote first) or [`ConflictReason::Gone`] (the
//! session was logged out or expired; it is never re-created). The node turns that into
//! `409 Conflict`, and the client may retry on fresh state: no acknowledged write is lost.
//!
//! Some data need not go through the session blob at all. A counter that many requests
//! bump at once is better kept in its own Redis key and incremented in place
//! ([`AtomicCounter`]): `INCR` cannot conflict, so nobody ever sees a 409.
//!
//! # Modules
//!
//! * [`state`] — how a session is laid out in Redis and how the version rides in its state.
//! * `scripts` — the two Lua scripts: create-if-absent and compare-and-set.
//! * [`store`] — [`VersionedRedisStore`], the `SessionStore` built on them.
//! * [`conflict`] — the refusal error, and how to find it again in an `actix_web::Error`.
//! * [`counter`] — [`AtomicCounter`], the conflict-free alternative for counters.
//! * [`pool`] — [`ConnectionPool`]: deadpool-redis's pool by default, or one of your own.
//! * [`replica_acks`] — [`ReplicaAcks`]: optionally, a write counts only once replicas have it.

pub mod conflict;
pub mod counter;
pub mod pool;
pub mod replica_acks;
mod scripts;
pub mod state;
pub mod store;

pub use conflict::{conflict_in, conflict_in_update, ConflictReason, SessionConflict};
pub use counter::{ensure_session_id, AtomicCounter, CounterError, SESSION_ID_KEY};
pub use pool::ConnectionPool;
pub use replica_acks::{
    query_acknowledged, unconfirmed_in, ReplicaAcks, UnconfirmedWrite, WriteError,
};
pub use state::{
    is_reserved, parse_state, InvalidState, UnversionedState, RESERVED_KEYS, VERSION_KEY,
};
pub use store::VersionedRedisStore;
