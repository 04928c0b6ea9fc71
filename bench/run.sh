#!/usr/bin/env bash
# vagonfs benchmarks against a local emulator, each result next to a baseline measured in the
# same run (the machine is shared and noisy, so only ratios are comparable between runs).
#
# Usage (as root: FUSE mounts and drop_caches):   bench/run.sh  [> table.md]
# The Markdown table goes to stdout; progress goes to stderr.
#
# Sizes (env):
#   BENCH_SIZE_MIB      size of the big file read and written            (default 1024)
#   BENCH_CACHE_MIB     --cache-size of every mount                       (default 256)
#   BENCH_DIR_ENTRIES   entries of the folder listed with ls -l, at emulator latency 0 and
#                       20 ms                                             (default 10000)
#   BENCH_RAND_4K_IOS   random 4 KiB reads (fio and baseline alike)       (default 2000)
#   BENCH_RAND_256K_IOS random 256 KiB reads                              (default 500)
#   BENCH_SMALL_FILES   4 KiB files created                               (default 1000)
#   BENCH_REPEAT        runs of each read benchmark; the best is kept     (default 3)
#   BENCH_WALK_FILES    files of the folder read with cp -r out of the mount (default 200)
#   BENCH_WALK_SIZE     their size in bytes                               (default 16384)
#   BENCH_RM_FILES      files removed with rm -r, as 10 folders            (default 200)
#   BENCH_TREE_FANOUT   the scanned tree: this many folders, each with this many (default 10)
#   BENCH_TTFB_REPEAT   fresh mounts for time to first byte (median)      (default 5)
#   BENCH_WRITE         auto (run if the mount accepts writes) | 0 | 1    (default auto)
#   BENCH_LATENCY_MS    emulator --latency-ms: delay added to every API and data request,
#                       for the mount and the baselines alike (default 0; run 0 and 20)
#   VAGONFS             the binary (default target/release/vagonfs, built if missing)
#   BENCH_KEEP=1        keep the work folder (logs) instead of deleting it
#   BENCH_ONLY=seq      run only the sequential read section (with its data GET count and the
#                       daemon's CPU time), then report
#   BENCH_ONLY=write    run only the write section (1 GiB write, RSS, cp -r of small files)
#   BENCH_ONLY=rand     run only the random read section (fio against ranged GETs, with the
#                       daemon's CPU time per read), then report
#   BENCH_ONLY=walk     run only the folder read (cp -r of small files out of the mount)
#   BENCH_ONLY=ls       run only the listing (cold and warm ls -l at latency 0 and 20)
#   BENCH_ONLY=rm       run only the removal (rm -r of a tree of small files, then vagonfs sync)
#   BENCH_ONLY=tree     run only the tree scan (find of a tree of folders, fresh mount)
#
# Every process started here is stopped by its PID; every mount is unmounted on exit
# (umount -l as the fallback).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CLIENT="$HERE/vagon_client.py"

SIZE_MIB="${BENCH_SIZE_MIB:-1024}"
CACHE_MIB="${BENCH_CACHE_MIB:-256}"
DIR_ENTRIES="${BENCH_DIR_ENTRIES:-10000}"
RAND_4K_IOS="${BENCH_RAND_4K_IOS:-2000}"
RAND_256K_IOS="${BENCH_RAND_256K_IOS:-500}"
SMALL_FILES="${BENCH_SMALL_FILES:-1000}"
TTFB_REPEAT="${BENCH_TTFB_REPEAT:-5}"
REPEAT="${BENCH_REPEAT:-3}"
WALK_FILES="${BENCH_WALK_FILES:-200}"
WALK_SIZE="${BENCH_WALK_SIZE:-16384}"
RM_FILES="${BENCH_RM_FILES:-200}"
TREE_FANOUT="${BENCH_TREE_FANOUT:-10}"
WRITE_MODE="${BENCH_WRITE:-auto}"
LATENCY_MS="${BENCH_LATENCY_MS:-0}"
VAGONFS="${VAGONFS:-$ROOT/target/release/vagonfs}"

# Daemon memory allowed on top of --cache-size while reading (MiB).
RSS_READ_SLACK_MIB=64
# Daemon peak RSS allowed while writing the big file (MiB).
RSS_WRITE_BUDGET_MIB=128
# The mount's --transfers (its default): files uploaded at once.
TRANSFERS=8
# Part size of the curl multipart baseline (MiB), and its parallel PUTs.
CURL_PART_MIB=16
CURL_PUT_PARALLEL=4
# Targets (ratios of speed, higher is better).
TARGET_SEQ_READ=0.8
TARGET_SEQ_WRITE=0.8
# Bounded waits (seconds).
START_WAIT=60
STOP_WAIT=30

API_KEY="demo-key"
API_SECRET="demo-secret"
SIZE_BYTES=$((SIZE_MIB * 1024 * 1024))

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (FUSE mounts, /proc/sys/vm/drop_caches)"
for tool in fio curl python3 dd awk jq openssl; do
    command -v "$tool" >/dev/null || die "$tool is missing (bench/setup.sh installs what is needed)"
done
if [[ ! -x "$VAGONFS" ]]; then
    log "building the release binary"
    (cd "$ROOT" && cargo build --release --quiet) || die "cargo build --release"
fi

WORK="$(mktemp -d /tmp/vagonfs-bench.XXXXXX)"
EMU_PID=""
MOUNT_PID=""
MNT=""
MOUNT_SEQ=0

