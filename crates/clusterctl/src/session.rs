//! A user's session as the harness sees it: a cookie it carries by hand.
//!
//! The harness does not use a cookie jar on purpose. Carrying the `Cookie`
//! header from one node to another makes the point of the project visible:
//! the cookie is only an encrypted session id, and any node holding the shared
//! key can turn it into the same session by asking Redis.
//!
//! Each cookie is kept by name: behind a sticky load balancer a client holds
//! two (the balancer's `lb_backend` and the node's session cookie), and both
//! must travel together, as a browser sends them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::header::{COOKIE, SET_COOKIE};
use reqwest::Method;
use serde_json::Value;

/// A response, reduced to what scenarios check.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub served_by: Option<String>,
    pub body: Value,
    pub elapsed: Duration,
}

impl Reply {
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// `body["user"]` as a string, when logged in.
    pub fn user(&self) -> Option<&str> {
        self.body.get("user").and_then(Value::as_str)
    }

    pub fn counter(&self) -> Option<i64> {
        self.body.get("counter").and_then(Value::as_i64)
    }
}

/// One user's cookies, by name, updated whenever a response sets one.
#[derive(Debug, Clone, Default)]
pub struct Session {
    cookies: BTreeMap<String, String>,
    /// The `Cookie` header they make, `name=value; name=value`; `None` when there is none.
    header: Option<String>,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// The `Cookie` header value, e.g. `cluster_session=...`.
    pub fn cookie(&self) -> Option<&str> {
        self.header.as_deref()
    }

    /// The value of the cookie called `name`, as the server set it.
    pub fn cookie_value(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }

    /// A session presenting exactly this `Cookie` header: a copy kept by someone
    /// else (a stolen cookie replayed after its owner logged out).
    pub fn with_cookie_header(header: &str) -> Session {
        let mut session = Session::new();
        for pair in header.split(';') {
            session.remember(pair);
        }
        session
    }

    pub async fn logout(&mut self, http: &reqwest::Client, base: &str) -> anyhow::Result<Reply> {
        self.send(http, Method::POST, base, "/logout", None).await
    }

    /// Logs in as `user` through `base` (the LB or a node).
    pub async fn login(
        http: &reqwest::Client,
        base: &str,
        user: &str,
    ) -> anyhow::Result<(Session, Reply)> {
        let mut session = Session::new();
        let reply = session
            .send(
                http,
                Method::POST,
                base,
                "/login",
                Some(serde_json::json!({ "user": user })),
            )
            .await?;
        anyhow::ensure!(
            reply.is_ok(),
            "login via {base} answered {}: {}",
            reply.status,
            reply.body
        );
        anyhow::ensure!(
            session.header.is_some(),
            "login via {base} set no session cookie"
        );
        Ok((session, reply))
    }

    pub async fn whoami(&mut self, http: &reqwest::Client, base: &str) -> anyhow::Result<Reply> {
        self.send(http, Method::GET, base, "/whoami", None).await
    }

    pub async fn incr(&mut self, http: &reqwest::Client, base: &str) -> anyhow::Result<Reply> {
        self.send(http, Method::POST, base, "/counter/incr", None)
            .await
    }

    pub async fn put_item(
        &mut self,
        http: &reqwest::Client,
        base: &str,
        key: &str,
        value: Value,
    ) -> anyhow::Result<Reply> {
        self.send(
            http,
            Method::PUT,
            base,
            &format!("/session/items/{key}"),
            Some(value),
        )
        .await
    }

    /// Sends one request with the cookie; keeps any new cookie the node sets.
    pub async fn send(
        &mut self,
        http: &reqwest::Client,
        method: Method,
        base: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Reply> {
        let started = Instant::now();
        let mut request = http.request(method.clone(), format!("{base}{path}"));
        if let Some(cookie) = &self.header {
            request = request.header(COOKIE, cookie);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("{method} {base}{path}"))?;
        for set_cookie in response.headers().get_all(SET_COOKIE) {
            if let Ok(set_cookie) = set_cookie.to_str() {
                self.remember(set_cookie);
            }
        }
        let status = response.status().as_u16();
        let served_by = served_by(response.headers());
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Reply {
            status,
            served_by,
            body,
            elapsed: started.elapsed(),
        })
    }

    /// Keeps `name=value` of a `Set-Cookie`; a removal cookie (empty value,
    /// sent on logout) forgets that cookie.
    fn remember(&mut self, set_cookie: &str) {
        let pair = set_cookie.split(';').next().unwrap_or_default().trim();
        match pair.split_once('=') {
            Some((name, "")) => {
                self.cookies.remove(name);
            }
            Some((name, value)) => {
                self.cookies.insert(name.to_string(), value.to_string());
            }
            None => return,
        }
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        self.header = (!pairs.is_empty()).then(|| pairs.join("; "));
    }
}

/// The `X-Served-By` header every node sets: which node answered.
pub fn served_by(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get("x-served-by")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_name_value_pair_of_set_cookie() {
        let mut session = Session::new();
        session.remember("cluster_session=abc%2F123; HttpOnly; SameSite=Lax; Path=/");
        assert_eq!(session.cookie(), Some("cluster_session=abc%2F123"));
    }

    #[test]
    fn each_cookie_is_kept_by_name_and_sent_together() {
        let mut session = Session::new();
        session.remember("lb_backend=abc; Path=/; HttpOnly");
        session.remember("cluster_session=one; Path=/");
        session.remember("cluster_session=two; Path=/");
        assert_eq!(
            session.cookie(),
            Some("cluster_session=two; lb_backend=abc")
        );
        assert_eq!(session.cookie_value("lb_backend"), Some("abc"));
        session.remember("cluster_session=; Max-Age=0");
        assert_eq!(session.cookie(), Some("lb_backend=abc"));
        let copy = Session::with_cookie_header("cluster_session=two; lb_backend=abc");
        assert_eq!(copy.cookie(), Some("cluster_session=two; lb_backend=abc"));
    }

    #[test]
    fn a_removal_cookie_forgets_the_session() {
        let mut session = Session::new();
        session.remember("cluster_session=abc; Path=/");
        session.remember("cluster_session=; Max-Age=0; Path=/");
        assert_eq!(session.cookie(), None);
    }
}
