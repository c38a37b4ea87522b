#!/usr/bin/env bash
# Creates the TLS material and the scheduler configuration that an overlay
# consumes (default OUTDIR: deploy/overlays/production/tls):
#
#   ca.crt, ca.key          CA that signs both certificates below (ca.key never
#                           leaves OUTDIR: no generator references it)
#   server.crt, server.key  Spillway's serving certificate: DNS localhost, IP 127.0.0.1
#                           and any --san NAME (for a scheduler outside the pod)
#   client.crt, client.key  the scheduler's client certificate (CN spillway-scheduler)
#   scheduler-config.yaml   deploy/scheduler-config.yaml.in with the CA as caData
#
# Idempotent: existing files are kept while they are valid (a matching key,
# signed by the CA, more than 30 days left); only what is missing, expiring
# or inconsistent is (re)issued. A new CA re-issues both certificates.
# --rotate discards everything and starts over. A changed --san set re-issues
# the serving certificate.
#
# Needs bash and openssl (1.1.1 or 3.x) only.
set -euo pipefail

usage() {
  echo "usage: $0 [--rotate] [--san DNS-NAME|IP]... [OUTDIR]" >&2
  exit 2
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
rotate=false
outdir=
server_san="DNS:localhost, IP Address:127.0.0.1"
san_conf="DNS:localhost, IP:127.0.0.1"
while [[ $# -gt 0 ]]; do
  case $1 in
    --rotate) rotate=true ;;
    --san)
      [[ $# -ge 2 && -n $2 ]] || usage
      [[ $2 =~ ^[A-Za-z0-9.*-]+$ ]] || { echo "error: --san takes a DNS name or an IPv4 address: $2" >&2; exit 2; }
      if [[ $2 =~ ^[0-9.]+$ ]]; then
        server_san+=", IP Address:$2"; san_conf+=", IP:$2"
      else
        server_san+=", DNS:$2"; san_conf+=", DNS:$2"
      fi
      shift ;;
    -h|--help) usage ;;
    -*) echo "error: unknown option $1" >&2; usage ;;
    *) [[ -z $outdir ]] || usage; outdir=$1 ;;
  esac
  shift
done
outdir=${outdir:-$here/overlays/production/tls}
template=$here/scheduler-config.yaml.in

command -v openssl >/dev/null || { echo "error: openssl not found" >&2; exit 1; }
[[ -r $template ]] || { echo "error: template $template not found" >&2; exit 1; }

CA_DAYS=3650
LEAF_DAYS=730
RENEW_SECONDS=$((30 * 24 * 3600))

mkdir -p "$outdir"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

cat >"$tmp/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = spillway-extender-ca
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $san_conf
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

say() { printf 'gen-tls: %s\n' "$*"; }

new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# key_matches CERT KEY: the certificate carries the key's public half.
key_matches() {
  [[ -s $1 && -s $2 ]] || return 1
  local a b
  a=$(openssl x509 -in "$1" -noout -pubkey 2>/dev/null) || return 1
  b=$(openssl pkey -in "$2" -pubout 2>/dev/null) || return 1
  [[ $a == "$b" ]]
}

# still_valid CERT: parses and does not expire within RENEW_SECONDS.
still_valid() { openssl x509 -in "$1" -noout -checkend "$RENEW_SECONDS" >/dev/null 2>&1; }

# leaf_ok NAME: NAME.crt/NAME.key match, are signed by ca.crt and stay valid.
leaf_ok() {
  local crt=$outdir/$1.crt key=$outdir/$1.key
  key_matches "$crt" "$key" && still_valid "$crt" &&
    openssl verify -CAfile "$outdir/ca.crt" "$crt" >/dev/null 2>&1
}

issue_leaf() { # NAME CN EXTENSIONS
  local name=$1 cn=$2 ext=$3
  new_key "$tmp/$name.key"
  openssl req -new -key "$tmp/$name.key" -config "$tmp/openssl.cnf" -subj "/CN=$cn" -out "$tmp/$name.csr"
  openssl x509 -req -in "$tmp/$name.csr" -CA "$outdir/ca.crt" -CAkey "$outdir/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$LEAF_DAYS" -sha256 \
    -extfile "$tmp/openssl.cnf" -extensions "$ext" -out "$tmp/$name.crt" 2>/dev/null
  mv -f "$tmp/$name.key" "$outdir/$name.key"
  mv -f "$tmp/$name.crt" "$outdir/$name.crt"
  say "issued $outdir/$name.crt (CN=$cn, $LEAF_DAYS days)"
}

if $rotate; then
  say "--rotate: discarding the existing CA and certificates in $outdir"
  rm -f "$outdir"/{ca,server,client}.{crt,key}
fi

if key_matches "$outdir/ca.crt" "$outdir/ca.key" && still_valid "$outdir/ca.crt"; then
  say "keeping CA $outdir/ca.crt"
else
  new_key "$tmp/ca.key"
  openssl req -x509 -new -key "$tmp/ca.key" -config "$tmp/openssl.cnf" -extensions ca \
    -days "$CA_DAYS" -sha256 -set_serial "0x$(openssl rand -hex 16)" -out "$tmp/ca.crt"
  mv -f "$tmp/ca.key" "$outdir/ca.key"
  mv -f "$tmp/ca.crt" "$outdir/ca.crt"
  say "created CA $outdir/ca.crt ($CA_DAYS days)"
fi

# san CERT: the certificate's subjectAltName, as openssl prints it.
san() { openssl x509 -in "$1" -noout -text 2>/dev/null | grep -A1 'X509v3 Subject Alternative Name' | tail -n1 | sed 's/^ *//'; }

if leaf_ok server && [[ $(san "$outdir/server.crt") == "$server_san" ]]; then
  say "keeping $outdir/server.crt"
else
  issue_leaf server localhost server
fi
if leaf_ok client; then
  say "keeping $outdir/client.crt"
else
  issue_leaf client spillway-scheduler client
fi

# Certificates are public; only the keys stay owner-only.
chmod 0644 "$outdir"/{ca,server,client}.crt
chmod 0600 "$outdir"/{ca,server,client}.key

ca_data=$(openssl base64 -A -in "$outdir/ca.crt")
config=$(<"$template")
config=${config//@CA_DATA@/$ca_data}
printf '%s\n' "$config" >"$tmp/scheduler-config.yaml"
if cmp -s "$tmp/scheduler-config.yaml" "$outdir/scheduler-config.yaml"; then
  say "keeping $outdir/scheduler-config.yaml"
else
  mv -f "$tmp/scheduler-config.yaml" "$outdir/scheduler-config.yaml"
  chmod 0644 "$outdir/scheduler-config.yaml"
  say "wrote $outdir/scheduler-config.yaml (caData: the CA above)"
fi
