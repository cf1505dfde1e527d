//! Each claim of a document against the facts: one line per claim that does not hold, as
//! `file:line: what is wrong`. The facts are plain data (help texts, the repository's files,
//! which endpoints answered), gathered by `facts.rs` from the real binaries and processes, so
//! the rules here can be tried on small fixtures.

use std::collections::{BTreeMap, BTreeSet};

use crate::claims::{Claim, Endpoint, Found};

/// Names that are no variable of this project, named in the docs for what they are: Rust's own
/// variables (read by env_logger and the standard library) and Linux constants.
const OUTSIDE_NAMES: [&str; 5] = [
    "RUST_LOG",
    "RUST_BACKTRACE",
    "PR_SET_PDEATHSIG",
    "SO_REUSEPORT",
    "TCP_NODELAY",
];

/// What the programs say of themselves.
#[derive(Debug, Default)]
pub struct Programs {
    /// `--help` output by command line: "cluster-app", "clusterctl verify", ...
    pub help: BTreeMap<String, String>,
    /// The subcommands each program's `--help` lists.
    pub subcommands: BTreeMap<String, BTreeSet<String>>,
}

/// What the repository holds.
#[derive(Debug, Default)]
pub struct Repository {
    /// Every file and directory, relative to the root, `/`-separated (no `target/`, `.git/`).
    pub files: BTreeSet<String>,
    /// The text of the files that read environment variables or take flags: `scripts/`,
    /// `deploy/`, `.ci/`, the compose files (`docker-compose*.yml`), `.env.example`.
    pub readers: BTreeMap<String, String>,
    /// The heading anchors of every Markdown file.
    pub anchors: BTreeMap<String, BTreeSet<String>>,
}

/// Subcommands, flags and environment variables.
pub fn program_problems(
    doc: &str,
    found: &[Found],
    programs: &Programs,
    repository: &Repository,
) -> Vec<String> {
    let any_help = || programs.help.values();
    let mut problems = Vec::new();
    for Found { line, claim } in found {
        let problem = match claim {
            Claim::Subcommand {
                program,
                subcommand,
            } => {
                let known = programs.subcommands.get(program);
                (!known.is_some_and(|known| known.contains(subcommand))).then(|| {
                    format!(
                        "`{program} {subcommand}`: {program} has no such subcommand (it has: {})",
                        known.map(join).unwrap_or_default()
                    )
                })
            }
            Claim::Flag {
                program,
                subcommand,
                flag,
            } => {
                let command = match subcommand {
                    Some(sub) if programs.help.contains_key(&format!("{program} {sub}")) => {
                        format!("{program} {sub}")
                    }
                    _ => program.clone(),
                };
                let help = programs
                    .help
                    .get(&command)
                    .map(String::as_str)
                    .unwrap_or("");
                (!has_flag(help, flag)).then(|| format!("`{flag}`: not in `{command} --help`"))
            }
            Claim::ScriptFlag { script, flag } => repository
                .readers
                .get(script)
                .filter(|text| !has_flag(text, flag))
                .map(|_| format!("`{flag}`: {script} takes no such flag")),
            Claim::LooseFlag(flag) => {
                let known = any_help().any(|help| has_flag(help, flag))
                    || repository.readers.values().any(|text| has_flag(text, flag));
                (!known)
                    .then(|| format!("`{flag}`: no program's --help and no script names this flag"))
            }
            Claim::EnvVar(name) => {
                let known = OUTSIDE_NAMES.contains(&name.as_str())
                    || any_help().any(|help| help_reads(help, name))
                    || repository
                        .readers
                        .iter()
                        .any(|(file, text)| file_reads(file, text, name));
                (!known).then(|| {
                    format!(
                        "`{name}`: no program's --help lists this variable and no script, \
                         compose file, .env.example or cluster-kit reads it"
                    )
                })
            }
            _ => None,
        };
        problems.extend(problem.map(|problem| format!("{doc}:{line}: {problem}")));
    }
    problems
}

