//! The recipe, straight: actix-web with actix-session's stock `RedisSessionStore`, as its
//! documentation sets it up (`RedisSessionStore::new`), and nothing else: no timeouts, no
//! metrics, no caps.
//!
//! It exists as a yardstick. `scripts/bench-node.sh` runs it beside the real node, with the
//! same cookie settings (encrypted, lasting the browser session, idle timeout in Redis renewed
//! on every request), so the cost of a session read through the stock store and through ours is
//! measured on the same machine in the same run. Do not deploy it: when Redis dies its requests
//! hang for minutes (one took ~473 s, measured with actix-session 0.11.0 and redis 0.32, whose
//! reconnect backoff is redis-rs issues #1830 and #1556; the tests of the real node show the fix).
//!
//! Usage: `cargo run --release -p cluster-app --example stock_node -- ADDR REDIS_URL KEY_HEX WORKERS`

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
    session.renew();
    session.insert("user", &body.user)?;
    Ok(HttpResponse::Ok().json(json!({ "node": "stock", "user": body.user })))
}

async fn whoami(session: Session) -> actix_web::Result<HttpResponse> {
    let user: Option<String> = session.get("user")?;
    let counter: i64 = session.get("counter")?.unwrap_or(0);
    Ok(HttpResponse::Ok().json(json!({ "node": "stock", "user": user, "counter": counter })))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, redis_url, key_hex, workers] = args.as_slice() else {
        eprintln!("usage: stock_node ADDR REDIS_URL KEY_HEX WORKERS");
        std::process::exit(2);
    };
    let key = match hex::decode(key_hex) {
        Ok(bytes) if bytes.len() >= 64 => Key::from(&bytes),
        _ => {
            eprintln!("stock_node: KEY_HEX must be at least 64 bytes in hex");
            std::process::exit(2);
        }
    };
    let workers: usize = workers.parse().unwrap_or(2);
    let store = RedisSessionStore::new(redis_url.as_str())
        .await
        .map_err(std::io::Error::other)?;

    HttpServer::new(move || {
        let sessions = SessionMiddleware::builder(store.clone(), key.clone())
            .cookie_secure(false)
            .cookie_content_security(CookieContentSecurity::Private)
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
                    .route("/whoami", web::get().to(whoami)),
            )
    })
    .workers(workers)
    .bind(listen.as_str())?
    .run()
    .await
}
