//! `clusterctl demo --store memory|cookie`: the tours of the two designs
//! without Redis (docs/why-sessions-break.md).
//!
//! `memory` shows why a session kept in one node's memory breaks behind a load
//! balancer: the user is anonymous whenever another node answers. With
//! `--sticky` the LB pins the user to one node, which works until that node is
//! killed. `cookie` shows the state travelling in the cookie: any node reads
//! it, a killed node loses nothing, and a logout cannot revoke a copy.

use std::time::Duration;

use crate::cluster::{wait_until, Cluster, ClusterOptions, SessionDesign};
use crate::session::{Reply, Session};

pub async fn demo_store(options: ClusterOptions, design: SessionDesign) -> anyhow::Result<bool> {
    step(
        &format!(
            "Start 3 cluster-app nodes with SESSION_STORE={} and cluster-lb{}",
            design.store,
            if design.sticky { " --sticky" } else { "" }
        ),
        match design.store {
            "memory" => "each node keeps its sessions in its own memory, as express-session's default MemoryStore; no node is given Redis",
            _ => "the whole session state goes into the encrypted cookie; no node is given Redis",
        },
    );
    let mut cluster = Cluster::start_with(&options, design).await?;
    let http = cluster.http.clone();
    let lb = cluster.lb.url();
    evidence(&format!(
        "LB {lb}, ready in {} ms",
        cluster.startup.as_millis()
    ));

    step(
        "Log in as alice through the LB",
        if design.store == "memory" {
            "the node that answers keeps the session in its memory and sends a cookie naming it"
        } else {
            "the node that answers puts alice's state in the cookie, encrypted with the shared key"
        },
    );
    let (mut alice, login) = Session::login(&http, &lb, "alice").await?;
    let home = served(&login);
    evidence(&format!("served by {home}"));
    if let Some(value) = alice.cookie_value("cluster_session") {
        evidence(&format!("session cookie: {} bytes", value.len()));
    }
    if let Some(token) = alice.cookie_value("lb_backend") {
        evidence(&format!(
            "sticky cookie lb_backend={token} pins alice to {home}"
        ));
    }

    step(
        "Ask /whoami six times through the LB",
        match (design.store, design.sticky) {
            ("memory", false) => {
                "the LB spreads requests; only the node that logged alice in knows her"
            }
            ("memory", true) => {
                "the sticky cookie sends every request to the node that knows alice"
            }
            _ => "every node decrypts the cookie and finds alice in it",
        },
    );
    let mut anonymous = 0;
    for _ in 0..6 {
        let reply = alice.whoami(&http, &lb).await?;
        if reply.user().is_none() {
            anonymous += 1;
        }
        evidence(&format!(
            "{} says user = {}",
            served(&reply),
            reply.user().unwrap_or("nobody")
        ));
    }
    evidence(&format!("{anonymous} of 6 answers did not know alice"));

    let victim_id = home.clone();
    step(
        &format!("SIGKILL {victim_id}, the node that logged alice in"),
        if design.store == "memory" {
            "the sessions it kept die with it"
        } else {
            "the node holds no session: the cookie still carries alice's"
        },
    );
    if let Some(node) = cluster.nodes.iter_mut().find(|node| node.id == victim_id) {
        let addr = node.addr.clone();
        node.kill();
        let admin = cluster.lb.admin.clone();
        let out = wait_until(
            Duration::from_secs(5),
            Duration::from_millis(10),
            || async {
                let backend = admin.backend(&addr).await.ok()?;
                (backend.state != "up").then_some(())
            },
        )
        .await;
        evidence(if out.is_some() {
            "the LB took it out"
        } else {
            "the LB did not take it out within 5 s"
        });
    }
    for _ in 0..3 {
        let reply = alice.whoami(&http, &lb).await?;
        evidence(&format!(
            "{} says user = {}",
            served(&reply),
            reply.user().unwrap_or("nobody")
        ));
    }

    if design.store == "cookie" {
        step(
            "Copy alice's cookie, log out, then replay the copy",
            "a logout can only ask the browser to drop its cookie; a copy (stolen, or kept by a proxy) stays valid",
        );
        let copy = alice.cookie().unwrap_or_default().to_string();
        let logout = alice.logout(&http, &lb).await?;
        evidence(&format!(
            "logout answered {}; the browser's cookie is {}",
            logout.status,
            if alice.cookie().is_none() {
                "gone"
            } else {
                "still there"
            }
        ));
        let replayed = Session::with_cookie_header(&copy)
            .whoami(&http, &lb)
            .await?;
        evidence(&format!(
            "the copy, replayed on {}: user = {}",
            served(&replayed),
            replayed.user().unwrap_or("nobody")
        ));
    }

    println!();
    println!(
        "Done. `clusterctl compare` measures the three designs side by side; `clusterctl demo` tours the shared-Redis one."
    );
    Ok(true)
}

fn step(what: &str, why: &str) {
    println!();
    println!("==> {what}");
    println!("    why: {why}");
}

fn evidence(line: &str) {
    println!("    - {line}");
}

fn served(reply: &Reply) -> String {
    reply.served_by.clone().unwrap_or_else(|| "?".into())
}
