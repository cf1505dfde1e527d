//! What a Markdown document claims about the project, by simple rules a writer can keep in
//! mind. Only code (inline code spans and fenced blocks) and links are read; prose is free.
//!
//! * **Commands.** An inline code span, or a line of a fenced block tagged `sh` (or `bash`,
//!   `shell`, `console`), is read as a shell command: cut at ` #`, split at `|`, `&&`, `||`
//!   and `;`. In each piece, leading `NAME=value` words are environment variables (on a line of
//!   a block, only when a command follows: alone they set a shell variable) and the next word
//!   is the command (after `nice -n N`, `sudo`, `exec` or `time`).
//!   - When the command is `cluster-app`, `cluster-lb` or `clusterctl` (any directory before
//!     it), a following lower-case word is a subcommand, and every `--flag` of the piece is
//!     a flag of that program (and subcommand).
//!   - When it is a script of the repository (`scripts/...`), its `--flag`s are that script's.
//!   - Other programs' flags (cargo, docker, curl, ...) are theirs: not read.
//! * **Flags on their own.** An inline code span that starts with `--`.
//! * **Environment variables.** An inline code span that is exactly `NAME` or `NAME=value`,
//!   with NAME in upper case and at least one `_` (any upper-case NAME in the `=value` form).
//! * **Endpoints.** An inline code span `/path` or `METHOD /path` (paths under `/proc`, `/etc`,
//!   `/tmp`, `/usr`, `/var`, `/dev`, `/sys` are files of the machine, not endpoints), and the
//!   path of every `http://127.0.0.1:PORT/...` URL in code (method from curl's `-X`, or POST
//!   when it sends `-d`). `[...]` parts are optional and dropped, `{name}` and `<name>` become
//!   a sample segment, a trailing `...` or `…` goes.
//! * **Paths.** An inline code span of path characters only (`A-Z a-z 0-9 _ . - / * < >`),
//!   not starting with `/` or `-`, that contains a `/` or ends in `.rs`, `.sh`, `.md`,
//!   `.toml`, `.yml`, `.lua`, `.svg` or `.json`; and, in every fenced block, each word that
//!   starts with one of the repository's top directories (`scripts/`, `crates/`, `docs/`,
//!   `deploy/`, `.ci/`, `.config/`). `<name>` is a wildcard. Paths under `target/` are build
//!   output and not read.
//! * **Links.** Every Markdown link and image target.
//! * **URLs.** Every `http://` or `https://` URL, in prose or in code.

use pulldown_cmark::{CodeBlockKind, Event, Options, Parser, Tag, TagEnd};

/// The project's programs, whose flags and subcommands are checked.
pub const PROGRAMS: [&str; 3] = ["cluster-app", "cluster-lb", "clusterctl"];

/// Top directories of the repository: a word in code starting with one of them is a path.
const TOP_DIRS: [&str; 6] = [
    "scripts/", "crates/", "docs/", "deploy/", ".ci/", ".config/",
];

/// Paths of the machine, not of the repository nor of an HTTP server.
const MACHINE_PATHS: [&str; 7] = ["/proc", "/etc", "/tmp", "/usr", "/var", "/dev", "/sys"];

const SOURCE_EXTENSIONS: [&str; 8] = [
    ".rs", ".sh", ".md", ".toml", ".yml", ".lua", ".svg", ".json",
];

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub method: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Claim {
    /// `program subcommand`, run as a command.
    Subcommand {
        program: String,
        subcommand: String,
    },
    /// `--flag` given to `program` (to its `subcommand` when the command names one).
    Flag {
        program: String,
        subcommand: Option<String>,
        flag: String,
    },
    /// `--flag` given to a script of the repository.
    ScriptFlag {
        script: String,
        flag: String,
    },
    /// `--flag` named on its own.
    LooseFlag(String),
    EnvVar(String),
    Endpoint(Endpoint),
    Path(String),
    Link(String),
    Url(String),
}

/// A claim and the line (1-based) it is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub line: usize,
    pub claim: Claim,
}

