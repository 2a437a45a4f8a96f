#!/usr/bin/env bash
# Create the local cluster's PKI in DIR (idempotent): a CA, the apiserver serving
# certificate (SANs 127.0.0.1, localhost, the kubernetes service names), client
# certificates for the admin and the controller-manager, and the service-account key pair.
set -euo pipefail
dir=$1
mkdir -p "$dir"; cd "$dir"
[ -f ca.crt ] || openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=rekube-local-ca" \
  -keyout ca.key -out ca.crt 2>/dev/null

cert() { # name, subject, extensions
  [ -f "$1.crt" ] && return
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%s\n' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
cert admin "/O=system:masters/CN=rekube-admin" "basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
cert controller-manager "/CN=system:kube-controller-manager" "basicConstraints=CA:FALSE
keyUsage=digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
[ -f sa.key ] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }
