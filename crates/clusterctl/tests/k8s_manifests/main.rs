//! deploy/k8s checked for what the Kubernetes API schemas cannot see. No Kubernetes cluster
//! runs here: `scripts/k8s-validate.sh` checks every manifest against the API's schemas, and
//! these tests check that the manifests fit together (selectors, Services, the Secret) and fit
//! the programs they run (probe paths served by the real binaries, a grace period that
//! outlasts the drain, pinned images). The second test breaks a copy of the manifests one way
//! per rule, so each rule is shown to catch what it is there for.

mod checks;
mod manifests;
mod probes;

use checks::{
    every_manifest_is_listed, grace_outlasts_the_stop, http_probes, images_are_pinned,
    one_namespace, only_redis_clients_reach_redis, probes_reach_a_listener, secret_keys_exist,
    selectors_match_their_pods, the_balancer_resolves_the_nodes,
};
use manifests::{generated_secret, read_manifest_files, Manifests};
use probes::RunningPrograms;

/// The rules that need only the manifests.
const STATIC_CHECKS: [fn(&Manifests) -> Vec<String>; 9] = [
    every_manifest_is_listed,
    one_namespace,
    selectors_match_their_pods,
    only_redis_clients_reach_redis,
    the_balancer_resolves_the_nodes,
    probes_reach_a_listener,
    grace_outlasts_the_stop,
    secret_keys_exist,
    images_are_pinned,
];

#[test]
fn the_manifests_fit_together_and_fit_the_programs() {
    let files = read_manifest_files();
    let manifests = Manifests::parse(&files, &generated_secret()).unwrap_or_else(|e| panic!("{e}"));
    let mut problems: Vec<String> = STATIC_CHECKS
        .iter()
        .flat_map(|check| check(&manifests))
        .collect();
    let programs = RunningPrograms::start();
    problems.extend(programs.probe_paths_are_served(&http_probes(&manifests).0));
    assert!(
        problems.is_empty(),
        "deploy/k8s:\n- {}",
        problems.join("\n- ")
    );
}

/// One way to break the manifests, and what the rule that must catch it says.
struct Mistake<'a> {
    file: &'a str,
    from: &'a str,
    to: &'a str,
    check: &'a dyn Fn(&Manifests) -> Vec<String>,
    reported: &'a str,
}