/// Everything `markdown` claims, in document order.
pub fn claims(markdown: &str) -> Vec<Found> {
    let line_of = |offset: usize| markdown[..offset].matches('\n').count() + 1;
    let mut found = Vec::new();
    let mut block: Option<bool> = None;
    for (event, range) in Parser::new_ext(markdown, Options::ENABLE_TABLES).into_offset_iter() {
        match event {
            Event::Start(Tag::CodeBlock(kind)) => {
                let info = match &kind {
                    CodeBlockKind::Fenced(info) => info.to_string(),
                    CodeBlockKind::Indented => String::new(),
                };
                let tag = info.split_whitespace().next().unwrap_or("");
                block = Some(matches!(tag, "sh" | "bash" | "shell" | "console"));
            }
            Event::End(TagEnd::CodeBlock) => block = None,
            Event::Text(text) if block.is_some() => {
                let commands = block == Some(true);
                code_block(&text, line_of(range.start), commands, &mut found);
            }
            Event::Text(text) => {
                for url in urls(&text) {
                    found.push(at(line_of(range.start), Claim::Url(url)));
                }
            }
            Event::Code(span) => {
                let line = line_of(range.start);
                for claim in code_span(&span) {
                    found.push(at(line, claim));
                }
            }
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                found.push(at(line_of(range.start), Claim::Link(dest_url.to_string())));
            }
            _ => {}
        }
    }
    found
}

/// The anchors of the headings of `markdown`, as GitHub makes them: lower case, spaces to
/// `-`, every character that is not a letter, a digit, `-` or `_` dropped.
pub fn anchors(markdown: &str) -> Vec<String> {
    let mut anchors = Vec::new();
    let mut heading: Option<String> = None;
    for event in Parser::new_ext(markdown, Options::ENABLE_TABLES) {
        match event {
            Event::Start(Tag::Heading { .. }) => heading = Some(String::new()),
            Event::Text(text) | Event::Code(text) => {
                if let Some(heading) = &mut heading {
                    heading.push_str(&text);
                }
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some(text) = heading.take() {
                    anchors.push(
                        text.to_lowercase()
                            .chars()
                            .filter_map(|c| match c {
                                ' ' => Some('-'),
                                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                                _ => None,
                            })
                            .collect(),
                    );
                }
            }
            _ => {}
        }
    }
    anchors
}

fn at(line: usize, claim: Claim) -> Found {
    Found { line, claim }
}

fn code_block(text: &str, first_line: usize, commands: bool, found: &mut Vec<Found>) {
    for (index, line) in text.lines().enumerate() {
        let line_number = first_line + index;
        let mut claims = Vec::new();
        if commands {
            claims.extend(command_claims(
                line.trim_start().trim_start_matches("$ "),
                false,
            ));
        } else {
            claims.extend(urls(line).into_iter().map(Claim::Url));
            claims.extend(loopback_endpoints(line, "GET"));
        }
        claims.extend(
            line.split_whitespace()
                .map(|word| word.trim_matches(|c| matches!(c, '"' | '\'' | '(' | ')' | ',' | ':')))
                .filter(|word| {
                    TOP_DIRS
                        .iter()
                        .any(|dir| word.trim_start_matches("./").starts_with(dir))
                })
                .map(|word| Claim::Path(word.trim_start_matches("./").to_string())),
        );
        found.extend(claims.into_iter().map(|claim| at(line_number, claim)));
    }
}

fn code_span(span: &str) -> Vec<Claim> {
    let span = span.trim();
    let mut claims = command_claims(span, true);
    if span.starts_with("--") {
        if let Some(flag) = flag_name(span.split_whitespace().next().unwrap_or("")) {
            claims.push(Claim::LooseFlag(flag));
        }
    }
    if let Some(name) = env_name(span) {
        claims.push(Claim::EnvVar(name));
    }
    if let Some(endpoint) = endpoint(span) {
        claims.push(Claim::Endpoint(endpoint));
    }
    if is_path(span) {
        claims.push(Claim::Path(span.to_string()));
    }
    claims
}