cleanup() {
    set +e
    stop_mount
    if [[ -n "$EMU_PID" ]]; then
        kill -TERM "$EMU_PID" 2>/dev/null
        for _ in $(seq 1 50); do kill -0 "$EMU_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$EMU_PID" 2>/dev/null
        wait "$EMU_PID" 2>/dev/null
    fi
    if [[ "${BENCH_KEEP:-0}" == 1 ]]; then
        log "work folder kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ----------------------------------------------------------------------------------

now_ns() { date +%s%N; }
secs_since() { awk -v a="$1" -v b="$(now_ns)" 'BEGIN { printf "%.4f", (b - a) / 1e9 }'; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; }
mibps() { calc "$SIZE_MIB / $1" 1; }
json() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval(sys.argv[1], {}, {"d": d}))' "$1"; }
client() { VAGON_API_URL="$API_URL" VAGON_API_KEY="$API_KEY" VAGON_API_SECRET="$API_SECRET" python3 "$CLIENT" "$@"; }
# A signed API call with curl alone (HMAC as in the contract, via openssl): METHOD PATH BODY.
signed_curl() {
    local method="$1" path="/organization-management/v1$2" body="$3" ts nonce sig
    ts="$(date +%s%3N)"
    nonce="$(cat /proc/sys/kernel/random/uuid)"
    sig="$(printf '%s' "$API_KEY$method$path$ts$nonce$body" | openssl dgst -sha256 -hmac "$API_SECRET" -r | cut -d' ' -f1)"
    curl -sSf -X "$method" -H "Authorization: HMAC $API_KEY:$sig:$nonce:$ts" \
        -H 'Content-Type: application/json' --data-binary "$body" "$API_URL$path"
}
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches; }
is_mounted() { awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

start_emulator() {
    mkdir -p "$WORK/emu"
    RUST_LOG=warn "$VAGONFS" emulator --listen 127.0.0.1:0 --data "$WORK/emu" \
        --latency-ms "$LATENCY_MS" >"$WORK/emulator.out" 2>"$WORK/emulator.err" &
    EMU_PID=$!
    local deadline=$((SECONDS + START_WAIT))
    while ! grep -q 'listening on ' "$WORK/emulator.out" 2>/dev/null; do
        kill -0 "$EMU_PID" 2>/dev/null || { cat "$WORK/emulator.err" >&2; die "emulator exited"; }
        ((SECONDS < deadline)) || die "emulator did not start"
        sleep 0.1
    done
    API_URL="$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' "$WORK/emulator.out" | head -1)"
    DATA_HOSTPORT="${API_URL#http://}"
    log "emulator pid $EMU_PID at $API_URL (latency ${LATENCY_MS} ms per request)"
}

# A fresh `vagonfs mount --machine 1` on a new empty folder; sets MNT and MOUNT_PID.
start_mount() {
    MOUNT_SEQ=$((MOUNT_SEQ + 1))
    MNT="$WORK/mnt$MOUNT_SEQ"
    mkdir -p "$MNT"
    VAGON_API_URL="$API_URL" VAGON_API_KEY="$API_KEY" VAGON_API_SECRET="$API_SECRET" \
        HOME="$WORK/home" XDG_CONFIG_HOME="$WORK/home/.config" XDG_CACHE_HOME="$WORK/home/.cache" \
        "$VAGONFS" mount --machine 1 --cache-size "$CACHE_MIB" \
        --log-file "$WORK/mount$MOUNT_SEQ.log" "$MNT" 2>>"$WORK/mount$MOUNT_SEQ.log" &
    MOUNT_PID=$!
    local deadline=$((SECONDS + START_WAIT))
    until is_mounted "$MNT"; do
        kill -0 "$MOUNT_PID" 2>/dev/null || { tail -20 "$WORK/mount$MOUNT_SEQ.log" >&2; MOUNT_PID=""; die "mount exited"; }
        ((SECONDS < deadline)) || die "mount did not come up"
        sleep 0.05
    done
}

stop_mount() {
    [[ -n "$MOUNT_PID" ]] || return 0
    kill -TERM "$MOUNT_PID" 2>/dev/null || true
    local deadline=$((SECONDS + STOP_WAIT))
    while kill -0 "$MOUNT_PID" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    if [[ -n "$MNT" ]] && is_mounted "$MNT"; then umount -l "$MNT" 2>/dev/null || true; fi
    if kill -0 "$MOUNT_PID" 2>/dev/null; then kill -KILL "$MOUNT_PID" 2>/dev/null || true; fi
    wait "$MOUNT_PID" 2>/dev/null || true
    MOUNT_PID=""
}

# `vagonfs sync` on the current mount (must succeed: everything is on the server).
m_sync() { "$VAGONFS" sync "$MNT" >"$WORK/sync.out" 2>&1 || { cat "$WORK/sync.out" >&2; die "vagonfs sync failed"; }; }

hwm_mib() { awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/$MOUNT_PID/status"; }

# Results: one Markdown row each.
ROWS=()
row() { ROWS+=("| $1 | $2 | $3 | $4 | $5 |"); }
verdict() { # ratio target -> pass/MISS
    awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t + 0) ? "pass" : "**MISS**" }'
}

# --- setup ------------------------------------------------------------------------------------

start_emulator
log "writing a ${SIZE_MIB} MiB random source file"
head -c "$SIZE_BYTES" /dev/urandom >"$WORK/big.src"
SRC_SHA="$(sha256sum "$WORK/big.src" | cut -d' ' -f1)"

if [[ "${BENCH_ONLY:-}" != write ]]; then
    log "uploading it through the API (python client, ${CURL_PART_MIB} MiB parts)"
    BIG_ID="$(client upload "$WORK/big.src" --name big.bin --machine 1 --chunk-mb "$CURL_PART_MIB" | json 'd["id"]')"
    BIG_URL="$(client link "$BIG_ID" | json 'd["url"]')"
    log "big.bin is file $BIG_ID"
fi

report() {
    echo "| Benchmark | vagonfs | Baseline | Ratio (speed vs baseline) | Target |"
    echo "|---|---|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
}

# --- reading a folder of small files: cp -r out of the mount -------------------------------------