/// Paths, links and URLs.
pub fn repository_problems(doc: &str, found: &[Found], repository: &Repository) -> Vec<String> {
    let mut problems = Vec::new();
    for Found { line, claim } in found {
        let problem = match claim {
            Claim::Path(path) => (!path_exists(path, &repository.files))
                .then(|| format!("`{path}`: no such file or directory in the repository")),
            Claim::Link(target) => link_problem(doc, target, repository),
            Claim::Url(url) if !is_loopback(url) => Some(format!(
                "{url}: points outside the repository (name the project instead of linking it)"
            )),
            _ => None,
        };
        problems.extend(problem.map(|problem| format!("{doc}:{line}: {problem}")));
    }
    problems
}

/// Endpoints: `routed` says whether the node or the load balancer's admin API routes one.
pub fn endpoint_problems(
    doc: &str,
    found: &[Found],
    routed: impl Fn(&Endpoint) -> bool,
) -> Vec<String> {
    found
        .iter()
        .filter_map(|Found { line, claim }| match claim {
            Claim::Endpoint(endpoint) if !routed(endpoint) => Some(format!(
                "{doc}:{line}: `{} {}`: neither the node nor the LB's admin API routes it (404)",
                endpoint.method, endpoint.path
            )),
            _ => None,
        })
        .collect()
}