/// The claims of one line of shell. `NAME=value` words without a command after them set a
/// shell variable on a line of a block, and name an environment variable in a code span.
fn command_claims(line: &str, in_span: bool) -> Vec<Claim> {
    let line = match line.find(" #") {
        Some(comment) => &line[..comment],
        None if line.starts_with('#') => "",
        None => line,
    };
    let mut claims: Vec<Claim> = urls(line).into_iter().map(Claim::Url).collect();
    for piece in line.split(['|', ';']).flat_map(|piece| piece.split("&&")) {
        let words: Vec<&str> = piece.split_whitespace().collect();
        let mut rest = words.as_slice();
        let mut assigned = Vec::new();
        while let [word, tail @ ..] = rest {
            match word.split_once('=') {
                Some((name, value)) if is_upper_name(name) => {
                    assigned.push(Claim::EnvVar(name.to_string()));
                    rest = past_value(value, tail);
                }
                _ => break,
            }
        }
        rest = skip_wrappers(rest);
        if in_span || !rest.is_empty() {
            claims.append(&mut assigned);
        }
        let Some((command, args)) = rest.split_first() else {
            continue;
        };
        let method = curl_method(args);
        claims.extend(loopback_endpoints(piece, &method));
        let program = command.rsplit('/').next().unwrap_or(command);
        let flags = || args.iter().filter_map(|arg| flag_name(arg));
        if PROGRAMS.contains(&program) {
            let subcommand = args
                .first()
                .filter(|word| is_subcommand_word(word))
                .map(|word| word.to_string());
            if let Some(subcommand) = &subcommand {
                claims.push(Claim::Subcommand {
                    program: program.to_string(),
                    subcommand: subcommand.clone(),
                });
            }
            claims.extend(flags().map(|flag| Claim::Flag {
                program: program.to_string(),
                subcommand: subcommand.clone(),
                flag,
            }));
        } else if command.trim_start_matches("./").starts_with("scripts/") {
            let script = command.trim_start_matches("./").to_string();
            claims.extend(flags().map(|flag| Claim::ScriptFlag {
                script: script.clone(),
                flag,
            }));
        }
    }
    claims
}

/// The words after an assigned value that goes on over spaces: `'keyboard cat'`, `$(od ...)`.
fn past_value<'a, 'w>(value: &str, mut tail: &'a [&'w str]) -> &'a [&'w str] {
    let open = |text: &str| {
        let parens = text.matches('(').count() as i64 - text.matches(')').count() as i64;
        (parens, text.matches('\'').count() % 2 == 1)
    };
    let (mut parens, mut quoted) = open(value);
    while parens > 0 || quoted {
        let Some((word, rest)) = tail.split_first() else {
            break;
        };
        let (more_parens, flips_quote) = open(word);
        parens += more_parens;
        quoted ^= flips_quote;
        tail = rest;
    }
    tail
}

/// Past `nice -n N`, `sudo`, `exec`, `time`: the words from the real command on.
fn skip_wrappers<'a, 'w>(mut words: &'a [&'w str]) -> &'a [&'w str] {
    loop {
        words = match words {
            ["nice", "-n", _, rest @ ..] => rest,
            ["sudo" | "exec" | "time" | "nice", rest @ ..] => rest,
            _ => return words,
        };
    }
}

/// curl's method: `-X METHOD`, else POST when it sends data, else GET.
fn curl_method(args: &[&str]) -> String {
    if let Some(position) = args.iter().position(|a| *a == "-X" || *a == "--request") {
        if let Some(method) = args.get(position + 1) {
            return method.to_string();
        }
    }
    let sends_data = args
        .iter()
        .any(|a| *a == "-d" || a.starts_with("--data") || a.starts_with("--json"));
    if sends_data { "POST" } else { "GET" }.to_string()
}

/// `--name` of `--name`, `--name=value`, `--name,` ...; `None` when it is no flag.
fn flag_name(word: &str) -> Option<String> {
    let name = word.strip_prefix("--")?;
    let name: String = name
        .chars()
        .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')
        .collect();
    (!name.is_empty()).then(|| format!("--{name}"))
}