#[test]
fn every_check_catches_its_mistake() {
    let files = read_manifest_files();
    let secret = generated_secret();
    let programs = RunningPrograms::start();
    let probe_paths = |m: &Manifests| programs.probe_paths_are_served(&http_probes(m).0);
    let mistakes = [
        Mistake {
            file: "kustomization.yaml",
            from: "  - node-pdb.yaml\n",
            to: "",
            check: &every_manifest_is_listed,
            reported: "node-pdb.yaml is not listed",
        },
        Mistake {
            file: "node-service.yaml",
            from: "namespace: actix-cluster-lab",
            to: "namespace: default",
            check: &one_namespace,
            reported: "Service/node (node-service.yaml) is not in namespace actix-cluster-lab",
        },
        Mistake {
            file: "node-deployment.yaml",
            from: "    matchLabels:\n      app.kubernetes.io/name: actix-cluster-lab\n      app.kubernetes.io/component: node",
            to: "    matchLabels:\n      app.kubernetes.io/name: actix-cluster-lab\n      app.kubernetes.io/component: web",
            check: &selectors_match_their_pods,
            reported: "Deployment/node: spec.selector.matchLabels does not select its own pod template",
        },
        Mistake {
            file: "node-service-headless.yaml",
            from: "component: node\n  ports:",
            to: "component: nodes\n  ports:",
            check: &selectors_match_their_pods,
            reported: "Service/node-headless selects no pod",
        },
        Mistake {
            file: "node-pdb.yaml",
            from: "      app.kubernetes.io/component: node\n",
            to: "      app.kubernetes.io/component: nodes\n",
            check: &selectors_match_their_pods,
            reported: "PodDisruptionBudget/node selects no pod",
        },
        Mistake {
            file: "node-hpa.yaml",
            from: "    kind: Deployment\n    name: node\n",
            to: "    kind: Deployment\n    name: nodes\n",
            check: &selectors_match_their_pods,
            reported: "scales Deployment/nodes, which is not here",
        },
        Mistake {
            file: "redis-statefulset.yaml",
            from: "serviceName: redis",
            to: "serviceName: redis-headless",
            check: &selectors_match_their_pods,
            reported: "serviceName \"redis-headless\" is no headless Service",
        },
        Mistake {
            file: "redis-networkpolicy.yaml",
            from: "              app.kubernetes.io/component: node",
            to: "              app.kubernetes.io/component: lb",
            check: &only_redis_clients_reach_redis,
            reported: "lets {\"Deployment/lb\"} reach StatefulSet/redis",
        },
        Mistake {
            file: "redis-networkpolicy.yaml",
            from: "        - podSelector:",
            to: "        - namespaceSelector: {}\n          podSelector:",
            check: &only_redis_clients_reach_redis,
            reported: "admits a peer that is not only a pod selector",
        },
        Mistake {
            file: "lb-deployment.yaml",
            from: "value: node-headless:8000",
            to: "value: node:8000",
            check: &the_balancer_resolves_the_nodes,
            reported: "Service node is not headless",
        },
        Mistake {
            file: "lb-deployment.yaml",
            from: "value: node-headless:8000",
            to: "value: node-headless:8080",
            check: &the_balancer_resolves_the_nodes,
            reported: "node-headless has no port 8080",
        },
        Mistake {
            file: "node-deployment.yaml",
            from: "value: 0.0.0.0:8000",
            to: "value: 0.0.0.0:9000",
            check: &probes_reach_a_listener,
            reported: "Deployment/node cluster-app readinessProbe: port \"http\" is no port the container listens on",
        },
        Mistake {
            file: "node-deployment.yaml",
            from: "path: /readyz",
            to: "path: /ready",
            check: &probe_paths,
            reported: "Deployment/node cluster-app readinessProbe: cluster-app answers 404 to GET /ready",
        },
        Mistake {
            file: "lb-deployment.yaml",
            from: "path: /healthz",
            to: "path: /health",
            check: &probe_paths,
            reported: "Deployment/lb cluster-lb startupProbe: cluster-lb answers 404 to GET /health",
        },
        Mistake {
            file: "node-deployment.yaml",
            from: "terminationGracePeriodSeconds: 30",
            to: "terminationGracePeriodSeconds: 10",
            check: &grace_outlasts_the_stop,
            reported: "Deployment/node cluster-app: terminationGracePeriodSeconds (10 s) does not outlast",
        },
        Mistake {
            file: "lb-deployment.yaml",
            from: "value: \"10000\"",
            to: "value: \"30000\"",
            check: &grace_outlasts_the_stop,
            reported: "Deployment/lb cluster-lb: terminationGracePeriodSeconds (30 s) does not outlast",
        },
        Mistake {
            file: "node-deployment.yaml",
            from: "name: DRAIN_MS",
            to: "name: DRAIN_SECONDS",
            check: &grace_outlasts_the_stop,
            reported: "DRAIN_MS is not set",
        },
        Mistake {
            file: "lb-deployment.yaml",
            from: "- key: lb-admin-token",
            to: "- key: admin-token",
            check: &secret_keys_exist,
            reported: "mounts key \"admin-token\" of Secret cluster-secrets",
        },
        Mistake {
            file: "lb-deployment.yaml",
            from: "value: /run/secrets/cluster/lb-admin-token",
            to: "value: /run/secrets/lb-admin-token",
            check: &secret_keys_exist,
            reported: "LB_ADMIN_TOKEN_FILE /run/secrets/lb-admin-token is no file of a mounted Secret",
        },
        Mistake {
            file: "node-deployment.yaml",
            from: "- key: session-key",
            to: "- key: session_key",
            check: &secret_keys_exist,
            reported: "mounts key \"session_key\" of Secret cluster-secrets",
        },
        Mistake {
            file: "node-deployment.yaml",
            from: "value: /run/secrets/cluster/session-key",
            to: "value: /run/secrets/session-key",
            check: &secret_keys_exist,
            reported: "SESSION_KEY_FILE /run/secrets/session-key is no file of a mounted Secret",
        },
        Mistake {
            file: "node-deployment.yaml",
            from: "image: actix-cluster-lab:0.1.0",
            to: "image: actix-cluster-lab:latest",
            check: &images_are_pinned,
            reported: "cluster-app: image \"actix-cluster-lab:latest\" is not pinned",
        },
        Mistake {
            file: "redis-statefulset.yaml",
            from: "image: redis:7.2.5",
            to: "image: registry.local:5000/redis",
            check: &images_are_pinned,
            reported: "redis: image \"registry.local:5000/redis\" is not pinned",
        },
        Mistake {
            file: "kustomization.yaml",
            from: "newTag: 0.1.0",
            to: "newTag: latest",
            check: &images_are_pinned,
            reported: "kustomization.yaml sets \"actix-cluster-lab\" to latest",
        },
    ];
    for mistake in mistakes {
        let mut broken = files.clone();
        let text = broken
            .get_mut(mistake.file)
            .unwrap_or_else(|| panic!("no {} in deploy/k8s", mistake.file));
        assert!(
            text.contains(mistake.from),
            "{}: {:?} is not there to break",
            mistake.file,
            mistake.from
        );
        *text = text.replacen(mistake.from, mistake.to, 1);
        let manifests = Manifests::parse(&broken, &secret).unwrap_or_else(|e| panic!("{e}"));
        let problems = (mistake.check)(&manifests);
        assert!(
            problems.iter().any(|p| p.contains(mistake.reported)),
            "{}: {:?} -> {:?} should be reported as {:?}; the check said {problems:#?}",
            mistake.file,
            mistake.from,
            mistake.to,
            mistake.reported
        );
    }
}