min_of() { tr ' ' '\n' | grep -v '^$' | sort -g | head -1; }
# cp -r of $1 (a folder at the root of machine 1) out of a fresh mount: sets WALK_T (seconds) and
# WALK_REQS (the requests it made); checks the number of files copied ($2).
walk_cp() {
    local t0 n
    start_mount
    client reset-stats >/dev/null
    rm -rf "$WORK/walk-out"
    t0="$(now_ns)"
    cp -r "$MNT/$1" "$WORK/walk-out"
    WALK_T="$(secs_since "$t0")"
    WALK_REQS="$(client stats | json '"%d list, %d link, %d GET" % (d["list_files"], d["file_link"] + d["request_download"], d["data_get"])')"
    stop_mount
    n="$(find "$WORK/walk-out" -type f | wc -l)"
    [[ "$n" -eq "$2" ]] || die "cp -r of $1 copied $n files, expected $2"
}
# python: list + link + GET of each file of folders $@, one file after the other -> seconds
read_all_seq() {
    local total=0 f
    for f in "$@"; do
        total="$(calc "$total + $(client read-all --machine 1 --parent "$f" --parallel 1 | json 'd["seconds"]')" 4)"
    done
    echo "$total"
}
walk_bench() {
    local flat tree subs=() per=$((WALK_FILES / 10)) k sub
    local t_flat="" t_tree="" t_seq="" t_par="" t_tseq="" r_flat r_tree rep
    log "reading folders of small files: $WALK_FILES files of $WALK_SIZE bytes, flat and as 10 folders (python client, latency 0)"
    client latency 0 >/dev/null
    flat="$(client mkdir walk-src --machine 1 | json 'd["id"]')"
    client small-files --count "$WALK_FILES" --size "$WALK_SIZE" --machine 1 --parent "$flat" >/dev/null
    tree="$(client mkdir walk-tree --machine 1 | json 'd["id"]')"
    for k in $(seq 1 10); do
        sub="$(client mkdir "d$k" --machine 1 --parent "$tree" | json 'd["id"]')"
        subs+=("$sub")
        client small-files --count "$per" --size "$WALK_SIZE" --machine 1 --parent "$sub" >/dev/null
    done
    client latency "$LATENCY_MS" >/dev/null
    for rep in $(seq 1 "$REPEAT"); do
        log "folder read ($rep/$REPEAT): cp -r out of a fresh mount, flat then the tree"
        walk_cp walk-src "$WALK_FILES"
        t_flat="$t_flat $WALK_T"
        r_flat="$WALK_REQS"
        walk_cp walk-tree $((per * 10))
        t_tree="$t_tree $WALK_T"
        r_tree="$WALK_REQS"
        log "folder read ($rep/$REPEAT): python list + link + GET of each file"
        t_seq="$t_seq $(read_all_seq "$flat")"
        t_par="$t_par $(client read-all --machine 1 --parent "$flat" --parallel 8 | json 'd["seconds"]')"
        t_tseq="$t_tseq $(read_all_seq "${subs[@]}")"
    done
    t_flat="$(min_of <<<"$t_flat")"
    t_tree="$(min_of <<<"$t_tree")"
    t_seq="$(min_of <<<"$t_seq")"
    t_par="$(min_of <<<"$t_par")"
    t_tseq="$(min_of <<<"$t_tseq")"
    row "cp -r out of the mount: $WALK_FILES files of $WALK_SIZE bytes in one folder, fresh mount (s; requests of the last run)" "$(calc "$t_flat" 3); $r_flat" "$(calc "$t_seq" 3) (python: list, then link + GET of each file, one after the other)" "$(calc "$t_seq / $t_flat")" "—"
    row "cp -r out of the mount, one folder, against a parallel client (s)" "$(calc "$t_flat" 3)" "$(calc "$t_par" 3) (python: the same, 8 files at a time)" "$(calc "$t_par / $t_flat")" "—"
    row "cp -r out of the mount: 10 folders of $per files of $WALK_SIZE bytes, fresh mount (s; requests of the last run)" "$(calc "$t_tree" 3); $r_tree" "$(calc "$t_tseq" 3) (python: each folder listed, then link + GET of each file, one after the other)" "$(calc "$t_tseq / $t_tree")" "—"
}
# --- rm -r of a tree of small files -------------------------------------------------------------

# A tree `name` of 10 folders of RM_FILES/10 small files at the root, made through the API at
# latency 0; prints its id.
rm_tree() {
    local top k sub
    client latency 0 >/dev/null
    top="$(client mkdir "$1" --machine 1 | json 'd["id"]')"
    for k in $(seq 1 10); do
        sub="$(client mkdir "d$k" --machine 1 --parent "$top" | json 'd["id"]')"
        client small-files --count $((RM_FILES / 10)) --size 1024 --machine 1 --parent "$sub" >/dev/null
    done
    client latency "$LATENCY_MS" >/dev/null
    echo "$top"
}
# rm -r of the tree from a fresh mount (the folders listed first, as a file manager has them),
# then `vagonfs sync` (until the server has deleted everything), against a client deleting the
# same tree one object after the other (what rm -r cost when each unlink waited on its delete).
rm_bench() {
    local rep top t0 t_rm="" t_all="" t_base="" dels n
    for rep in $(seq 1 "$REPEAT"); do
        log "rm -r ($rep/$REPEAT): $RM_FILES files in 10 folders, fresh mount, --latency-ms $LATENCY_MS"
        rm_tree "rm-tree-$rep" >/dev/null
        start_mount
        n="$(find "$MNT/rm-tree-$rep" -type f | wc -l)"
        [[ "$n" -eq $((RM_FILES / 10 * 10)) ]] || die "the tree shows $n files"
        client reset-stats >/dev/null
        t0="$(now_ns)"
        rm -r "$MNT/rm-tree-$rep"
        t_rm="$t_rm $(secs_since "$t0")"
        m_sync
        t_all="$t_all $(secs_since "$t0")"
        dels="$(client stats | json 'd["delete"]')"
        ! client find "rm-tree-$rep" --machine 1 >/dev/null 2>&1 || die "rm-tree-$rep is still on the server"
        stop_mount
        top="$(rm_tree "rm-base-$rep")"
        t_base="$t_base $(client delete-tree --machine 1 --parent "$top" | json 'd["seconds"]')"
    done
    t_rm="$(min_of <<<"$t_rm")"
    t_all="$(min_of <<<"$t_all")"
    t_base="$(min_of <<<"$t_base")"
    row "rm -r of $RM_FILES files in 10 folders, fresh mount, --latency-ms $LATENCY_MS (s; delete requests of the last run)" "$(calc "$t_rm" 3); $dels" "$(calc "$t_base" 3) (python: each folder listed, then DELETE of each file and folder, one after the other)" "$(calc "$t_base / $t_rm")" "—"
    row "rm -r then vagonfs sync: the server has deleted everything (s)" "$(calc "$t_all" 3)" "$(calc "$t_base" 3) (same)" "$(calc "$t_base / $t_all")" "—"
}

# --- find of a tree of folders ------------------------------------------------------------------