fn is_subcommand_word(word: &str) -> bool {
    word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

/// A bare `NAME` with a `_` (`NAME=value` is a command's assignment).
fn env_name(span: &str) -> Option<String> {
    (is_upper_name(span) && span.contains('_')).then(|| span.to_string())
}

fn is_upper_name(name: &str) -> bool {
    name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `/path` or `METHOD /path` (one space), not a path of the machine.
fn endpoint(span: &str) -> Option<Endpoint> {
    let (method, path) = match span.split_once(' ') {
        Some((method, path)) if METHODS.contains(&method) => (method, path),
        Some(_) => return None,
        None => ("GET", span),
    };
    let is_machine_path = MACHINE_PATHS
        .iter()
        .any(|root| path == *root || path.starts_with(&format!("{root}/")));
    if !path.starts_with('/') || path.starts_with("//") || path.contains(' ') || is_machine_path {
        return None;
    }
    Some(Endpoint {
        method: method.to_string(),
        path: normalised(path),
    })
}

/// Optional parts dropped, placeholders filled, a trailing ellipsis removed.
fn normalised(path: &str) -> String {
    let mut out = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '[' => {
                chars.by_ref().find(|c| *c == ']');
            }
            '{' | '<' => {
                let close = if c == '{' { '}' } else { '>' };
                chars.by_ref().find(|c| *c == close);
                out.push_str("sample");
            }
            _ => out.push(c),
        }
    }
    out.trim_end_matches("...")
        .trim_end_matches('…')
        .to_string()
}

/// The endpoints of `http://127.0.0.1:PORT/...` and `http://localhost:PORT/...` URLs in `text`.
fn loopback_endpoints(text: &str, method: &str) -> Vec<Claim> {
    urls(text)
        .into_iter()
        .filter_map(|url| {
            let rest = url.strip_prefix("http://")?;
            // Without a path, a URL names a server, not an endpoint.
            let (host, path) = rest.split_once('/')?;
            let host = host.split(':').next().unwrap_or("");
            (host == "127.0.0.1" || host == "localhost").then(|| {
                Claim::Endpoint(Endpoint {
                    method: method.to_string(),
                    path: normalised(&format!("/{path}")),
                })
            })
        })
        .collect()
}

/// Every `http://` or `https://` URL in `text`, up to a space, quote, bracket or closing
/// punctuation.
pub fn urls(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(start) = [rest.find("http://"), rest.find("https://")]
        .into_iter()
        .flatten()
        .min()
    {
        let url: String = rest[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | ')' | '>' | '`'))
            .collect();
        let url = url.trim_end_matches(['.', ',', ';', ':']).to_string();
        rest = &rest[start + url.len().max(1)..];
        found.push(url);
    }
    found
}

