#!/usr/bin/env bash
# Prints the Secret that deploy/k8s reads, with fresh random values, to apply at once:
#
#   kubectl apply -f deploy/k8s/namespace.yaml
#   scripts/k8s-secret.sh | kubectl apply -f -
#
# Nothing is written to disk, so there is no file to commit by mistake. Keys:
#   session-key     the SESSION_KEY every node signs and encrypts cookies with (64 bytes, hex),
#                   mounted as a file and read through SESSION_KEY_FILE;
#   lb-admin-token  the load balancer's admin bearer token (32 bytes, hex).
# Applying it again replaces both: every session cookie issued before is refused afterwards
# (every user is logged out) once the nodes restart with the new key.
set -euo pipefail

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

cat <<YAML
apiVersion: v1
kind: Secret
metadata:
  name: cluster-secrets
  namespace: actix-cluster-lab
  labels:
    app.kubernetes.io/name: actix-cluster-lab
type: Opaque
stringData:
  session-key: "$(random_hex 64)"
  lb-admin-token: "$(random_hex 32)"
YAML