# `find` of a tree of TREE_FANOUT folders of TREE_FANOUT folders from a fresh
# mount, against a client listing the same folders one after the other (what a mount that lists
# each folder when it is opened costs), with the list requests it made.
tree_bench() {
    local top rep t0 t="" t_base="" lists n want
    log "making a tree of $TREE_FANOUT x $TREE_FANOUT folders (python client, latency 0)"
    client latency 0 >/dev/null
    top="$(client mkdir scan-tree --machine 1 | json 'd["id"]')"
    client make-tree --machine 1 --parent "$top" --fanout "$TREE_FANOUT" --depth 2 >/dev/null
    client latency "$LATENCY_MS" >/dev/null
    want=$((1 + TREE_FANOUT + TREE_FANOUT * TREE_FANOUT))
    for rep in $(seq 1 "$REPEAT"); do
        log "find ($rep/$REPEAT): fresh mount, --latency-ms $LATENCY_MS"
        start_mount
        client reset-stats >/dev/null
        t0="$(now_ns)"
        n="$(find "$MNT/scan-tree" | wc -l)"
        t="$t $(secs_since "$t0")"
        [[ "$n" -eq "$want" ]] || die "find showed $n names, expected $want"
        lists="$(client stats | json 'd["list_files"]')"
        stop_mount
        t_base="$t_base $(client list-tree --machine 1 --parent "$top" | json 'd["seconds"]')"
    done
    t="$(min_of <<<"$t")"
    t_base="$(min_of <<<"$t_base")"
    row "find of a tree of $((1 + TREE_FANOUT + TREE_FANOUT * TREE_FANOUT)) folders, fresh mount, --latency-ms $LATENCY_MS (s; list requests of the last run)" "$(calc "$t" 3); $lists" "$(calc "$t_base" 3) (python: each folder listed, one after the other)" "$(calc "$t_base / $t")" "—"
}

# --- ls -l of a big folder, at --latency-ms 0 and 20 -------------------------------------------

lists_made() { client stats | json 'd["list_files"]'; }
ls_once() { # -> "seconds lines"
    local t0 n
    t0="$(now_ns)"
    n="$(ls -l "$MNT/bigdir" | wc -l)"
    echo "$(secs_since "$t0") $n"
}
# Cold ls -l of $DIR_ENTRIES folders ($REPEAT fresh mounts per latency, best) and warm, at
# latency 0 and 20, against a pager; then the 20 ms round trips the cold one spent beyond the
# same ls at latency 0 (the transfer).
ls_bench() {
    local dir_id lat rep t n cold warm l_cold l_warm peak t_base p_base base
    declare -A cold_at
    log "creating a folder of $DIR_ENTRIES directories (emulator bulk hook)"
    dir_id="$(client mkdir bigdir --machine 1 | json 'd["id"]')"
    client bulk-folders --count "$DIR_ENTRIES" --machine 1 --parent "$dir_id" >/dev/null
    for lat in 0 20; do
        client latency "$lat" >/dev/null
        cold="" warm="" l_warm=0
        for rep in $(seq 1 "$REPEAT"); do
            log "ls -l at --latency-ms $lat ($rep/$REPEAT): cold (fresh mount) and warm"
            start_mount
            client reset-stats >/dev/null
            read -r t n < <(ls_once)
            [[ "$n" -eq $((DIR_ENTRIES + 1)) ]] || die "cold ls -l showed $n lines, expected $((DIR_ENTRIES + 1))"
            cold="$cold $t"
            l_cold="$(lists_made)"
            peak="$(client peaks | json 'd["list_files"]')"
            client reset-stats >/dev/null
            # ls -l prints a "total" line first.
            read -r t n < <(ls_once)
            [[ "$n" -eq $((DIR_ENTRIES + 1)) ]] || die "warm ls -l showed $n lines, expected $((DIR_ENTRIES + 1))"
            warm="$warm $t"
            l_warm=$((l_warm + $(lists_made)))
            stop_mount
        done
        # The best of the fresh mounts, as every speed here (one slow run is the machine's
        # noise, not the mount's round trips).
        cold="$(min_of <<<"$cold")"
        warm="$(min_of <<<"$warm")"
        cold_at[$lat]="$cold"
        client reset-stats >/dev/null
        base="$(client list-all --machine 1 --parent "$dir_id")"
        t_base="$(json 'd["seconds"]' <<<"$base")"
        p_base="$(json 'd["pages"]' <<<"$base")"
        row "ls -l of $DIR_ENTRIES entries, cold, --latency-ms $lat (s, best of $REPEAT fresh mounts; list requests and most in flight, last run)" "$(calc "$cold" 3); $l_cold; $peak" "$(calc "$t_base" 3); $p_base (python paging one page after the other, per_page 100)" "$(calc "$t_base / $cold")" "—"
        row "ls -l of $DIR_ENTRIES entries, warm, --latency-ms $lat (s, best; list requests, all runs)" "$(calc "$warm" 3); $l_warm" "$(calc "$t_base" 3); $p_base (same)" "$(calc "$t_base / $warm")" "0 list requests: $([[ "$l_warm" -eq 0 ]] && echo pass || echo '**MISS**')"
    done
    client latency "$LATENCY_MS" >/dev/null
    # The folder's lookup needs no request (the mount's probe read the root's only page); then
    # page 1 (1) + the other pages 50 at a time (2 for 10,000 entries).
    local rtt expect
    rtt="$(calc "(${cold_at[20]} - ${cold_at[0]}) / 0.020" 1)"
    expect=$((1 + (DIR_ENTRIES / 100 - 1 + 49) / 50))
    row "ls -l of $DIR_ENTRIES entries, cold: 20 ms round trips beyond latency 0 (best runs; lookup of the folder included)" "$rtt" "$expect (root listed by the mount's probe; 1 first page + pages 50 at a time)" "—" "≤ 4: $(verdict "$(calc "4 - $rtt")" 0)"
}
if [[ "${BENCH_ONLY:-}" == ls ]]; then
    ls_bench
    report
    echo "Listing only (BENCH_ONLY=ls): $DIR_ENTRIES folders, at emulator --latency-ms 0 and 20, $REPEAT fresh mounts each."
    exit 0
fi
if [[ "${BENCH_ONLY:-}" == tree ]]; then
    tree_bench
    report
    echo "Emulator --latency-ms ${LATENCY_MS}. Tree scan only (BENCH_ONLY=tree), best of $REPEAT for both sides."
    exit 0
fi

if [[ "${BENCH_ONLY:-}" == rm ]]; then
    rm_bench
    report
    echo "Emulator --latency-ms ${LATENCY_MS}. Removal only (BENCH_ONLY=rm): $RM_FILES files of 1 KiB in 10 folders, best of $REPEAT for both sides."
    exit 0
fi

