//! Shared key: the session key is what makes nodes interchangeable.
//!
//! The cookie holds the session id encrypted with the key. A node started with
//! a different key, talking to the very same Redis, cannot decrypt the cookie
//! and sees an anonymous visitor. This is the mistake of examples that call
//! `Key::generate()` per process.

use std::time::Duration;

use serde::Serialize;

use super::Context;
use crate::cluster::random_hex;
use crate::scenario_result::{Check, ScenarioOutcome};
use crate::session::Session;

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    /// The user node1 (same key) sees with the cookie.
    pub same_key_user: Option<String>,
    /// The user the node with another key sees with the same cookie.
    pub other_key_user: Option<String>,
    pub other_key_status: u16,
}

pub async fn run(ctx: &mut Context<'_>) -> anyhow::Result<ScenarioOutcome<Figures>> {
    let http = ctx.cluster.http.clone();
    ctx.progress
        .step("start a node with a different session key");
    let mut settings = ctx.cluster.settings.clone();
    settings.session_key = random_hex(64)?;
    let mut stranger = ctx.cluster.start_extra_node("other-key", &settings)?;
    stranger.wait_ready(&http, Duration::from_secs(20)).await?;

    ctx.progress.step("log in through the LB, ask both");
    let (mut session, _) = Session::login(&http, &ctx.lb_url(), "bob").await?;
    let same = session
        .clone()
        .whoami(&http, &ctx.cluster.nodes[0].url())
        .await?;
    let other = session.whoami(&http, &stranger.url()).await?;

    let same_key_user = same.user().map(str::to_string);
    let other_key_user = other.user().map(str::to_string);
    let checks = vec![
        Check::new(
            "a node with the shared key sees the user",
            "bob",
            same_key_user.as_deref().unwrap_or("nobody"),
            same_key_user.as_deref() == Some("bob"),
        ),
        Check::new(
            "a node with another key sees nobody",
            "nobody (200)",
            format!(
                "{} ({})",
                other_key_user.as_deref().unwrap_or("nobody"),
                other.status
            ),
            other.is_ok() && other_key_user.is_none(),
        ),
    ];
    Ok(ScenarioOutcome {
        summary: format!(
            "same key: {}, other key: {}",
            same_key_user.as_deref().unwrap_or("nobody"),
            other_key_user.as_deref().unwrap_or("nobody")
        ),
        figures: Figures {
            same_key_user,
            other_key_user,
            other_key_status: other.status,
        },
        checks,
        notes: Vec::new(),
    })
}
