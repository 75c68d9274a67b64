#!/usr/bin/env bash
# A malicious member against a local fabric of weft processes (not part of the test suite).
#
# Starts 5 honest nodes with `weft up` (short repair and garbage-collection delays), stores
# objects as a person would, admits `weft-rogue` by an ordinary invite, lets it run every
# attack of weft_cluster::attacks for ROUNDS rounds, waits past every delay, and then checks
# the honest outcome: every object reads back byte-identical through every node, the bucket
# is still its owner's, the owner's job still runs, every honest node is alive and answering,
# no name, job, log, quota, cosignature or forged receipt was taken, and no file appeared
# outside the nodes' folders. Exits non-zero on the first broken promise.
#
#   scripts/rogue-campaign.sh [ROUNDS]        (default 3; WEFT_PROFILE=release for a release build)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/weft-target}"
ROUNDS="${1:-3}"
PROFILE="${WEFT_PROFILE:-debug}"
flag=()
[ "$PROFILE" = release ] && flag=(--release)
cargo build "${flag[@]}" -p weft --bin weft -p weft-cluster --bin weft-rogue
W="$CARGO_TARGET_DIR/$PROFILE/weft"
R="$CARGO_TARGET_DIR/$PROFILE/weft-rogue"

DIR="$(mktemp -d /tmp/weft-campaign.XXXXXX)"
export WEFT_CONFIG="$DIR/config"
FABRIC="$DIR/fabric"
cleanup() { "$W" down --dir "$FABRIC" >/dev/null 2>&1 || true; }
trap cleanup EXIT
fail() { echo "CAMPAIGN FAILED: $*" >&2; exit 1; }
rm -f /tmp/weft-rogue-escape /tmp/weft-rogue-escape-blob

echo "== 5 honest nodes"
"$W" up --nodes 5 --no-wan --dir "$FABRIC" --gc-delay 5s --repair-grace 3s \
  --repair-interval 2s --quiet
N1="$FABRIC/node1"
"$W" --data "$N1" account create >/dev/null
"$W" --data "$N1" bucket create photos
sizes=(1000 100000 1048576 9437201)
for i in "${!sizes[@]}"; do
  head -c "${sizes[$i]}" /dev/urandom >"$DIR/obj$i"
  "$W" --data "$N1" put "$DIR/obj$i" "photos/obj$i" >/dev/null
done
WEFT_EXAMPLES_DIR="$DIR/examples" scripts/build-examples.sh >/dev/null
job="$("$W" --data "$N1" job run --module "$DIR/examples/spin.wasm" --output photos/spin/ \
  --fuel 1000000000000000 --deadline 10m --detach -- 600)"
echo "the owner's job $job runs while the rogue attacks"
find "$DIR" /tmp -maxdepth 1 -newer "$DIR/obj0" 2>/dev/null | sort >"$DIR/files-before"

echo "== the rogue member joins and attacks ($ROUNDS rounds)"
invite="$("$W" --data "$N1" invite --site rogue --ttl 10m)"
"$R" "$invite" "$DIR/rogue" "$ROUNDS" 5 | tee "$DIR/rogue.log"

echo "== honest housekeeping past every delay"
sleep 20

echo "== checks"
for n in 1 2 3 4 5; do
  "$W" --data "$FABRIC/node$n" status >/dev/null || fail "node$n does not answer"
  for i in "${!sizes[@]}"; do
    "$W" --data "$FABRIC/node$n" get "photos/obj$i" -o "$DIR/back" >/dev/null 2>&1 \
      || fail "photos/obj$i does not read through node$n"
    cmp -s "$DIR/obj$i" "$DIR/back" || fail "photos/obj$i differs through node$n"
  done
done
echo "every object reads back byte-identical through every node"
head -c 5000 /dev/urandom >"$DIR/after"
"$W" --data "$FABRIC/node3" put "$DIR/after" photos/after >/dev/null \
  || fail "the owner cannot write its bucket any more"
echo "the bucket is still its owner's"
alive="$("$W" --data "$N1" nodes --json | grep -c '"state": "alive"' || true)"
[ "$alive" -ge 5 ] || fail "only $alive nodes alive in node1's view"
echo "$alive nodes alive in node1's view"
[ ! -e /tmp/weft-rogue-escape ] && [ ! -e /tmp/weft-rogue-escape-blob ] \
  || fail "a file appeared outside the nodes' folders"
echo "no file outside the nodes' folders"
taken="$(grep -Eo '(names_taken|job_asks_taken|log_reads_answered|quota_rows_taken|deep_rows_not_refused|ledger_taken): [1-9][0-9]*' \
  "$DIR/rogue.log" || true)"
[ -z "$taken" ] || fail "the honest nodes accepted: $taken"
grep -Eq 'log_reads: [1-9]' "$DIR/rogue.log" || fail "the rogue found no job to attack"
echo "no name, job, log, quota, deep row, cosignature or forged receipt taken in any round"
state="$("$W" --data "$N1" job status "$job" --json | grep -o '"state": "[a-z]*"')"
[ "$state" = '"state": "running"' ] || fail "the owner's job is $state"
echo "the owner's job still runs"
"$W" --data "$N1" fabric quota | grep -q "no quotas" || fail "a quota the admin never set"
echo "no quota the admin did not set"
echo "CAMPAIGN PASSED: $ROUNDS rounds, fabric in $DIR"
