# shellcheck shell=bash
# Shared by scripts/interop-test and scripts/demo (sourced, not run): brings
# up real XMPP servers, Nudge and the test-app on 127.0.0.1 from the configs
# in deploy/, as background processes that stop by PID.
#
# The caller sets ROOT, WORK (a temporary directory), SECRET, PASSWORD and
# the ports (PROSODY_C2S, PROSODY_COMPONENT, EJABBERD_C2S,
# EJABBERD_COMPONENT, EJABBERD_DIST), and calls stop_all on exit.
#
# Functions return non-zero on failure; they check every command explicitly
# because `set -e` does not apply to a function called in a condition.

PUSH_DOMAIN=push.localhost
USER_DOMAIN=localhost
# alice owns the phones, bob writes; carol, dave and erin own more phones
# for the scenarios with several users (scripts/interop-test); frank, grace,
# heidi and ivan join them for issue 16's stream of messages; sam (Siskin)
# and mona (Monal, mod_push_appserver) speak issue 17's dialects.
USERS=(alice bob carol dave erin frank grace heidi ivan sam mona wendy kit-owner kit-peer)
# The conformance kit (`nudge-test-app conformance server`) plays an App
# Server of its own beside Nudge, under this domain, with kit-owner's phone
# and kit-peer writing to it; on Prosody through the same component port,
# on ejabberd through a listener of its own.
KIT_DOMAIN=conformance.localhost
NUDGE="$ROOT/target/debug/nudge"
TEST_APP="$ROOT/target/debug/nudge-test-app"
VENV="$ROOT/target/interop-venv"
# shellcheck disable=SC2034 # used by the scripts that source this file
DRIVER="$ROOT/test-app/interop/nudge_interop.py"

