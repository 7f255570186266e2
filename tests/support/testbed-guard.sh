#!/usr/bin/env bash
# Guard of one nodeward test bed (tests/support/testbed.rs). Started detached (own session) with
# its stdin the read end of a pipe whose write end only the test process holds. When that end
# closes -- TestBed::shutdown, or the test process exiting or dying in any way -- it tears the
# test bed down:
#   1. SIGKILL every process whose command line names the test bed dir (containerd, its shims,
#      runc, the registry);
#   2. SIGKILL every process in the test bed's cgroups (the containers), until they are empty;
#   3. remove the shims' sockets (outside the dir, under /run/containerd/s);
#   4. unmount everything under the dir, deepest first (lazily if busy);
#   5. rmdir the test bed's cgroups in every hierarchy;
#   6. rm -rf the dir (after copying its logs to $NODEWARD_TESTBED_KEEP_LOGS/<name>, if set).
#
# Environment: TB_DIR (the test bed dir, /tmp/nodeward-tb-*), TB_CGROUP (the cgroup parent's
# name under each hierarchy root, nodeward-tb-*).
set -u
trap '' INT HUP PIPE TERM

log() { printf '%s guard[%d]: %s\n' "$(date +%T.%N)" "$$" "$*"; }

case "${TB_DIR:-}" in
/tmp/nodeward-tb-?*) ;;
*) log "refusing: TB_DIR='${TB_DIR:-}' is not /tmp/nodeward-tb-*"; exit 2 ;;
esac
case "${TB_CGROUP:-}" in
nodeward-tb-?*) ;;
*) log "refusing: TB_CGROUP='${TB_CGROUP:-}' is not nodeward-tb-*"; exit 2 ;;
esac
case "$TB_DIR$TB_CGROUP" in
*/../* | */./* | *//*) log "refusing: path with . or .. components"; exit 2 ;;
esac

# Block until the test process closes its end of the pipe (or dies).
while read -r _; do :; done
log "tearing down $TB_DIR"

# Pids (other than ours) whose command line contains the test bed dir and which are not zombies.
dir_pids() {
  local p args state
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$$" ] && continue
    mapfile -d '' args 2>/dev/null <"/proc/$p/cmdline" || continue
    case "${args[*]}" in
    *"$TB_DIR/"*)
      read -r _ _ state _ 2>/dev/null <"/proc/$p/stat" || continue
      [ "$state" = Z ] || echo "$p"
      ;;
    esac
  done
}

# Mount points of the cgroup hierarchies (v1 controllers, named ones, and the v2 unified one).
cgroup_roots() {
  awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break;
         if ($(i + 1) == "cgroup" || $(i + 1) == "cgroup2") print $5 }' /proc/self/mountinfo
}

cgroup_pids() {
  local root
  for root in $(cgroup_roots); do
    [ -d "$root/$TB_CGROUP" ] || continue
    find "$root/$TB_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
}

# Kill whatever the listing function $1 prints until it prints nothing (at most ~10 s).
kill_until_gone() {
  local what=$1 pids i
  for i in $(seq 1 100); do
    pids=$($what)
    [ -z "$pids" ] && return 0
    [ "$i" = 1 ] && log "killing ($what): $(echo $pids)"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null
    sleep 0.1
  done
  log "still alive after 10 s ($what): $(echo $pids)"
  return 1
}

kill_until_gone dir_pids
kill_until_gone cgroup_pids
# A shim killed above may have been mid-way starting a container: look once more.
kill_until_gone dir_pids

# Shim sockets live outside the dir; the bundle's "address" file names them.
for f in "$TB_DIR"/state/io.containerd.runtime.v2.task/*/*/address; do
  [ -f "$f" ] || continue
  sock=$(sed -n 's|^unix://||p' "$f")
  case "$sock" in
  /run/containerd/s/*) [ -S "$sock" ] && rm -f "$sock" ;;
  esac
done

# Mount points under the dir, deepest first (mountinfo escapes spaces etc. as \ooo).
mounts_under_dir() {
  awk -v d="$TB_DIR" '{ if ($5 == d || index($5, d "/") == 1) print $5 }' /proc/self/mountinfo |
    awk '{ print gsub("/", "/"), $0 }' | sort -rn | cut -d' ' -f2- | uniq
}
for _ in 1 2 3; do
  m=$(mounts_under_dir)
  [ -z "$m" ] && break
  while read -r mp; do
    mp=$(printf '%b' "${mp//\\/\\0}")
    umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || log "cannot unmount $mp"
  done <<<"$m"
done

for root in $(cgroup_roots); do
  [ -d "$root/$TB_CGROUP" ] || continue
  find "$root/$TB_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null ||
    log "cannot remove all of $root/$TB_CGROUP"
done

if [ -n "${NODEWARD_TESTBED_KEEP_LOGS:-}" ]; then
  mkdir -p "$NODEWARD_TESTBED_KEEP_LOGS" &&
    cp -a "$TB_DIR/logs" "$NODEWARD_TESTBED_KEEP_LOGS/$(basename "$TB_DIR")" &&
    log "logs kept in $NODEWARD_TESTBED_KEEP_LOGS/$(basename "$TB_DIR")"
fi

if [ -n "$(mounts_under_dir)" ]; then
  log "mounts left under $TB_DIR; not removing it"
  exit 1
fi
rm -rf --one-file-system "$TB_DIR" || { log "cannot remove $TB_DIR"; exit 1; }
log "done"
