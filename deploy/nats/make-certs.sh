#!/bin/sh
# A private CA and one certificate per NATS node (server and route TLS), for deploy/nats/node*.conf.
#   sh deploy/nats/make-certs.sh /etc/nats/tls sims-nats-1 sims-nats-2 sims-nats-3
# Keep ca.key offline once the nodes have their certificates. Certificates last 825 days: renew before.
set -eu
out=${1:?usage: make-certs.sh DIR NODE...}
shift
[ "$#" -gt 0 ] || { echo "name at least one node" >&2; exit 2; }
mkdir -p "$out"
umask 077
if [ ! -f "$out/ca.key" ]; then
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=SIMS NATS CA" -keyout "$out/ca.key" -out "$out/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
for node in "$@"; do
  cat > "$out/$node.ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:$node,DNS:localhost,IP:127.0.0.1${SIMS_EXTRA_SANS:+,$SIMS_EXTRA_SANS}
EXT
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$node" \
    -keyout "$out/$node.key" -out "$out/$node.csr" 2>/dev/null
  openssl x509 -req -in "$out/$node.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
    -days 825 -extfile "$out/$node.ext" -out "$out/$node.crt" 2>/dev/null
  rm -f "$out/$node.csr" "$out/$node.ext"
  echo "$out/$node.crt"
done
chmod 644 "$out/ca.crt" "$out"/*.crt