# --- processes -------------------------------------------------------------------
declare -A PIDS=() # name -> PID of every background process started here

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# gone PID: the process has exited (a zombie counts: a SIGHUP successor is
# no child of ours, and whoever adopts it may reap it late).
gone() {
    ! kill -0 "$1" 2>/dev/null && return 0
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    [ "$(cut -d ' ' -f 1 <<<"${stat##*) }")" = Z ]
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
port_free() { ! port_open "$1"; }
ports_open() { local p; for p in "$@"; do port_open "$p" || return 1; done; }

# wait_until SECONDS COMMAND...: polls COMMAND every 0.1 s for that long.
wait_until() {
    local end=$(($(date +%s) + $1))
    shift
    until "$@"; do
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.1
    done
}

# stop_pid NAME [SIGNAL]: stops one process (its whole group if it leads
# one), waits at most 10 s, then kills it.
stop_pid() {
    local name=$1 pid=${PIDS[$1]:-} sig=${2:-TERM}
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
        if ! wait_until 10 gone "$pid"; then
            echo "$name ($pid) did not stop, killing it" >&2
            kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    unset "PIDS[$name]"
}

# Everything still running, in dependency order.
stop_all() {
    stop_pid nudge
    stop_pid nudge2
    stop_ejabberd
    stop_pid prosody
    stop_pid test-app
    local name
    for name in "${!PIDS[@]}"; do stop_pid "$name"; done
    [ ${#PG_DBS[@]} = 0 ] || pg_drop_all
}

# --- installation ----------------------------------------------------------------
APT_UPDATED=
apt_install() {
    [ "$(id -u)" = 0 ] || { echo "need root to apt-get install $*"; return 1; }
    # The packages' maintainer scripts would start the system services (on
    # 5222, 5269, 5280…): forbid that while installing, as Docker images do.
    local policy_created='' rc=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d &&
            policy_created=1
    fi
    # apt-get update once, and only when the package lists lack a package.
    if [ -z "$APT_UPDATED" ] && ! apt-cache show "$@" >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq && APT_UPDATED=1 || rc=$?
    fi
    [ "$rc" != 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || rc=$?
    # Stale lists name versions the mirror no longer has: update and retry once.
    if [ "$rc" != 0 ] && [ -z "$APT_UPDATED" ]; then
        rc=0
        DEBIAN_FRONTEND=noninteractive apt-get update -qq && APT_UPDATED=1 || rc=$?
        [ "$rc" != 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || rc=$?
    fi
    [ -z "$policy_created" ] || rm -f /usr/sbin/policy-rc.d
    return "$rc"
}

# install_servers prosody|ejabberd...: Debian's packages, when missing.
install_servers() {
    local need=() server
    for server in "$@"; do
        case $server in
            prosody)
                command -v prosody >/dev/null || need+=(prosody)
                [ -f /usr/lib/prosody/modules/mod_cloud_notify/mod_cloud_notify.lua ] || need+=(prosody-modules)
                ;;
            ejabberd) command -v ejabberdctl >/dev/null || need+=(ejabberd) ;;
        esac
    done
    if [ ${#need[@]} != 0 ]; then
        apt_install "${need[@]}" || return 1
        echo -n "installed ${need[*]}; "
    fi
    dpkg-query -W -f '${Package} ${Version}, ' prosody prosody-modules ejabberd 2>/dev/null
    echo
}

build() {
    cargo build -q -p nudge -p nudge-test-app --bins
}

# A venv under target/ with the driver's pinned dependencies.
python_env() {
    if [ ! -x "$VENV/bin/python" ]; then
        if ! python3 -m venv "$VENV" 2>/dev/null; then
            # Debian's python3 needs python3-venv for ensurepip.
            rm -rf "$VENV"
            apt_install python3-venv && python3 -m venv "$VENV" || return 1
        fi
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/test-app/interop/requirements.txt" ||
        return 1
    "$VENV/bin/python" -c 'import slixmpp; print("slixmpp", slixmpp.__version__)'
}

# --- test-app --------------------------------------------------------------------
# start_test_app [CONTROL_PORT]: sets CONTROL (control API + live page URL).
start_test_app() {
    mkdir -p "$WORK/test-app" || return 1
    "$TEST_APP" serve --control-port "${1:-0}" --export-dir "$WORK/test-app" \
        >"$WORK/test-app/out.log" 2>"$WORK/test-app/test-app.log" &
    PIDS[test-app]=$!
    wait_until 20 test -s "$WORK/test-app/test-app.json" ||
        { cat "$WORK/test-app/test-app.log"; return 1; }
    CONTROL=$(json_url control) || return 1
    echo "control API + live page $CONTROL, mock APNs $(json_url apns), mock FCM $(json_url fcm)"
}
json_url() {
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["urls"][sys.argv[2]])' \
        "$WORK/test-app/test-app.json" "$1"
}

# --- Nudge -----------------------------------------------------------------------
# deploy/nudge.example.toml as documented, plus the apps the test-app
# exports (testapp-apns, testapp-fcm: register-push-apns and
# register-push-fcm resolve to them); server-specific values come as NUDGE_*
# environment overrides (nudge_env), the way the README tells operators to
# keep secrets out of the file.
# Both apps forward the message body (cut to what the provider takes), as
# the servers here are set to send it, so that a push shows which message it
# is for.
write_nudge_config() {
    { cat "$ROOT/deploy/nudge.example.toml" && echo &&
        sed '/^provider = /a include_body = true' "$WORK/test-app/nudge-apps.toml"; } >"$WORK/nudge.toml" ||
        return 1
    [ "$(grep -c '^include_body = true' "$WORK/nudge.toml")" = 2 ] ||
        { echo "could not set include_body in the test-app's two apps"; return 1; }
    grep -q '^provider = "fcm"' "$WORK/nudge.toml" && grep -q '^provider = "apns"' "$WORK/nudge.toml" ||
        { echo "the test-app's nudge-apps.toml lacks an FCM or an APNs app"; return 1; }
}

# nudge_env SERVER COMPONENT_PORT
nudge_env() {
    export NO_COLOR=1
    export NUDGE_COMPONENT__PORT=$2
    export NUDGE_COMPONENT__SECRET=$SECRET
    export NUDGE_STORAGE__DATA_DIR=$WORK/$1/nudge-data
    # Set for issue 16's part of the previous server (scripts/interop-test).
    unset NUDGE_STORAGE__URL NUDGE_DISPATCH__COALESCE_MS
}

nudge_connections() { grep -c "component connected" "$WORK/$1/nudge.log" 2>/dev/null || true; }

# start_nudge SERVER: runs Nudge and waits for its component handshake.
start_nudge() {
    local log=$WORK/$1/nudge.log
    "$NUDGE" --config "$WORK/nudge.toml" check-config || return 1
    "$NUDGE" --config "$WORK/nudge.toml" run >"$log" 2>&1 &
    PIDS[nudge]=$!
    wait_until 20 grep -q "component connected" "$log" || { tail -n 20 "$log"; return 1; }
    grep "component connected" "$log" | head -n 1
}

# --- several Nudge instances (issue 16) --------------------------------------
# An instance is a slot NAME in PIDS (`nudge`, `nudge2`) with its own log,
# $WORK/SERVER/NAME.log, appended to by every process that holds the slot in
# turn (a handover's successor writes to its predecessor's log).

nudge_log() { echo "$WORK/$2/$1.log"; }

# launch_nudge NAME SERVER [RUN_ARGS...]: starts `nudge run` in the
# background, PIDS[NAME] = its PID; does not wait.
launch_nudge() {
    local name=$1 server=$2
    shift 2
    "$NUDGE" --config "$WORK/nudge.toml" run "$@" >>"$(nudge_log "$name" "$server")" 2>&1 &
    PIDS[$name]=$!
    # No "Killed" job notice when a scenario kills it.
    disown "$!"
}

# start_nudge_instance NAME SERVER: another instance with the same config
# and environment; waits for its component handshake.
start_nudge_instance() {
    local name=$1 server=$2 log before
    log=$(nudge_log "$name" "$server")
    before=$(count_in "$log" "component connected")
    launch_nudge "$name" "$server" || return 1
    wait_until 20 log_count_above "$log" "component connected" "$before" ||
        { tail -n 20 "$log"; return 1; }
    echo "$name: PID ${PIDS[$name]}, $(grep "component connected" "$log" | tail -n 1)"
}

# count_in FILE NEEDLE: how many lines of FILE have NEEDLE (0 without FILE).
count_in() {
    local n
    n=$(grep -c -- "$2" "$1" 2>/dev/null) || true
    echo "${n:-0}"
}
# log_count_above FILE NEEDLE N: FILE has more than N lines with NEEDLE.
log_count_above() { [ "$(count_in "$1" "$2")" -gt "$3" ]; }

# handover_nudge NAME SERVER replace|hup: the instance in slot NAME hands
# over to a successor with the same config: `nudge run --replace OLD`
# started here, or SIGHUP, with which the old one starts its successor
# itself (systemd's ExecReload); then PIDS[NAME] is the successor, found
# from its log line `handover: replacing the instance with PID OLD … pid=NEW`.
# Waits for `handover: PID OLD has exited` and for OLD to be gone.
handover_nudge() {
    local name=$1 server=$2 how=$3 old=${PIDS[$1]:-} log new start line
    log=$(nudge_log "$name" "$server")
    [ -n "$old" ] && ! gone "$old" || { echo "$name is not running"; return 1; }
    start=$(now)
    case $how in
        replace) launch_nudge "$name" "$server" --replace "$old" || return 1 ;;
        hup) kill -HUP "$old" || return 1 ;;
    esac
    new=${PIDS[$name]}
    if ! handover_begun "$log" "$old" "$new"; then
        echo "no 'handover: replacing the instance with PID $old' line within 20 s"
        tail -n 15 "$log"
        # Whatever runs still stops on exit.
        gone "$new" || PIDS[$name-failed-$new]=$new
        PIDS[$name]=$old
        return 1
    fi
    line=$(grep -E "handover: replacing the instance with PID $old([^0-9]|$)" "$log" | tail -n 1)
    if [ "$how" = hup ]; then
        new=$(sed -n 's/.*[^A-Za-z_]pid=\([0-9][0-9]*\).*/\1/p' <<<"$line")
        [ -n "$new" ] || new=$(pgrep -n -f -- "--replace $old" || true)
        [ -n "$new" ] || { echo "cannot tell the successor's PID from: $line"; return 1; }
        PIDS[$name]=$new
    fi
    new=${PIDS[$name]}
    wait_until 20 grep -Eq "handover: PID $old has exited" "$log" ||
        { echo "no 'handover: PID $old has exited' line within 20 s"; tail -n 15 "$log"; return 1; }
    wait_until 10 gone "$old" || { echo "PID $old still running"; return 1; }
    wait "$old" 2>/dev/null || true
    gone "$new" && { echo "the successor (PID $new) is not running"; tail -n 15 "$log"; return 1; }
    echo "$how: PID $old -> $new in $(since "$start") s"
}

# handover_begun LOG OLD NEW: waits up to 20 s for the successor's line
# saying that it replaces OLD; fails at once when NEW (the successor, or OLD
# itself after a SIGHUP) is gone without it.
handover_begun() {
    local line="handover: replacing the instance with PID $2([^0-9]|$)" end=$(($(date +%s) + 20))
    until grep -Eq "$line" "$1"; do
        if gone "$3"; then
            sleep 0.3
            grep -Eq "$line" "$1" && return 0
            echo "PID $3 exited"
            return 1
        fi
        [ "$(date +%s)" -lt "$end" ] || return 1
        sleep 0.1
    done
}

# --- PostgreSQL (several instances share one database) ---------------------------
# pg_create SERVER: a fresh database on the server of NUDGE_TEST_POSTGRES_URL
# (the caller sets it); exports NUDGE_STORAGE__URL naming it. pg_drop drops
# it (also on exit, from stop_all).
PG_DBS=()
pg_create() {
    local base=${NUDGE_TEST_POSTGRES_URL:?} db
    db="nudge_interop_$1_$$_$(date +%s)"
    psql "$base" -v ON_ERROR_STOP=1 -qAtc "CREATE DATABASE $db" || return 1
    PG_DBS+=("$db")
    export NUDGE_STORAGE__URL="${base%/*}/$db"
    echo "database $db on ${base%/*}"
}
pg_drop_all() {
    local db
    for db in "${PG_DBS[@]}"; do
        psql "${NUDGE_TEST_POSTGRES_URL:?}" -qAtc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    done
    PG_DBS=()
}

# --- Prosody ---------------------------------------------------------------------
# The test harness part (paths, loopback ports, no s2s, plain c2s for the
# test clients) is written here; the Nudge part is deploy/prosody.cfg.lua,
# Included unchanged apart from the port and the secret.
configure_prosody() {
    local dir=$WORK/prosody user
    mkdir -p "$dir/data" "$dir/certs" || return 1
    sed -e "s/component_ports = { 5347 }/component_ports = { $PROSODY_COMPONENT }/" \
        -e "s/component_secret = \"change-me\"/component_secret = \"$SECRET\"/" \
        "$ROOT/deploy/prosody.cfg.lua" >"$dir/nudge.cfg.lua" || return 1
    grep -q "{ $PROSODY_COMPONENT }" "$dir/nudge.cfg.lua" && grep -q "\"$SECRET\"" "$dir/nudge.cfg.lua" ||
        { echo "deploy/prosody.cfg.lua no longer has the port/secret lines substituted here"; return 1; }
    cat >"$dir/prosody.cfg.lua" <<EOF
-- Generated by scripts/lib/servers.sh: test harness only.
run_as_root = true          -- CI runs as root; mod_posix refuses otherwise
daemonize = false           -- a background process stopped by PID
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
certificates = "$dir/certs"
plugin_paths = { "/usr/lib/prosody/modules" }
log = { { levels = { min = "debug" }, to = "file", filename = "$dir/prosody.log" } }
interfaces = { "127.0.0.1" }
c2s_ports = { $PROSODY_C2S }
c2s_direct_tls_ports = { }
s2s_ports = { }
http_ports = { }
https_ports = { }
modules_disabled = { "s2s"; "s2s_auth_certs"; "dialback" }   -- s2s is auto-loaded otherwise
authentication = "internal_hashed"
c2s_require_encryption = false   -- no certificates on loopback
allow_unencrypted_plain_auth = true

-- Global options and the component, as an operator adds the file.
Include "$dir/nudge.cfg.lua"

VirtualHost "$USER_DOMAIN"
    -- cloud_notify and smacks are the two deploy/prosody.cfg.lua asks for.
    -- version: the conformance kit names the server it checked (XEP-0092).
    modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "carbons"; "mam"; "offline"; "smacks"; "cloud_notify"; "version" }
    -- For this host only, over deploy/'s global choice: real bodies in the
    -- summary (as ejabberd's include_body: true), so that a push tells which
    -- message it is for and big bodies reach Nudge; room for the brake
    -- scenario's many devices per user (the default keeps 5).
    push_notification_with_body = true
    push_max_devices = 100

-- The conformance kit's App Server (scripts/interop-test, "conformance"),
-- with Prosody's default conflict rule (deploy/ sets kick_old globally).
Component "$KIT_DOMAIN"
    component_secret = "$SECRET"
    component_conflict_resolve = "kick_new"
EOF
    for user in "${USERS[@]}"; do
        prosodyctl --config "$dir/prosody.cfg.lua" register "$user" "$USER_DOMAIN" "$PASSWORD" || return 1
    done
    echo "users ${USERS[*]}; component $PUSH_DOMAIN on 127.0.0.1:$PROSODY_COMPONENT (from deploy/prosody.cfg.lua)"
}

start_prosody() {
    local dir=$WORK/prosody
    port_free "$PROSODY_C2S" && port_free "$PROSODY_COMPONENT" ||
        { echo "port $PROSODY_C2S or $PROSODY_COMPONENT is in use"; return 1; }
    prosody -F --config "$dir/prosody.cfg.lua" >>"$dir/prosody.out" 2>&1 &
    PIDS[prosody]=$!
    wait_until 20 ports_open "$PROSODY_C2S" "$PROSODY_COMPONENT" ||
        { tail -n 20 "$dir/prosody.out" "$dir/prosody.log"; return 1; }
    echo "prosody $(dpkg-query -W -f '${Version}' prosody), PID ${PIDS[prosody]}, c2s 127.0.0.1:$PROSODY_C2S"
}

stop_prosody() { stop_pid prosody; }

# prosody_conflict_resolve kick_new|kick_old: sets component_conflict_resolve
# in the generated copy of deploy/prosody.cfg.lua (deploy/ says kick_old, for
# handovers; a standby Nudge needs kick_new); takes effect at the next start.
prosody_conflict_resolve() {
    local file=$WORK/prosody/nudge.cfg.lua
    sed -i "s/^\( *component_conflict_resolve = \)\"[a-z_]*\"/\1\"$1\"/" "$file" || return 1
    grep -q "component_conflict_resolve = \"$1\"" "$file" ||
        { echo "deploy/prosody.cfg.lua has no component_conflict_resolve line to set"; return 1; }
    echo "component_conflict_resolve = \"$1\""
}

# --- ejabberd --------------------------------------------------------------------
EJABBERDCTL=()
configure_ejabberd() {
    local dir=$WORK/ejabberd
    mkdir -p "$dir/spool" "$dir/logs" || return 1
    sed -e "s/^    port: 5347$/    port: $EJABBERD_COMPONENT/" \
        -e "s/password: \"change-me\"/password: \"$SECRET\"/" \
        "$ROOT/deploy/ejabberd.yml" >"$dir/nudge.yml" || return 1
    grep -q "port: $EJABBERD_COMPONENT" "$dir/nudge.yml" && grep -q "\"$SECRET\"" "$dir/nudge.yml" ||
        { echo "deploy/ejabberd.yml no longer has the port/secret lines substituted here"; return 1; }
    cat >"$dir/ejabberd.yml" <<EOF
# Generated by scripts/lib/servers.sh: test harness only. The Nudge part is
# deploy/ejabberd.yml, included below (port and secret substituted).
hosts: [$USER_DOMAIN]
loglevel: debug          # mod_push logs every answer to a publish at debug
# The steps read the log from a byte offset on; a rotation (10 MB by
# default, reached during the never-away phase) would hide what they look for.
log_rotate_size: infinity
certfiles: []
auth_method: internal
default_db: mnesia
s2s_access: none         # no s2s
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
listen:
  - port: $EJABBERD_C2S
    ip: "127.0.0.1"
    module: ejabberd_c2s
    starttls: false      # no certificates on loopback
    access: c2s
  # The conformance kit's App Server (scripts/interop-test, "conformance").
  - port: $EJABBERD_KIT_COMPONENT
    ip: "127.0.0.1"
    module: ejabberd_service
    hosts:
      "$KIT_DOMAIN":
        password: "$SECRET"
shaper_rules:
  # The scenarios leave hundreds of messages offline; over the limit
  # ejabberd would bounce them instead of publishing.
  max_user_offline_messages: 10000
modules:
  mod_disco: {}
  mod_ping: {}
  mod_version: {}   # the conformance kit names the server it checked (XEP-0092)
  # Debian's default ejabberd.yml loads these, as deploy/ejabberd.yml expects.
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  # Real bodies in the summary (Debian's default sends "New message"): a
  # push tells which message it is for, and big bodies reach Nudge.
  mod_push:
    include_body: true
  mod_push_keepalive: {}
  mod_stream_mgmt:
    resend_on_timeout: if_offline
include_config_file: $dir/nudge.yml
EOF
    # ejabberdctl reads its own settings from --ctl-config; without one it
    # would source /etc/ejabberd/ejabberdctl.cfg, which names the system
    # config. A fixed distribution port on loopback replaces epmd, so no
    # epmd is started (and none is left behind).
    cat >"$dir/ejabberdctl.cfg" <<EOF
ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"
INET_DIST_INTERFACE=127.0.0.1
ERL_DIST_PORT=$EJABBERD_DIST
EOF
    # ejabberdctl runs ejabberd as user ejabberd when called by root.
    cp /etc/ejabberd/inetrc "$dir/inetrc" && chown -R ejabberd:ejabberd "$dir" || return 1
    EJABBERDCTL=(ejabberdctl --config-dir "$dir" --config "$dir/ejabberd.yml" --ctl-config "$dir/ejabberdctl.cfg"
        --logs "$dir/logs" --spool "$dir/spool" --node "nudge-interop@localhost")
    echo "component $PUSH_DOMAIN on 127.0.0.1:$EJABBERD_COMPONENT (from deploy/ejabberd.yml)"
}

start_ejabberd() {
    local dir=$WORK/ejabberd
    port_free "$EJABBERD_C2S" && port_free "$EJABBERD_COMPONENT" && port_free "$EJABBERD_DIST" &&
        port_free "$EJABBERD_KIT_COMPONENT" ||
        { echo "port $EJABBERD_C2S, $EJABBERD_COMPONENT, $EJABBERD_KIT_COMPONENT or $EJABBERD_DIST is in use"; return 1; }
    # Its own process group (ejabberdctl → su → erl → beam.smp), so that a
    # last-resort kill reaches the whole tree.
    setsid "${EJABBERDCTL[@]}" foreground >>"$dir/ejabberd.out" 2>&1 &
    PIDS[ejabberd]=$!
    # Listeners open last, once the modules are up.
    wait_until 60 ports_open "$EJABBERD_C2S" "$EJABBERD_COMPONENT" "$EJABBERD_KIT_COMPONENT" ||
        { tail -n 20 "$dir/ejabberd.out" "$dir/logs/ejabberd.log"; return 1; }
    echo "ejabberd $(dpkg-query -W -f '${Version}' ejabberd), PID ${PIDS[ejabberd]}, c2s 127.0.0.1:$EJABBERD_C2S"
}

stop_ejabberd() {
    [ -n "${PIDS[ejabberd]:-}" ] || return 0
    # `ejabberdctl stop` returns before the VM is down; signalling the
    # ejabberdctl wrapper then would orphan a half-stopped beam.smp. So wait
    # for the whole tree to end by itself, and signal its group only if not.
    "${EJABBERDCTL[@]}" stop >/dev/null 2>&1 || true
    wait_until 20 gone "${PIDS[ejabberd]}" || true
    stop_pid ejabberd
}

register_ejabberd_users() {
    local user
    for user in "${USERS[@]}"; do
        "${EJABBERDCTL[@]}" register "$user" "$USER_DOMAIN" "$PASSWORD" 2>/dev/null || return 1
    done
}
