#!/bin/bash
# Part of bench/: how many getattr/lookup reach the daemon when 300 files are stat()ed 20 times
# over 10 s (names listed once), with --dir-refresh 1 (kernel TTL 1 s, as before) and 10 (default).
# Run as root from the repo root after a release build.
set -u
V="$(pwd)/target/release/vagonfs"
W=$(mktemp -d /tmp/storm.XXXX)
mkdir -p $W/emu $W/home
$V emulator --listen 127.0.0.1:0 --data $W/emu --latency-ms 20 > $W/emu.out 2>&1 &
EMU=$!
sleep 1
URL=$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' $W/emu.out | head -1)
run_mount() { # mnt tag extra... (metrics on a free port, read back from the log)
  local mnt=$1 port=$2; shift 2; mkdir -p $mnt
  VAGON_API_URL=$URL VAGON_API_KEY=demo-key VAGON_API_SECRET=demo-secret HOME=$W/home \
    $V mount --machine 1 --metrics-addr 127.0.0.1:0 --log-file $W/m$port.log "$@" $mnt >/dev/null 2>>$W/m$port.log &
  echo $!
}
M0=$(run_mount $W/m0 19400); sleep 2
mkdir $W/m0/d; for i in $(seq 1 300); do echo x > $W/m0/d/f$i; done
$V sync $W/m0; kill -TERM $M0; while kill -0 $M0 2>/dev/null; do sleep 0.1; done
for refresh in 1 10; do
  port=$((19410+refresh))
  P=$(run_mount $W/m$refresh $port --dir-refresh $refresh); sleep 2
  ls $W/m$refresh/d > /dev/null
  port=$(sed -n 's/.*serving metrics at http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' $W/m$((19410+refresh)).log | head -1)
  ops() { curl -s 127.0.0.1:$port/metrics | awk '/^vagonfs_fuse_ops_total\{op="(getattr|lookup)"\}/ {s+=$2} END {print s+0}'; }
  b=$(ops)
  python3 - $W/m$refresh/d <<'PY'
import os,sys,time
d=sys.argv[1]
names=os.listdir(d)
for r in range(20):
    for n in names: os.stat(os.path.join(d,n))
    time.sleep(0.5)
PY
  a=$(ops)
  echo "dir-refresh $refresh: getattr+lookup reaching the daemon during 20 rounds x 300 stats over 10 s: $((a-b))"
  kill -TERM $P; while kill -0 $P 2>/dev/null; do sleep 0.1; done
done
kill $EMU; wait $EMU 2>/dev/null
rm -rf $W