if [[ "${BENCH_ONLY:-}" == walk ]]; then
    walk_bench
    report
    echo "Emulator --latency-ms ${LATENCY_MS}. Folder read only (BENCH_ONLY=walk): $WALK_FILES files of $WALK_SIZE bytes, best of $REPEAT for every side."
    exit 0
fi

if [[ "${BENCH_ONLY:-}" != write ]]; then
# --- sequential read --------------------------------------------------------------------------

curl_speed() { curl -sS -o /dev/null -w '%{speed_download}' "$BIG_URL" | awk '{ printf "%.1f", $1 / 1048576 }'; }
dd_speed() { # file -> MiB/s (wall time of the whole dd, open and close included)
    local t0
    t0="$(now_ns)"
    dd if="$1" of=/dev/null bs=1M status=none
    calc "$SIZE_MIB / $(secs_since "$t0")" 1
}
max_of() { tr ' ' '\n' | grep -v '^$' | sort -g | tail -1; }

# The daemon's CPU time so far (user + system, ms).
cpu_ms() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($14 + $15) * 1000 / hz }' "/proc/$MOUNT_PID/stat"; }
# CPU time the whole machine has spent busy so far (every core, ms: user, nice, system, irq,
# softirq, steal of /proc/stat): the reader, the daemon, the emulator and the kernel's network
# and FUSE work together.
busy_ms() { awk -v hz="$(getconf CLK_TCK)" '$1 == "cpu" { printf "%.0f", ($2 + $3 + $4 + $7 + $8 + $9) * 1000 / hz }' /proc/stat; }

rand_fio() { # bs count seed -> IOPS (fio's JSON in $WORK/fio.json)
    fio --name="rand" --filename="$MNT/big.bin" --readonly --rw=randread --bs="$1" \
        --ioengine=psync --direct=0 --iodepth=1 --numjobs=1 --size="$SIZE_BYTES" \
        --number_ios="$2" --io_size=$(($1 * $2)) --randrepeat=1 --randseed="$3" \
        --output-format=json --output="$WORK/fio.json" >/dev/null
    json 'round(d["jobs"][0]["read"]["iops"], 1)' <"$WORK/fio.json"
}
S_CURL_COLD="" S_MNT_COLD="" S_CURL_WARM="" S_MNT_WARM="" S_MNT_FRESH="" RSS_READ=0
S_GETS="" S_CPU="" S_MNT_FLOOR="" S_FLOOR_GETS="" B_CURL="" B_FRESH="" B_FLOOR=""
if [[ "${BENCH_ONLY:-}" != rand ]]; then
for rep in $(seq 1 "$REPEAT"); do
    log "sequential read ($rep/$REPEAT): curl after drop_caches"
    drop_caches
    S_CURL_COLD="$S_CURL_COLD $(curl_speed)"
    log "sequential read ($rep/$REPEAT): fresh mount after drop_caches, then again on the same mount"
    drop_caches
    start_mount
    S_MNT_COLD="$S_MNT_COLD $(dd_speed "$MNT/big.bin")"
    RSS_READ="$(awk -v a="$RSS_READ" -v b="$(hwm_mib)" 'BEGIN { print (b > a) ? b : a }')"
    S_MNT_WARM="$S_MNT_WARM $(dd_speed "$MNT/big.bin")"
    if [[ $rep -eq 1 ]]; then
        MNT_SHA="$(sha256sum "$MNT/big.bin" | cut -d' ' -f1)"
        [[ "$MNT_SHA" == "$SRC_SHA" ]] || die "bytes read through the mount differ from the source"
    fi
    stop_mount
    log "sequential read ($rep/$REPEAT): curl and a fresh mount, server data in page cache"
    b0="$(busy_ms)"
    S_CURL_WARM="$S_CURL_WARM $(curl_speed)"
    B_CURL="$B_CURL $(($(busy_ms) - b0))"
    start_mount
    client reset-stats >/dev/null
    cpu0="$(cpu_ms)"
    b0="$(busy_ms)"
    S_MNT_FRESH="$S_MNT_FRESH $(dd_speed "$MNT/big.bin")"
    B_FRESH="$B_FRESH $(($(busy_ms) - b0))"
    S_CPU="$S_CPU $(($(cpu_ms) - cpu0))"
    S_GETS="$S_GETS $(client stats | json 'd["data_get"]')"
    # The floor: the same dd with every block in the daemon's cache (fio's 1 MiB reads in
    # random order put them there, and random reads stay cached) and the kernel's page cache
    # emptied, so every read crosses FUSE and none makes a request.
    log "sequential read ($rep/$REPEAT): the same file from the daemon's cache (the FUSE floor)"
    rand_fio $((1024 * 1024)) "$SIZE_MIB" "$rep" >/dev/null
    drop_caches
    client reset-stats >/dev/null
    b0="$(busy_ms)"
    S_MNT_FLOOR="$S_MNT_FLOOR $(dd_speed "$MNT/big.bin")"
    B_FLOOR="$B_FLOOR $(($(busy_ms) - b0))"
    S_FLOOR_GETS="$S_FLOOR_GETS $(client stats | json 'd["data_get"]')"
    stop_mount
done
S_MNT_FLOOR="$(max_of <<<"$S_MNT_FLOOR")"
S_CURL_COLD="$(max_of <<<"$S_CURL_COLD")"
S_MNT_COLD="$(max_of <<<"$S_MNT_COLD")"
S_CURL_WARM="$(max_of <<<"$S_CURL_WARM")"
S_MNT_WARM="$(max_of <<<"$S_MNT_WARM")"
S_MNT_FRESH="$(max_of <<<"$S_MNT_FRESH")"

