#!/bin/sh
# mkcerts.sh DIR — test certificates for Printfarm's TLS and mTLS tests.
#
# Makes, with the openssl CLI and EC P-256 keys, in DIR:
#   ca.pem                        a private CA (CN=Printfarm Test CA)
#   server.pem, server.key        server cert signed by the CA:
#                                 CN=localhost, SAN DNS:localhost, IP:127.0.0.1
#   client.pem, client.key        client cert signed by the CA:
#                                 CN=client.printfarm.test (clientAuth)
#   selfsigned.pem, selfsigned.key  a self-signed server cert (same names), for
#                                 plain TLS where the client trusts the cert itself
#
# Idempotent: when every file already exists and the certificates still verify
# (and are valid for at least another day), nothing is changed. Otherwise all
# of them are made afresh. Files are written to a temporary directory and
# moved into place, so a concurrent run never sees a half-made set.
# Test-only material: made at test time, never committed.
set -eu

if [ $# -ne 1 ]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
files="ca.pem server.pem server.key client.pem client.key selfsigned.pem selfsigned.key"
days=3650

command -v openssl >/dev/null 2>&1 || { echo "$0: openssl not found" >&2; exit 1; }
mkdir -p "$dir"

have_valid_set() {
  for f in $files; do [ -s "$dir/$f" ] || return 1; done
  openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" "$dir/client.pem" >/dev/null 2>&1 || return 1
  for c in ca server client selfsigned; do
    openssl x509 -checkend 86400 -noout -in "$dir/$c.pem" >/dev/null 2>&1 || return 1
  done
  return 0
}

if have_valid_set; then
  exit 0
fi

tmp=$(mktemp -d "${dir%/}/.mkcerts.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# Private CA.
key "$tmp/ca.key"
openssl req -x509 -new -key "$tmp/ca.key" -sha256 -days "$days" \
  -subj "/O=Printfarm test/CN=Printfarm Test CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -addext "subjectKeyIdentifier=hash" \
  -out "$tmp/ca.pem"

cat >"$tmp/server.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1
authorityKeyIdentifier=keyid
EXT
cat >"$tmp/client.ext" <<'EXT'
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
subjectAltName=DNS:client.printfarm.test
authorityKeyIdentifier=keyid
EXT

# Server cert signed by the CA.
key "$tmp/server.key"
openssl req -new -key "$tmp/server.key" -subj "/O=Printfarm test/CN=localhost" -out "$tmp/server.csr"
openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
  -days "$days" -sha256 -extfile "$tmp/server.ext" -out "$tmp/server.pem" 2>/dev/null

# Client cert signed by the CA.
key "$tmp/client.key"
openssl req -new -key "$tmp/client.key" -subj "/O=Printfarm test/CN=client.printfarm.test" -out "$tmp/client.csr"
openssl x509 -req -in "$tmp/client.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
  -days "$days" -sha256 -extfile "$tmp/client.ext" -out "$tmp/client.pem" 2>/dev/null

# Self-signed server cert.
key "$tmp/selfsigned.key"
openssl req -x509 -new -key "$tmp/selfsigned.key" -sha256 -days "$days" \
  -subj "/O=Printfarm test/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -addext "extendedKeyUsage=serverAuth" \
  -out "$tmp/selfsigned.pem"

openssl verify -CAfile "$tmp/ca.pem" "$tmp/server.pem" "$tmp/client.pem" >/dev/null

# Certificates are public; keys stay 0600. The CA key is not kept.
chmod 644 "$tmp/ca.pem" "$tmp/server.pem" "$tmp/client.pem" "$tmp/selfsigned.pem"
for f in $files; do mv -f "$tmp/$f" "$dir/$f"; done
