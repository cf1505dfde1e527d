//! Continuity: any node can read and change a session any other node wrote.
//!
//! The user logs in through the LB. Then, for every pair (i, j), the harness
//! writes an item on node i directly and reads it back on node j directly,
//! carrying only the cookie between them. An N x N matrix of successes is the
//! proof that no node keeps session state of its own.

use serde::Serialize;
use serde_json::json;

use super::Context;
use crate::scenario_result::{Check, ScenarioOutcome};
use crate::session::Session;

#[derive(Debug, Clone, Serialize)]
pub struct Figures {
    pub nodes: Vec<String>,
    pub login_served_by: Option<String>,
    /// `matrix[i][j]`: node j saw the write made on node i.
    pub matrix: Vec<Vec<bool>>,
    pub cells_ok: usize,
    pub cells: usize,
}

pub async fn run(ctx: &mut Context<'_>) -> anyhow::Result<ScenarioOutcome<Figures>> {
    let http = ctx.cluster.http.clone();
    ctx.progress.step("log in through the LB");
    let (mut session, login) = Session::login(&http, &ctx.lb_url(), "alice").await?;

    let nodes: Vec<(String, String)> = ctx
        .cluster
        .nodes
        .iter()
        .map(|node| (node.id.clone(), node.url()))
        .collect();
    let mut matrix = vec![vec![false; nodes.len()]; nodes.len()];
    let mut notes = Vec::new();
    for (i, (writer, writer_url)) in nodes.iter().enumerate() {
        for (j, (reader, reader_url)) in nodes.iter().enumerate() {
            ctx.progress
                .step(&format!("write on {writer}, read on {reader}"));
            let key = format!("w{i}r{j}");
            let written = session
                .put_item(&http, writer_url, &key, json!({ "by": writer }))
                .await?;
            let read = session
                .send(
                    &http,
                    reqwest::Method::GET,
                    reader_url,
                    "/session/items",
                    None,
                )
                .await?;
            let seen = read
                .body
                .pointer(&format!("/items/{key}/by"))
                .and_then(|v| v.as_str());
            let ok = written.is_ok() && read.is_ok() && seen == Some(writer.as_str());
            if !ok {
                notes.push(format!(
                    "{writer} -> {reader}: write {} read {} {}",
                    written.status, read.status, read.body
                ));
            }
            matrix[i][j] = ok;
        }
    }
    let whoami = session.whoami(&http, &ctx.lb_url()).await?;

    let cells = nodes.len() * nodes.len();
    let cells_ok = matrix.iter().flatten().filter(|ok| **ok).count();
    let checks = vec![
        Check::new(
            "write on i, read on j (all pairs)",
            cells,
            cells_ok,
            cells_ok == cells,
        ),
        Check::new(
            "still logged in as alice via the LB",
            "alice",
            whoami.user().unwrap_or("nobody"),
            whoami.user() == Some("alice"),
        ),
    ];
    Ok(ScenarioOutcome {
        summary: format!(
            "{cells_ok}/{cells} cells of the {0}x{0} matrix",
            nodes.len()
        ),
        figures: Figures {
            nodes: nodes.into_iter().map(|(id, _)| id).collect(),
            login_served_by: login.served_by,
            matrix,
            cells_ok,
            cells,
        },
        checks,
        notes,
    })
}
