//! The smallest complete actix-web node with sessions in Redis: the Express recipe
//! (express-session + connect-redis), line for line, in Rust, with actix-session's stock
//! `RedisSessionStore` set up as its documentation does, and nothing else: no timeouts, no
//! metrics, no caps. Chapter 1 of the course (`docs/from-express-to-actix.md`) starts here
//! and shows what the real node (`src/`) adds, and why.
//!
//! It is also a yardstick: `scripts/bench-node.sh` runs it beside the real node, with the same
//! cookie settings (encrypted, lasting the browser session, idle timeout in Redis renewed on
//! every request), so the cost of a session read through the stock store and through ours is
//! measured on the same machine in the same run. Do not deploy it: when Redis dies its requests
//! wait for Redis to come back, however long that takes (one took ~473 s, measured with
//! actix-session 0.11.0 and redis 0.32, whose reconnect backoff is redis-rs issues #1830 and
//! #1556; the tests of the real node show the fix).
//!
//! Usage: `cargo run --release -p cluster-app --example stock_node -- [ADDR [REDIS_URL [KEY_HEX [WORKERS]]]]`
//! (defaults: 127.0.0.1:3000, redis://127.0.0.1:6379, a key generated at start, 2 workers).
//! Two nodes share sessions only when both get the same KEY_HEX.

use actix_session::config::{BrowserSession, CookieContentSecurity, TtlExtensionPolicy};
use actix_session::storage::RedisSessionStore;
use actix_session::{Session, SessionMiddleware};
use actix_web::cookie::time::Duration;
use actix_web::cookie::Key;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize)]
struct Login {
    user: String,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "node": "stock", "status": "ok" }))
}

async fn login(session: Session, body: web::Json<Login>) -> actix_web::Result<HttpResponse> {
    // A new session id at login, as express-session's `req.session.regenerate()`.
    session.renew();
    session.insert("user", &body.user)?;
    Ok(HttpResponse::Ok().json(json!({ "node": "stock", "user": body.user })))
}

async fn whoami(session: Session) -> actix_web::Result<HttpResponse> {
    let user: Option<String> = session.get("user")?;
    let counter: i64 = session.get("counter")?.unwrap_or(0);
    Ok(HttpResponse::Ok().json(json!({ "node": "stock", "user": user, "counter": counter })))
}

/// The recipe's `req.session.views++`: read, add one, write the whole session back.
async fn incr(session: Session) -> actix_web::Result<HttpResponse> {
    let counter: i64 = session.get("counter")?.unwrap_or(0) + 1;
    session.insert("counter", counter)?;
    Ok(HttpResponse::Ok().json(json!({ "node": "stock", "counter": counter })))
}

/// express-session's `req.session.destroy()`: the Redis key goes, the cookie is cleared.
async fn logout(session: Session) -> HttpResponse {
    session.purge();
    HttpResponse::Ok().json(json!({ "node": "stock", "user": null }))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |index: usize, default: &str| args.get(index).cloned().unwrap_or(default.into());
    let (listen, redis_url, workers) = (
        arg(0, "127.0.0.1:3000"),
        arg(1, "redis://127.0.0.1:6379"),
        arg(3, "2"),
    );
    // The recipe's `secret`. Not a string in the source: 64 random bytes, the same on every
    // node, from outside the program.
    let key = match args.get(2).map(hex::decode) {
        Some(Ok(bytes)) if bytes.len() >= 64 => Key::from(&bytes),
        Some(_) => {
            eprintln!("stock_node: KEY_HEX must be at least 64 bytes in hex");
            std::process::exit(2);
        }
        None => {
            eprintln!("stock_node: no KEY_HEX, using a generated key: no other node can read these sessions");
            Key::generate()
        }
    };
    let Ok(workers) = workers.parse::<usize>() else {
        eprintln!("stock_node: WORKERS must be a number, not {workers:?}");
        std::process::exit(2);
    };
    // The recipe's `createClient()` and `new RedisStore({ client })` in one: the store opens
    // its own connection (redis-rs's ConnectionManager), and fails here if Redis is not there.
    let store = RedisSessionStore::new(redis_url.as_str())
        .await
        .map_err(std::io::Error::other)?;

    HttpServer::new(move || {
        let sessions = SessionMiddleware::builder(store.clone(), key.clone())
            // The recipe's `cookie.secure: false`: plain http on 127.0.0.1 only. Behind a
            // TLS-terminating proxy it must be true (the real node's default).
            .cookie_secure(false)
            // Encrypted, not only signed: the browser cannot read the session key.
            .cookie_content_security(CookieContentSecurity::Private)
            // `resave: false`, `saveUninitialized: false` and `rolling`: actix-session writes
            // the state only when a handler changed it, never stores a session nobody wrote
            // to, and slides the idle timeout in Redis on every request.
            .session_lifecycle(
                BrowserSession::default()
                    .state_ttl(Duration::seconds(1800))
                    .state_ttl_extension_policy(TtlExtensionPolicy::OnEveryRequest),
            )
            .build();
        App::new()
            .route("/healthz", web::get().to(healthz))
            .service(
                web::scope("")
                    .wrap(sessions)
                    .route("/login", web::post().to(login))
                    .route("/whoami", web::get().to(whoami))
                    .route("/counter/incr", web::post().to(incr))
                    .route("/logout", web::post().to(logout)),
            )
    })
    .workers(workers)
    .bind(listen.as_str())?
    .run()
    .await
}
