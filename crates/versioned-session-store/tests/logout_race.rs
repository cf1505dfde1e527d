//! A logout on one node while the same session's write is in flight on another.
//!
//! Node A reads the session and is held (a gate) before it answers; node B logs the
//! session out; then A finishes and writes. The stock store re-creates the session under a
//! new key and hands A's client a cookie for it: the logout is undone. The versioned store
//! refuses A's write and nothing comes back.

mod common;

use std::sync::Arc;

use actix_session::storage::{RedisSessionStore, SessionStore};
use actix_web::cookie::Key;
use cluster_kit::RedisServer;
use common::{atomic_counter, key_count, log_in, pool, post, read, session_cookie, Gate, Node};
use versioned_session_store::VersionedRedisStore;

/// What A's held write produced after B's logout.
struct Aftermath {
    status: u16,
    new_cookie: Option<String>,
    keys_after_logout: i64,
    keys_after_write: i64,
    user_behind_new_cookie: Option<String>,
}

async fn logout_during_write<S>(redis: &RedisServer, stores: [S; 2]) -> Aftermath
where
    S: SessionStore + Clone + Send + 'static,
{
    let key = Key::generate();
    let gate = Arc::new(Gate::default());
    let [a, b] = stores.map(|store| {
        Node::start(
            store,
            key.clone(),
            gate.clone(),
            atomic_counter(pool(&redis.url(), 2)),
        )
    });
    let inspect = pool(&redis.url(), 1);
    let client = reqwest::Client::new();
    let cookie = log_in(&client, &a).await;

    let held_write = tokio::spawn({
        let (client, cookie) = (client.clone(), cookie.clone());
        let url = format!("{}/counter/incr-held", a.base);
        async move { post(&client, url, &cookie).await }
    });
    gate.wait_until_reached().await;
    assert_eq!(
        post(&client, format!("{}/logout", b.base), &cookie)
            .await
            .status(),
        200
    );
    let keys_after_logout = key_count(&inspect).await;
    gate.release();

    let response = held_write.await.expect("held write task");
    let status = response.status().as_u16();
    let new_cookie = session_cookie(&response);
    let keys_after_write = key_count(&inspect).await;
    let user_behind_new_cookie = match &new_cookie {
        Some(new_cookie) => read(&client, &b, new_cookie).await.user,
        None => None,
    };
    a.stop().await;
    b.stop().await;
    Aftermath {
        status,
        new_cookie,
        keys_after_logout,
        keys_after_write,
        user_behind_new_cookie,
    }
}

#[actix_web::test]
async fn versioned_store_refuses_the_write_and_the_session_stays_logged_out() {
    let redis = RedisServer::start();
    let stores = [(); 2].map(|()| VersionedRedisStore::new(pool(&redis.url(), 4), "session:"));

    let aftermath = logout_during_write(&redis, stores).await;

    assert_eq!(aftermath.keys_after_logout, 0);
    assert_eq!(aftermath.status, 409, "the write after logout is refused");
    assert_eq!(aftermath.new_cookie, None, "no cookie for a new session");
    assert_eq!(aftermath.keys_after_write, 0, "no session re-created");
}

#[actix_web::test]
async fn stock_store_undoes_the_logout() {
    let redis = RedisServer::start();
    let stores = [
        RedisSessionStore::new_pooled(pool(&redis.url(), 4))
            .await
            .expect("stock store"),
        RedisSessionStore::new_pooled(pool(&redis.url(), 4))
            .await
            .expect("stock store"),
    ];

    let aftermath = logout_during_write(&redis, stores).await;

    assert_eq!(aftermath.keys_after_logout, 0);
    assert_eq!(
        aftermath.status, 200,
        "the stock store acknowledges the write"
    );
    assert!(aftermath.new_cookie.is_some(), "…under a new session key");
    assert_eq!(
        aftermath.keys_after_write, 1,
        "the session is back in Redis"
    );
    assert_eq!(
        aftermath.user_behind_new_cookie.as_deref(),
        Some("alice"),
        "and the user is logged in again"
    );
}
