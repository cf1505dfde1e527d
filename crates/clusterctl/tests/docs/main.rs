//! The documentation cannot go stale: what README.md, ARCHITECTURE.md, BENCHMARKS.md,
//! TESTING.md and every `docs/**.md` name is checked against the real thing.
//!
//! * Every subcommand, flag and environment variable named is in the built binaries' own
//!   `--help` (cluster-app, cluster-lb, clusterctl and their subcommands), or, for a script's
//!   flag or a variable only scripts and compose use, read by that file.
//! * Every endpoint named is routed: a real node and load balancer, started here on free ports
//!   with a private redis-server, are asked for it and do not answer 404.
//! * Every path named exists in the repository, every relative link resolves (headings
//!   included), and nothing links or points outside the repository.
//!
//! Links out are refused on purpose, upstream documentation included: the course must read
//! offline, and a link to somebody else's page goes stale where no test can see it. Name the
//! project (crate, package) instead. `http://127.0.0.1:...` and `http://localhost:...` are the
//! cluster itself and are allowed in code.
//!
//! What counts as a flag, a variable, an endpoint or a path is in `claims.rs`; each rule is
//! shown to report a wrong claim in the unit tests of `checks.rs`.

mod checks;
mod claims;
mod facts;

use std::collections::BTreeSet;

use claims::{claims, Claim, Endpoint, Found};

/// Each document and what it claims.
fn documents() -> Vec<(String, Vec<Found>)> {
    let root = facts::root();
    facts::documents(&root)
        .into_iter()
        .map(|document| {
            let found = claims(&facts::read(&root, &document));
            (document, found)
        })
        .collect()
}

fn assert_none(problems: Vec<String>, what: &str) {
    assert!(
        problems.is_empty(),
        "{} {what}:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn every_subcommand_flag_and_variable_the_docs_name_exists() {
    let programs = facts::programs();
    let repository = facts::repository(&facts::root());
    let documents = documents();
    let problems = documents
        .iter()
        .flat_map(|(document, found)| {
            checks::program_problems(document, found, &programs, &repository)
        })
        .collect();
    assert_none(
        problems,
        "names of flags, subcommands or variables that nothing has",
    );
}

#[test]
fn every_path_and_link_the_docs_name_is_in_the_repository() {
    let repository = facts::repository(&facts::root());
    let problems = documents()
        .iter()
        .flat_map(|(document, found)| checks::repository_problems(document, found, &repository))
        .collect();
    assert_none(
        problems,
        "paths or links that lead nowhere in the repository",
    );
}

#[tokio::test]
async fn every_endpoint_the_docs_name_is_routed() {
    let documents = documents();
    let endpoints: BTreeSet<&Endpoint> = documents
        .iter()
        .flat_map(|(_, found)| &found[..])
        .filter_map(|found| match &found.claim {
            Claim::Endpoint(endpoint) => Some(endpoint),
            _ => None,
        })
        .collect();
    assert!(
        endpoints.len() >= 10,
        "the docs name {} endpoints: is the extraction broken?",
        endpoints.len()
    );

    let servers = facts::Servers::start().await;
    let nowhere = Endpoint {
        method: "GET".into(),
        path: "/no-such-endpoint".into(),
    };
    assert!(
        !servers.routes(&nowhere).await,
        "the servers claim to route {nowhere:?}: this test could not see a wrong endpoint"
    );
    let mut routed = BTreeSet::new();
    for endpoint in endpoints {
        if servers.routes(endpoint).await {
            routed.insert(endpoint.clone());
        }
    }
    let problems = documents
        .iter()
        .flat_map(|(document, found)| {
            checks::endpoint_problems(document, found, |endpoint| routed.contains(endpoint))
        })
        .collect();
    assert_none(problems, "endpoints that nothing routes");
}