R_COLD="$(calc "$S_MNT_COLD / $S_CURL_COLD")"
R_FRESH="$(calc "$S_MNT_FRESH / $S_CURL_WARM")"
R_WARM="$(calc "$S_MNT_WARM / $S_CURL_WARM")"
row "Sequential read ${SIZE_MIB} MiB, cold: drop_caches + fresh mount (MiB/s)" "$S_MNT_COLD" "$S_CURL_COLD (curl after drop_caches)" "$R_COLD" "≥ $TARGET_SEQ_READ: $(verdict "$R_COLD" "$TARGET_SEQ_READ")"
row "Sequential read ${SIZE_MIB} MiB, fresh mount, server data in page cache (MiB/s)" "$S_MNT_FRESH" "$S_CURL_WARM (curl, same)" "$R_FRESH" "≥ $TARGET_SEQ_READ: $(verdict "$R_FRESH" "$TARGET_SEQ_READ")"
row "Sequential read ${SIZE_MIB} MiB, warm: 2nd read on the same mount (MiB/s)" "$S_MNT_WARM" "$S_CURL_WARM (curl, server cached)" "$R_WARM" "—"
row "Sequential read ${SIZE_MIB} MiB from the daemon's cache, kernel cache dropped: the FUSE floor (MiB/s; data GETs, median)" "$S_MNT_FLOOR; $(median <<<"$S_FLOOR_GETS") GETs" "$S_CURL_WARM (curl, server cached)" "$(calc "$S_MNT_FLOOR / $S_CURL_WARM")" "—"
# Machine CPU of each (medians): with both cores busy, a read costing B ms of CPU cannot take
# less than B / 2 ms of wall time, which bounds its speed whatever the code does.
NCPU="$(nproc)"
B_CURL="$(median <<<"$B_CURL")" B_FRESH="$(median <<<"$B_FRESH")" B_FLOOR="$(median <<<"$B_FLOOR")"
row "Sequential read ${SIZE_MIB} MiB: machine CPU (ms, all $NCPU cores, medians): fresh mount; from the daemon's cache; curl" "$B_FRESH; $B_FLOOR; $B_CURL" "—" "—" "—"
row "Sequential read ${SIZE_MIB} MiB, fresh mount: the most $NCPU cores allow (the CPU of the FUSE floor + curl's, spread over every core; MiB/s)" "$(calc "$SIZE_MIB * 1000 * $NCPU / ($B_FLOOR + $B_CURL)" 1)" "$S_CURL_WARM (curl, server cached)" "$(calc "$SIZE_MIB * 1000 * $NCPU / ($B_FLOOR + $B_CURL) / $S_CURL_WARM")" "—"
RSS_BUDGET=$((CACHE_MIB + RSS_READ_SLACK_MIB))
row "Sequential read ${SIZE_MIB} MiB, fresh mount: data GETs; daemon CPU (ms; medians of $REPEAT)" "$(median <<<"$S_GETS"); $(median <<<"$S_CPU")" "1 GET (curl)" "—" "—"
row "Daemon peak RSS during the cold read (VmHWM, MiB; max of $REPEAT)" "$RSS_READ" "budget $RSS_BUDGET (cache $CACHE_MIB + $RSS_READ_SLACK_MIB)" "$(calc "$RSS_READ / $RSS_BUDGET")" "≤ 1: $(awk -v a="$RSS_READ" -v b="$RSS_BUDGET" 'BEGIN { print (a <= b) ? "pass" : "**FAIL**" }')"
fi # BENCH_ONLY != rand

if [[ "${BENCH_ONLY:-}" == seq ]]; then
    report
    echo "Emulator --latency-ms ${LATENCY_MS}. Size ${SIZE_MIB} MiB, --cache-size ${CACHE_MIB} MiB; sequential read only (BENCH_ONLY=seq), best of $REPEAT for both sides."
    exit 0
fi

# --- random reads -----------------------------------------------------------------------------

# Random reads on a fresh mount against ranged GETs of the same size; then the same reads again
# on that mount after drop_caches (the kernel's page cache emptied, the daemon's block cache
# kept): what FUSE and the daemon cost with no request, the floor under the first figure.
rand_bench() { # bs_bytes count label
    local bs="$1" count="$2" label="$3" fio_best="" base_best="" floor_best="" gets="" floor_gets="" cpu="" rep c0
    for rep in $(seq 1 "$REPEAT"); do
        log "random $label reads ($rep/$REPEAT): fio on a fresh mount ($count reads), then again from the daemon's cache"
        start_mount
        client reset-stats >/dev/null
        c0="$(cpu_ms)"
        fio_best="$fio_best $(rand_fio "$bs" "$count" "$rep")"
        gets="$gets $(client stats | json 'd["data_get"]')"
        cpu="$cpu $(awk -v a="$(($(cpu_ms) - c0))" -v n="$count" 'BEGIN { printf "%.0f", a * 1000 / n }')"
        drop_caches
        client reset-stats >/dev/null
        floor_best="$floor_best $(rand_fio "$bs" "$count" "$rep")"
        floor_gets="$floor_gets $(client stats | json 'd["data_get"]')"
        stop_mount
        log "random $label reads ($rep/$REPEAT): ranged GETs without a mount"
        base_best="$base_best $(client ranged "$BIG_URL" --size "$SIZE_BYTES" --bs "$bs" --count "$count" --seed "$rep" | json 'round(d["iops"], 1)')"
    done
    fio_best="$(max_of <<<"$fio_best")"
    base_best="$(max_of <<<"$base_best")"
    floor_best="$(max_of <<<"$floor_best")"
    row "Random $label reads, fio psync qd1, $count reads, fresh mount (IOPS; data GETs made; daemon CPU µs per read, median)" "$fio_best; $(median <<<"$gets") GETs; $(median <<<"$cpu") µs" "$base_best; $count GETs ($label ranged GETs, keep-alive)" "$(calc "$fio_best / $base_best")" "—"
    # What a read cost beyond the floor is the daemon's GET path; the best the mount can do is
    # one floor read plus one baseline GET per read.
    row "Random $label reads again after drop_caches, from the daemon's cache (IOPS; data GETs): the FUSE floor" "$floor_best; $(median <<<"$floor_gets") GETs" "$base_best (ranged GETs)" "$(calc "$floor_best / $base_best")" "ceiling for the first row: $(calc "1 / (1 + $base_best / $floor_best)")"
}
rand_bench 4096 "$RAND_4K_IOS" "4 KiB"
rand_bench $((256 * 1024)) "$RAND_256K_IOS" "256 KiB"

if [[ "${BENCH_ONLY:-}" == rand ]]; then
    report
    echo "Emulator --latency-ms ${LATENCY_MS}. Size ${SIZE_MIB} MiB, --cache-size ${CACHE_MIB} MiB; random reads only (BENCH_ONLY=rand), best of $REPEAT for both sides."
    exit 0
fi

# --- ls -l of a big folder (ls_bench, defined above) -------------------------------------------

ls_bench

# --- time to first byte -----------------------------------------------------------------------

