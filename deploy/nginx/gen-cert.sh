#!/usr/bin/env bash
# Self-signed TLS certificate for the nginx load balancer (development, or until a real one is
# mounted): tls.crt + tls.key, RSA 2048, valid DAYS days, for localhost, 127.0.0.1 and the names
# given. Does nothing when both files exist unless --force.
# Usage: deploy/nginx/gen-cert.sh [--force] [OUT_DIR (default deploy/nginx/certs)] [extra DNS names...]
set -euo pipefail
force=false
if [ "${1:-}" = "--force" ]; then force=true; shift; fi
out=${1:-"$(cd "$(dirname "$0")" && pwd)/certs"}
[ $# -gt 0 ] && shift
days=${DAYS:-365}
mkdir -p "$out"
if [ "$force" = false ] && [ -s "$out/tls.crt" ] && [ -s "$out/tls.key" ]; then
  echo "kept $out/tls.crt (exists; --force to replace)"
  exit 0
fi
san="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do san="$san,DNS:$name"; done
umask 077
openssl req -x509 -newkey rsa:2048 -sha256 -nodes -days "$days" \
  -subj "/CN=${1:-localhost}" -addext "subjectAltName=$san" \
  -addext "keyUsage=digitalSignature,keyEncipherment" -addext "extendedKeyUsage=serverAuth" \
  -keyout "$out/tls.key" -out "$out/tls.crt" 2>/dev/null
chmod 644 "$out/tls.crt"
chmod 600 "$out/tls.key"
echo "wrote $out/tls.crt and $out/tls.key (self-signed, $days days, $san)"