fn is_path(span: &str) -> bool {
    let path_chars = span
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/' | '*' | '<' | '>'));
    path_chars
        && !span.starts_with('/')
        && !span.starts_with('-')
        && !span.starts_with("target/")
        && (span.contains('/') || SOURCE_EXTENSIONS.iter().any(|ext| span.ends_with(ext)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims_of(markdown: &str) -> Vec<Claim> {
        claims(markdown)
            .into_iter()
            .map(|found| found.claim)
            .collect()
    }

    fn flag(program: &str, subcommand: Option<&str>, flag: &str) -> Claim {
        Claim::Flag {
            program: program.into(),
            subcommand: subcommand.map(Into::into),
            flag: flag.into(),
        }
    }

    fn endpoint(method: &str, path: &str) -> Claim {
        Claim::Endpoint(Endpoint {
            method: method.into(),
            path: path.into(),
        })
    }

    #[test]
    fn a_command_names_its_program_subcommand_flags_and_variables() {
        let found = claims_of(
            "```sh\nSESSION_STORE=redis-versioned target/release/clusterctl verify --nodes 3 --quick   # all of it\n```\n",
        );
        assert_eq!(
            found,
            vec![
                Claim::EnvVar("SESSION_STORE".into()),
                Claim::Subcommand {
                    program: "clusterctl".into(),
                    subcommand: "verify".into()
                },
                flag("clusterctl", Some("verify"), "--nodes"),
                flag("clusterctl", Some("verify"), "--quick"),
            ]
        );
    }

    #[test]
    fn a_shell_variable_is_no_environment_variable_but_a_span_naming_one_is() {
        let found = claims_of(
            "```sh\nKEY=$(od -An -tx1 -N64 /dev/urandom)\nSECRET='keyboard cat'\n\
             SESSION_KEY='keyboard cat' cluster-app --dev\n```\n`WORKERS=1`\n",
        );
        assert_eq!(
            found,
            vec![
                Claim::EnvVar("SESSION_KEY".into()),
                flag("cluster-app", None, "--dev"),
                Claim::EnvVar("WORKERS".into()),
            ]
        );
    }

    #[test]
    fn other_programs_flags_are_not_read_and_a_comment_is_not_a_command() {
        let found = claims_of(
            "```sh\ncargo run -p cluster-app --example stock_node && docker compose up --build\n# clusterctl --nope\n```\n",
        );
        assert_eq!(found, vec![]);
    }

    #[test]
    fn a_script_keeps_its_own_flags_and_its_path_is_checked() {
        let found = claims_of("```sh\nnice -n 10 scripts/offline-images.sh --force\n```\n");
        assert_eq!(
            found,
            vec![
                Claim::ScriptFlag {
                    script: "scripts/offline-images.sh".into(),
                    flag: "--force".into()
                },
                Claim::Path("scripts/offline-images.sh".into()),
            ]
        );
    }

    #[test]
    fn code_spans_name_flags_variables_endpoints_and_paths() {
        let found = claims_of(
            "Use `--persistent-cookie`, `REDIS_TIMEOUT_MS`, `WORKERS=1`, `POST /counter/incr[?mode=atomic]`, \
             `PUT /session/items/{key}`, `DELETE /backends...`, `/readyz`, `/proc/<pid>/stat`, \
             `getex_store.rs`, `scenarios/<name>.rs`, `target/release/cluster-app`, `X-Served-By`, `GETEX`.",
        );
        assert_eq!(
            found,
            vec![
                Claim::LooseFlag("--persistent-cookie".into()),
                Claim::EnvVar("REDIS_TIMEOUT_MS".into()),
                Claim::EnvVar("WORKERS".into()),
                endpoint("POST", "/counter/incr"),
                endpoint("PUT", "/session/items/sample"),
                endpoint("DELETE", "/backends"),
                endpoint("GET", "/readyz"),
                Claim::Path("getex_store.rs".into()),
                Claim::Path("scenarios/<name>.rs".into()),
            ]
        );
    }

    #[test]
    fn loopback_urls_in_code_are_endpoints_with_curls_method() {
        let found = claims_of(
            "```sh\ncurl -si -c jar -d '{\"user\":\"alice\"}' http://127.0.0.1:8080/login\ncurl -s http://127.0.0.1:PORT/backends\n```\n\
             ```text\n  LB admin       http://127.0.0.1:41234/backends\n  load balancer  http://127.0.0.1:8080\n```\n",
        );
        let endpoints: Vec<Claim> = found
            .into_iter()
            .filter(|claim| matches!(claim, Claim::Endpoint(_)))
            .collect();
        assert_eq!(
            endpoints,
            vec![
                endpoint("POST", "/login"),
                endpoint("GET", "/backends"),
                endpoint("GET", "/backends"),
            ]
        );
    }

    #[test]
    fn links_images_and_urls_in_prose_are_found_with_their_line() {
        let found = claims(
            "Read [the map](ARCHITECTURE.md#code-map).\n\n![timeline](docs/timeline.svg)\n\nSee https://example.org/x.\n",
        );
        assert_eq!(
            found,
            vec![
                at(1, Claim::Link("ARCHITECTURE.md#code-map".into())),
                at(3, Claim::Link("docs/timeline.svg".into())),
                at(5, Claim::Url("https://example.org/x".into())),
            ]
        );
    }

    #[test]
    fn lines_count_from_the_top_of_the_document() {
        let found = claims("# Title\n\ntext\n\n```sh\n\nclusterctl up\n```\n\n`--dev`\n");
        let lines: Vec<usize> = found.iter().map(|found| found.line).collect();
        assert_eq!(lines, vec![7, 10], "{found:?}");
    }

    #[test]
    fn heading_anchors_follow_githubs_rule() {
        assert_eq!(
            anchors(
                "# Code map\n\n## `crates/cluster-app` — the node\n\n### 1. Read, modify, write\n"
            ),
            vec![
                "code-map",
                "cratescluster-app--the-node",
                "1-read-modify-write"
            ]
        );
    }
}