log "time to first byte: $TTFB_REPEAT fresh mounts vs curl and the python client"
TT_HEAD="" TT_OPEN="" TT_CURL="" TT_CHAIN="" TT_REQS=""
for _ in $(seq 1 "$TTFB_REPEAT"); do
    start_mount
    client reset-stats >/dev/null
    t0="$(now_ns)"
    head -c 1 "$MNT/big.bin" >/dev/null
    TT_HEAD="$TT_HEAD $(secs_since "$t0")"
    # Requests of the open + first read (the root was listed when the mount started).
    TT_REQS="$(client stats | json '"%d list, %d link, %d GET" % (d["list_files"], d["file_link"] + d["request_download"], d["data_get"])')"
    stop_mount
    start_mount
    TT_OPEN="$TT_OPEN $(client read1 "$MNT/big.bin" | json 'd["seconds"]')"
    stop_mount
    TT_CURL="$TT_CURL $(curl -sS -o /dev/null -r 0-0 -w '%{time_starttransfer}' "$BIG_URL")"
    TT_CHAIN="$TT_CHAIN $(client ttfb big.bin --machine 1 | json 'd["seconds"]')"
done
TT_HEAD="$(median <<<"$TT_HEAD")"
TT_OPEN="$(median <<<"$TT_OPEN")"
TT_CURL="$(median <<<"$TT_CURL")"
TT_CHAIN="$(median <<<"$TT_CHAIN")"
ms() { calc "$1 * 1000" 1; }
row "Time to first byte, fresh mount: head -c 1 (ms, median of $TTFB_REPEAT; requests)" "$(ms "$TT_HEAD"); $TT_REQS" "$(ms "$TT_CURL") (curl time_starttransfer, URL known)" "$(calc "$TT_CURL / $TT_HEAD")" "—"
row "Time to first byte, fresh mount: open + read(1) in-process (ms, median of $TTFB_REPEAT)" "$(ms "$TT_OPEN")" "$(ms "$TT_CHAIN") (python: list + link + GET byte 0, fresh connections)" "$(calc "$TT_CHAIN / $TT_OPEN")" "—"
walk_bench
rm_bench
tree_bench
fi

# --- writes -----------------------------------------------------------------------------------

write_supported() {
    start_mount
    local ok=0
    if (echo probe >"$MNT/.bench-probe") 2>"$WORK/write-probe.err"; then
        ok=1
        rm -f "$MNT/.bench-probe"
    fi
    stop_mount
    [[ $ok -eq 1 ]]
}

RUN_WRITE=0
if [[ "${BENCH_ONLY:-}" == write && "$WRITE_MODE" == auto ]]; then WRITE_MODE=1; fi
case "$WRITE_MODE" in
    1) RUN_WRITE=1 ;;
    0) ;;
    auto) if write_supported; then RUN_WRITE=1; else log "writes not supported by this build: $(cat "$WORK/write-probe.err")"; fi ;;
    *) die "BENCH_WRITE must be auto, 0 or 1" ;;
esac