fn join(names: &BTreeSet<String>) -> String {
    names.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// `flag` appears in `text` as a whole flag (not as the start of a longer one).
fn has_flag(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(at, _)| {
        let next = text[at + flag.len()..].chars().next();
        !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

/// clap prints a variable as `[env: NAME=` or `[env: NAME]`.
fn help_reads(help: &str, name: &str) -> bool {
    help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]"))
}

/// A script or compose file reads `$NAME` or `${NAME...}`; `.env.example` sets `NAME=`.
fn file_reads(file: &str, text: &str, name: &str) -> bool {
    if file.ends_with(".rs") {
        // cluster-kit names the variables it reads as string literals.
        return text.contains(&format!("\"{name}\""));
    }
    if file == ".env.example" {
        return text.lines().any(|line| {
            line.trim_start_matches('#')
                .starts_with(&format!("{name}="))
        });
    }
    ["$", "${"].iter().any(|sigil| {
        let needle = format!("{sigil}{name}");
        text.match_indices(&needle).any(|(at, _)| {
            let next = text[at + needle.len()..].chars().next();
            !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
    })
}

fn is_loopback(url: &str) -> bool {
    let rest = url.split_once("://").map(|(_, rest)| rest).unwrap_or(url);
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "127.0.0.1" || host == "localhost"
}

/// A path from the root (its first part is at the top of the repository) must be there; any
/// other is a file's name or its last parts (`getex_store.rs`, `tests/failover.rs`) and must
/// end some path. `*` and `<name>` match within one part.
fn path_exists(path: &str, files: &BTreeSet<String>) -> bool {
    let pattern: Vec<String> = path
        .trim_end_matches('/')
        .split('/')
        .map(placeholder_to_wildcard)
        .collect();
    let from_root = files.contains(&pattern[0]);
    files.iter().any(|file| {
        let parts: Vec<&str> = file.split('/').collect();
        if from_root {
            parts.len() == pattern.len() && parts_match(&pattern, &parts)
        } else {
            parts.len() >= pattern.len()
                && parts_match(&pattern, &parts[parts.len() - pattern.len()..])
        }
    })
}

fn placeholder_to_wildcard(part: &str) -> String {
    let mut out = String::new();
    let mut in_placeholder = false;
    for c in part.chars() {
        match c {
            '<' => in_placeholder = true,
            '>' => {
                in_placeholder = false;
                out.push('*');
            }
            _ if in_placeholder => {}
            _ => out.push(c),
        }
    }
    out
}

fn parts_match(pattern: &[String], parts: &[&str]) -> bool {
    pattern
        .iter()
        .zip(parts)
        .all(|(pattern, part)| wildcard_match(pattern, part))
}

/// `*` matches any run of characters.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, tail)) => {
            text.starts_with(head)
                && (head.len()..=text.len()).any(|at| wildcard_match(tail, &text[at..]))
        }
    }
}

fn link_problem(doc: &str, target: &str, repository: &Repository) -> Option<String> {
    if target.contains("://") || target.starts_with("mailto:") {
        return Some(format!(
            "link to {target}: points outside the repository (name the project instead)"
        ));
    }
    let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
    let resolved = if path.is_empty() {
        doc.to_string()
    } else {
        let dir = doc.rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
        match resolve(dir, path) {
            Some(resolved) => resolved,
            None => return Some(format!("link to {target}: leaves the repository")),
        }
    };
    if !repository.files.contains(&resolved) {
        return Some(format!("link to {target}: {resolved} does not exist"));
    }
    let anchors = repository.anchors.get(&resolved);
    (!anchor.is_empty() && !anchors.is_some_and(|anchors| anchors.contains(anchor)))
        .then(|| format!("link to {target}: {resolved} has no heading #{anchor}"))
}

/// `path` relative to the directory `dir`, both from the root; `None` above the root.
fn resolve(dir: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|part| !part.is_empty()).collect();
    for part in path.trim_end_matches('/').split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            _ => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::claims;

    /// A fixture with two programs, one script, a compose file and three documents.
    fn fixture() -> (Programs, Repository) {
        let programs = Programs {
            help: BTreeMap::from([
                (
                    "cluster-app".to_string(),
                    "      --drain-ms <DRAIN_MS>\n          [env: DRAIN_MS=]\n      --dev\n"
                        .to_string(),
                ),
                (
                    "clusterctl".to_string(),
                    "Commands:\n  up\n  verify\n".to_string(),
                ),
                (
                    "clusterctl up".to_string(),
                    "      --nodes <NODES>\n".to_string(),
                ),
                (
                    "clusterctl verify".to_string(),
                    "      --quick  Shorter load phases [env: CLUSTERCTL_NODES=]\n".to_string(),
                ),
            ]),
            subcommands: BTreeMap::from([(
                "clusterctl".to_string(),
                BTreeSet::from(["up".to_string(), "verify".to_string()]),
            )]),
        };
        let files = [
            "README.md",
            "docs",
            "docs/start-here.md",
            "scripts",
            "scripts/failover.sh",
            "crates",
            "crates/cluster-app",
            "crates/cluster-app/src",
            "crates/cluster-app/src/getex_store.rs",
        ];
        let repository = Repository {
            files: files.iter().map(|f| f.to_string()).collect(),
            readers: BTreeMap::from([
                (
                    "scripts/failover.sh".to_string(),
                    "REJOIN_SECONDS=${REJOIN_SECONDS:-10}\ncase $1 in --slow) ;; esac\n"
                        .to_string(),
                ),
                (
                    "docker-compose.yml".to_string(),
                    "ports: ${LB_PORT:-8080}\n".to_string(),
                ),
                (".env.example".to_string(), "#NODE1_PORT=8001\n".to_string()),
            ]),
            anchors: BTreeMap::from([(
                "README.md".to_string(),
                BTreeSet::from(["tests".to_string()]),
            )]),
        };
        (programs, repository)
    }

    fn program_check(markdown: &str) -> Vec<String> {
        let (programs, repository) = fixture();
        program_problems("doc.md", &claims(markdown), &programs, &repository)
    }

    fn repository_check(doc: &str, markdown: &str) -> Vec<String> {
        let (_, repository) = fixture();
        repository_problems(doc, &claims(markdown), &repository)
    }

    #[test]
    fn true_claims_about_programs_pass() {
        let problems = program_check(
            "```sh\nclusterctl verify --quick\nscripts/failover.sh --slow\n```\n\
             `--dev`, `DRAIN_MS`, `CLUSTERCTL_NODES`, `REJOIN_SECONDS`, `LB_PORT`, `NODE1_PORT`, `RUST_LOG`\n",
        );
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn a_bogus_flag_is_reported_where_it_is() {
        let problems = program_check("# T\n\n```sh\nclusterctl verify --quick --fast\n```\n");
        assert_eq!(
            problems,
            vec!["doc.md:4: `--fast`: not in `clusterctl verify --help`"]
        );
    }

    #[test]
    fn a_flag_of_another_subcommand_is_reported() {
        let problems = program_check("`clusterctl up --quick`");
        assert_eq!(
            problems,
            vec!["doc.md:1: `--quick`: not in `clusterctl up --help`"]
        );
    }

    #[test]
    fn a_bogus_subcommand_is_reported() {
        let problems = program_check("`clusterctl compare`");
        assert_eq!(
            problems,
            vec!["doc.md:1: `clusterctl compare`: clusterctl has no such subcommand (it has: up, verify)"]
        );
    }

    #[test]
    fn bogus_loose_and_script_flags_are_reported() {
        let problems = program_check("`--nope` and `scripts/failover.sh --fast`");
        assert_eq!(
            problems,
            vec![
                "doc.md:1: `--nope`: no program's --help and no script names this flag",
                "doc.md:1: `--fast`: scripts/failover.sh takes no such flag",
            ]
        );
    }

    #[test]
    fn a_variable_nothing_reads_is_reported() {
        let problems = program_check("`LB_FAST_MODE` and `SESSION_KEY=abc`");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("doc.md:1: `LB_FAST_MODE`: no program's --help"));
        assert!(problems[1].starts_with("doc.md:1: `SESSION_KEY`: no program's --help"));
    }

    #[test]
    fn a_variable_only_mentioned_in_a_comment_is_not_read() {
        let (programs, mut repository) = fixture();
        repository.readers.insert(
            "scripts/old.sh".to_string(),
            "# REJOIN_SLOWLY: retired\n".to_string(),
        );
        let problems =
            program_problems("doc.md", &claims("`REJOIN_SLOWLY`"), &programs, &repository);
        assert_eq!(problems.len(), 1, "{problems:?}");
    }

    #[test]
    fn true_paths_and_links_pass() {
        let problems = repository_check(
            "docs/start-here.md",
            "`getex_store.rs`, `src/getex_store.rs`, `crates/*/src/*_store.rs`, `scripts/`, \
             `crates/<crate>/src`, [readme](../README.md#tests), [self](#), http://127.0.0.1:8080/whoami\n\n\
             ```sh\nscripts/failover.sh\ntarget/release/clusterctl up\n```\n",
        );
        assert_eq!(problems, Vec::<String>::new());
    }

    #[test]
    fn missing_paths_are_reported() {
        let problems = repository_check(
            "README.md",
            "`lb-anchors.md`\n\n```sh\nscripts/failover-old.sh\n```\n\n`crates/cluster-app/getex_store.rs`\n",
        );
        assert_eq!(
            problems,
            vec![
                "README.md:1: `lb-anchors.md`: no such file or directory in the repository",
                "README.md:4: `scripts/failover-old.sh`: no such file or directory in the repository",
                "README.md:7: `crates/cluster-app/getex_store.rs`: no such file or directory in the repository",
            ]
        );
    }

    #[test]
    fn broken_and_outside_links_are_reported() {
        let problems = repository_check(
            "docs/start-here.md",
            "[a](README.md) [b](../README.md#nope) [c](../../x.md) [d](https://example.org/) \
             and see https://example.org/docs too\n",
        );
        assert_eq!(
            problems,
            vec![
                "docs/start-here.md:1: link to README.md: docs/README.md does not exist",
                "docs/start-here.md:1: link to ../README.md#nope: README.md has no heading #nope",
                "docs/start-here.md:1: link to ../../x.md: leaves the repository",
                "docs/start-here.md:1: link to https://example.org/: points outside the repository (name the project instead)",
                "docs/start-here.md:1: https://example.org/docs: points outside the repository (name the project instead of linking it)",
            ]
        );
    }

    #[test]
    fn an_unrouted_endpoint_is_reported() {
        let found = claims("`GET /whoami` and `POST /counter/incr-atomic`\n");
        let problems = endpoint_problems("doc.md", &found, |endpoint| endpoint.path == "/whoami");
        assert_eq!(
            problems,
            vec!["doc.md:1: `POST /counter/incr-atomic`: neither the node nor the LB's admin API routes it (404)"]
        );
    }
}
