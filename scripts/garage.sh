#!/usr/bin/env bash
# Garage, the S3 store `weft bench wan` compares its loopback figures with, on this machine:
#   scripts/garage.sh start DIR   installs Garage once (cargo install from crates.io into
#                                 ${WEFT_GARAGE_ROOT:-$HOME/.cache/weft-garage}; 20-30 min on
#                                 2 cores the first time), starts three nodes in DIR with
#                                 replication factor 3 on loopback, makes a key and a bucket
#                                 `bench`, and prints "ENDPOINT KEY_ID SECRET BUCKET" on stdout
#   scripts/garage.sh stop DIR    stops them
# Progress goes to stderr.
set -euo pipefail
cmd="${1:-}"
dir="${2:-}"
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: garage.sh start|stop DIR" >&2; exit 2; }
root="${WEFT_GARAGE_ROOT:-$HOME/.cache/weft-garage}"
version="2.5.0"
garage="$root/bin/garage"
say() { echo "garage.sh: $*" >&2; }

if [ "$cmd" = stop ]; then
  for p in "$dir"/n*/pid; do
    [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
  done
  exit 0
fi
[ "$cmd" = start ] || { echo "usage: garage.sh start|stop DIR" >&2; exit 2; }

mkdir -p "$root"
exec 9>"$root.lock"
flock 9
if [ ! -x "$garage" ]; then
  say "installing garage $version from crates.io (once; this takes a while)"
  cargo install garage --version "$version" --locked --root "$root" \
    --target-dir "$root/target" >&2
  rm -rf "$root/target"
fi
flock -u 9

secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$dir"
s3_port=""
for i in 1 2 3; do
  n="$dir/n$i"
  mkdir -p "$n/meta" "$n/data"
  rpc=$(free_port); s3=$(free_port); admin=$(free_port)
  [ -z "$s3_port" ] && s3_port=$s3
  cat > "$n/garage.toml" <<TOML
metadata_dir = "$n/meta"
data_dir = "$n/data"
db_engine = "lmdb"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "us-east-1"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$admin"
TOML
  "$garage" -c "$n/garage.toml" server > "$n/log" 2>&1 &
  echo $! > "$n/pid"
done
g() { "$garage" -c "$dir/n1/garage.toml" "$@"; }
for _ in $(seq 1 100); do
  g status > /dev/null 2>&1 && break
  sleep 0.2
done
ids=()
for i in 1 2 3; do
  id=""
  for _ in $(seq 1 100); do
    id=$("$garage" -c "$dir/n$i/garage.toml" node id -q 2>/dev/null || true)
    [ -n "$id" ] && break
    sleep 0.2
  done
  [ -n "$id" ] || { say "node $i did not start: $(tail -5 "$dir/n$i/log")"; exit 1; }
  ids+=("$id")
done
for id in "${ids[@]:1}"; do g node connect "$id" > /dev/null; done
for id in "${ids[@]}"; do g layout assign -z dc1 -c 10G "${id%%@*}" > /dev/null; done
g layout apply --version 1 > /dev/null
key=$(g key create bench-key)
key_id=$(echo "$key" | awk '/Key ID/ {print $NF}')
key_secret=$(echo "$key" | awk '/Secret key/ {print $NF}')
g bucket create bench > /dev/null
g bucket allow --read --write --owner bench --key bench-key > /dev/null
echo "http://127.0.0.1:$s3_port $key_id $key_secret bench"