if [[ $RUN_WRITE -eq 1 ]]; then
    # "Landed" = the server lists the file with its full size (polled every 10 ms).
    log "sequential write: dd (no fsync) through a fresh mount, timed to close and to landed"
    start_mount
    client reset-stats >/dev/null
    t0="$(now_ns)"
    dd if="$WORK/big.src" of="$MNT/written.bin" bs=1M status=none
    T_W_CLOSE="$(secs_since "$t0")"
    T_W_MNT="$(client wait-file written.bin --size "$SIZE_BYTES" --machine 1 --since-ns "$t0" | json 'd["seconds"]')"
    RSS_WRITE="$(hwm_mib)"
    m_sync
    W_REQS="$(client stats | json '"%d create, %d PUT, %d complete" % (d["create"], d["data_put"], d["complete"])')"
    stop_mount
    W_SIZE="$(client find written.bin --machine 1 | json 'd["size"]')"
    [[ "$W_SIZE" -eq "$SIZE_BYTES" ]] || die "written.bin is listed with $W_SIZE bytes, expected $SIZE_BYTES"

    log "sequential write: curl multipart baseline (${CURL_PART_MIB} MiB parts, $CURL_PUT_PARALLEL in parallel)"
    mkdir -p "$WORK/parts" "$WORK/etags"
    split -b "${CURL_PART_MIB}M" -d -a 5 "$WORK/big.src" "$WORK/parts/p"
    t0="$(now_ns)"
    BODY="{\"file_name\":\"curl-written.bin\",\"object_type\":\"file\",\"content_type\":\"application/octet-stream\",\"size\":$SIZE_BYTES,\"chunk_size\":$CURL_PART_MIB,\"machine_id\":1}"
    signed_curl POST /files "$BODY" >"$WORK/created.json"
    C_ID="$(jq -r .id "$WORK/created.json")"
    jq -r '.upload_urls | to_entries[] | "\(.key) \(.value)"' "$WORK/created.json" |
        xargs -P "$CURL_PUT_PARALLEL" -L 1 sh -c \
            'curl -sSf -H "Expect:" -T "$0/parts/p$(printf %05d "$1")" -o /dev/null -w "%header{etag}" "$2" >"$0/etags/$1"' "$WORK"
    PARTS="$(for f in $(ls "$WORK/etags" | sort -n); do jq -Rn --arg n "$f" --rawfile e "$WORK/etags/$f" '{part_number: (($n | tonumber) + 1), etag: ($e | rtrimstr("\r"))}'; done | jq -cs '{parts: .}')"
    signed_curl POST "/files/$C_ID/complete" "$PARTS" >/dev/null
    T_W_CURL="$(secs_since "$t0")"
    C_SIZE="$(client find curl-written.bin --machine 1 | json 'd["size"]')"
    [[ "$C_SIZE" -eq "$SIZE_BYTES" ]] || die "curl-written.bin is listed with $C_SIZE bytes, expected $SIZE_BYTES"
    R_W="$(calc "$T_W_CURL / $T_W_MNT")"
    row "Write ${SIZE_MIB} MiB (dd, no fsync): close to landed (MiB/s; close alone in s; requests)" "$(mibps "$T_W_MNT"); close $(calc "$T_W_CLOSE" 2) s; $W_REQS" "$(mibps "$T_W_CURL") (curl multipart)" "$R_W" "≥ $TARGET_SEQ_WRITE: $(verdict "$R_W" "$TARGET_SEQ_WRITE")"
    row "Daemon peak RSS writing ${SIZE_MIB} MiB, until landed (VmHWM, MiB)" "$RSS_WRITE" "budget $RSS_WRITE_BUDGET_MIB" "$(calc "$RSS_WRITE / $RSS_WRITE_BUDGET_MIB")" "≤ 1: $(awk -v a="$RSS_WRITE" -v b="$RSS_WRITE_BUDGET_MIB" 'BEGIN { print (a <= b) ? "pass" : "**FAIL**" }')"

    EIGHT_MIB=$((SIZE_MIB / 8 > 0 ? SIZE_MIB / 8 : 1))
    log "daemon RSS while 8 files of ${EIGHT_MIB} MiB upload at once"
    mkdir -p "$WORK/eight"
    for i in 1 2 3 4 5 6 7 8; do head -c $((EIGHT_MIB * 1024 * 1024)) "$WORK/big.src" >"$WORK/eight/e$i.bin"; done
    start_mount
    client reset-stats >/dev/null
    t0="$(now_ns)"
    cp -r "$WORK/eight" "$MNT/eight"
    client wait-stats --family complete --count 8 --since-ns "$t0" >/dev/null
    m_sync
    RSS_EIGHT="$(hwm_mib)"
    E_PEAK="$(client peaks | json 'd["data_put"]')"
    stop_mount
    row "Daemon peak RSS, 8 files of ${EIGHT_MIB} MiB uploading at once (VmHWM, MiB; most part PUTs in flight)" "$RSS_EIGHT; $E_PEAK PUTs" "budget $RSS_WRITE_BUDGET_MIB" "$(calc "$RSS_EIGHT / $RSS_WRITE_BUDGET_MIB")" "≤ 1: $(awk -v a="$RSS_EIGHT" -v b="$RSS_WRITE_BUDGET_MIB" 'BEGIN { print (a <= b) ? "pass" : "**FAIL**" }')"

    log "cp -r of $SMALL_FILES files of 4 KiB: to local disk (baseline), then through a fresh mount"
    mkdir -p "$WORK/small"
    for i in $(seq -f '%05g' 1 "$SMALL_FILES"); do head -c 4096 /dev/urandom >"$WORK/small/f$i.bin"; done
    sync
    t0="$(now_ns)"
    cp -r "$WORK/small" "$WORK/small-local"
    T_SF_LOCAL="$(secs_since "$t0")"
    start_mount
    client reset-stats >/dev/null
    t0="$(now_ns)"
    cp -r "$WORK/small" "$MNT/small-mnt"
    T_SF_CP="$(secs_since "$t0")"
    T_SF_LANDED="$(client wait-stats --family complete --count "$SMALL_FILES" --since-ns "$t0" | json 'd["seconds"]')"
    m_sync
    SF_REQS="$(client stats | json '"%d requests: %d mkdir/create, %d PUT, %d complete, %d list" % (sum(d.values()), d["create"], d["data_put"], d["complete"], d["list_files"])')"
    stop_mount
    SF_MNT_DIR="$(client find small-mnt --machine 1 | json 'd["id"]')"
    SF_LISTED="$(client list-all --machine 1 --parent "$SF_MNT_DIR" | json 'd["entries"]')"
    [[ "$SF_LISTED" -eq "$SMALL_FILES" ]] || die "small-mnt lists $SF_LISTED files, expected $SMALL_FILES"
    # Lower bound of landing: 3 requests per file, each one --latency-ms, --transfers at once.
    SF_BOUND="$(calc "$SMALL_FILES * 3 * $LATENCY_MS / 1000 / $TRANSFERS" 3)"
    if [[ "$LATENCY_MS" -gt 0 ]]; then
        R_SF="$(calc "$T_SF_LANDED / $SF_BOUND")"
        V_SF="≤ 2: $(verdict "$(calc "2 - $R_SF")" 0)"
    else
        R_SF="—"
        V_SF="— (bound 0 at latency 0)"
    fi
    R_SF_CP="$(calc "$T_SF_LOCAL / $T_SF_CP" 3)"
    row "cp -r $SMALL_FILES files of 4 KiB: until cp returns (s)" "$(calc "$T_SF_CP" 3)" "$(calc "$T_SF_LOCAL" 3) (cp -r to local disk)" "$R_SF_CP" "≥ 0.1: $(verdict "$R_SF_CP" 0.1)"
    row "cp -r $SMALL_FILES files of 4 KiB: until all landed (s; requests)" "$(calc "$T_SF_LANDED" 3); $SF_REQS" "$SF_BOUND (lower bound $SMALL_FILES × 3 × ${LATENCY_MS} ms ÷ --transfers $TRANSFERS)" "$R_SF (landed ÷ bound)" "$V_SF"
    if [[ "$LATENCY_MS" -eq 0 ]]; then # (at 20 ms the sequential baseline alone takes a minute)
        log "creating $SMALL_FILES files of 4 KiB: python client (create + PUT + complete each, one after the other)"
        SF_DIR="$(client mkdir small-api --machine 1 | json 'd["id"]')"
        T_SF_API="$(client small-files --count "$SMALL_FILES" --size 4096 --machine 1 --parent "$SF_DIR" | json 'd["seconds"]')"
        row "cp -r $SMALL_FILES files of 4 KiB, landed (files/s)" "$(calc "$SMALL_FILES / $T_SF_LANDED" 0)" "$(calc "$SMALL_FILES / $T_SF_API" 0) (python create+PUT+complete, sequential)" "$(calc "$T_SF_API / $T_SF_LANDED")" "—"
    fi
else
    if [[ "$WRITE_MODE" == 0 ]]; then
        row "Writes" "not run" "—" "—" "BENCH_WRITE=0"
    else
        row "Writes" "not run" "—" "—" "the mount refused writes (read-only build?)"
    fi
fi

# --- report -----------------------------------------------------------------------------------

report
echo "Emulator --latency-ms ${LATENCY_MS} (every API and data request, baselines included). Size ${SIZE_MIB} MiB, --cache-size ${CACHE_MIB} MiB, $DIR_ENTRIES entries, $RAND_4K_IOS x 4 KiB / $RAND_256K_IOS x 256 KiB random reads, $SMALL_FILES small files; throughput and IOPS are the best of $REPEAT runs for both sides. Ratio: vagonfs speed ÷ baseline speed (> 1: vagonfs faster)."
