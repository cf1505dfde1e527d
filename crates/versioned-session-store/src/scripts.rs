//! The two Lua scripts that make session writes atomic.
//!
//! Redis runs a script as one command: no other client's command lands between its
//! `HGET` and its `HSET`, which is what turns "check the version, then write" into a
//! compare-and-set. `redis::Script` sends `EVALSHA` (just the script's hash) and, when
//! Redis answers `NOSCRIPT` (first use, or after a restart), loads the script and retries.

use redis::Script;

/// What [`compare_and_set`] answers when the session key is gone.
pub(crate) const GONE: i64 = -1;
/// What [`compare_and_set`] answers when the stored version is not the expected one.
pub(crate) const STALE: i64 = -2;

/// `KEYS[1]` session key, `ARGV[1]` state JSON, `ARGV[2]` TTL in seconds.
///
/// Creates the session at version 1 unless the key exists; answers 1 when created, 0 when
/// not. A fresh random key never exists, but a store must not overwrite a session it
/// did not read.
pub(crate) fn create_if_absent() -> Script {
    Script::new(
        r"
        if redis.call('EXISTS', KEYS[1]) == 1 then
            return 0
        end
        redis.call('HSET', KEYS[1], 'state', ARGV[1], 'version', 1)
        redis.call('EXPIRE', KEYS[1], ARGV[2])
        return 1
        ",
    )
}

/// `KEYS[1]` session key, `ARGV[1]` expected version, `ARGV[2]` state JSON, `ARGV[3]` TTL.
///
/// Writes the state and bumps the version only if the key exists and still holds the
/// expected version; answers the new version, or [`GONE`] / [`STALE`] without writing.
/// A missing key is never re-created here: that would undo a logout.
pub(crate) fn compare_and_set() -> Script {
    Script::new(
        r"
        local current = redis.call('HGET', KEYS[1], 'version')
        if not current then
            return -1
        end
        if current ~= ARGV[1] then
            return -2
        end
        redis.call('HSET', KEYS[1], 'state', ARGV[2])
        local version = redis.call('HINCRBY', KEYS[1], 'version', 1)
        redis.call('EXPIRE', KEYS[1], ARGV[3])
        return version
        ",
    )
}
