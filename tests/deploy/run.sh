#!/usr/bin/env bash
# ctest `deploy`: deploy/compose.yaml brought up for real and checked.
#
#  1. installs docker.io, docker-compose and debootstrap if missing; starts
#     dockerd if none answers (stopped again at the end);
#  2. creates debian:bookworm-slim and debian:bookworm once with debootstrap +
#     docker import (no registry is reachable); later runs reuse them;
#  3. builds the four images (docker build --network host, layer cache kept);
#  4. checks prometheus.yml and alerts.yml with promtool;
#  5. docker-compose up (unique project name, free ports published on the
#     docker0 address, two agent containers of two simulated printers each),
#     then with the host's farmctl:
#     a job is submitted and printed; Prometheus reports every target up and
#     evaluates the farm's rules; the leader scheduler container is killed, the
#     other replica takes over and prints a second job; then
#     deploy/agent.compose.yaml runs a marlin agent on a virtual Marlin
#     printer (tests/vprinter on a pty) and it prints a third job;
#  6. docker-compose down -v (also on failure, by trap).
#
# Needs root (apt-get, dockerd, secret files owned by the containers' uid), as
# in CI. Prints how long each phase took.
set -euo pipefail

SRC="${PF_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
BUILD="${PF_BUILD_DIR:-$SRC/build}"
FARMCTL="$BUILD/tools/farmctl/farmctl"
DEPLOY="$SRC/deploy"
MIRROR="${PF_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
TAG=deploy-test

say() { printf 'deploy: %s\n' "$*" >&2; }
die() {
    say "FAIL: $*"
    exit 1
}
PHASE_NAME=""
PHASE_START=0
TIMES=()
T0=$(date +%s)
phase() {
    local now
    now=$(date +%s)
    [[ -z $PHASE_NAME ]] || TIMES+=("$(printf '%-34s %4ds' "$PHASE_NAME" $((now - PHASE_START)))")
    PHASE_NAME="$1"
    PHASE_START=$now
    [[ -z $1 ]] || say "== $1"
}

# ------------------------------------------------------------- cleanup ----

WORK="$(mktemp -d /tmp/pf-deploy.XXXXXX)"
PROJECT="pfdeploy$$"
DOCKERD_PID=""
COMPOSE_UP=0
compose() { docker-compose -p "$PROJECT" -f "$DEPLOY/compose.yaml" "$@"; }
PI_UP=0
VPRINTER_PID=""
pi_compose() {
    docker-compose -p "${PROJECT}pi" -f "$DEPLOY/agent.compose.yaml" -f "$WORK/pi-override.yaml" "$@"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ $COMPOSE_UP -eq 0 ]] || phase "teardown (down -v)"
    # the Raspberry Pi agent first: it is a client of the farm
    if [[ $PI_UP -eq 1 ]]; then
        [[ $rc -eq 0 ]] || pi_compose logs --no-color --tail 40 >&2 || true
        if ! pi_compose down -v --timeout 10 >"$WORK/pi-down.log" 2>&1; then
            say "docker-compose down (pi agent) failed:"
            cat "$WORK/pi-down.log" >&2
            rc=1
        fi
    fi
    if [[ $COMPOSE_UP -eq 1 ]]; then
        if [[ $rc -ne 0 ]]; then
            say "failed: the farm's state and logs follow"
            compose ps >&2 || true
            compose logs --no-color --tail 40 >&2 || true
        fi
        if ! compose down -v --remove-orphans --timeout 10 >"$WORK/down.log" 2>&1; then
            say "docker-compose down failed:"
            cat "$WORK/down.log" >&2
            rc=1
        fi
        if docker volume ls -q | grep -q "^${PROJECT}_"; then
            say "volumes left behind: $(docker volume ls -q | grep "^${PROJECT}_" | tr '\n' ' ')"
            rc=1
        fi
    fi
    if [[ -n $VPRINTER_PID ]]; then
        kill -TERM "$VPRINTER_PID" 2>/dev/null || true
        wait "$VPRINTER_PID" 2>/dev/null || true
    fi
    # a dockerd this test launched, also one interrupted while starting
    if [[ -z $DOCKERD_PID && -s $WORK/dockerd.pid ]]; then
        DOCKERD_PID="$(cat "$WORK/dockerd.pid")"
    fi
    if [[ -n $DOCKERD_PID ]]; then
        say "stopping the dockerd this test started (pid $DOCKERD_PID)"
        kill -TERM "$DOCKERD_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$DOCKERD_PID" 2>/dev/null || break
            sleep 0.2
        done
    fi
    phase ""
    say "time per phase:"
    printf '  %s\n' "${TIMES[@]}" >&2
    say "total $(($(date +%s) - T0))s"
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------- 1. packages and dockerd ----

phase "packages (apt-get if missing)"
[[ $EUID -eq 0 ]] || die "needs root: it installs packages, starts dockerd and hands secret files to uid 10001"
[[ -x $FARMCTL ]] || die "$FARMCTL is not built"
VPRINTER="$BUILD/tests/vprinter/vprinter"
[[ -x $VPRINTER ]] || die "$VPRINTER is not built"
missing=()
for p in docker.io docker-compose debootstrap; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    say "installing ${missing[*]}"
    env DEBIAN_FRONTEND=noninteractive apt-get update -q >"$WORK/apt.log" 2>&1 ||
        { cat "$WORK/apt.log" >&2; die "apt-get update failed"; }
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" \
        >>"$WORK/apt.log" 2>&1 || { tail -n 30 "$WORK/apt.log" >&2; die "apt-get install failed"; }
fi

phase "dockerd"
# wait_docker SECONDS LAUNCHER_PID: true once `docker info` answers; false
# when it does not in time or the launcher (and so dockerd) is gone.
wait_docker() {
    local i
    for ((i = 0; i < $1 * 2; i++)); do
        docker info >/dev/null 2>&1 && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.5
    done
    return 1
}
if ! docker info >/dev/null 2>&1; then
    # The defaults (overlay2, iptables, bridge) work on Debian 12 VMs; where
    # they do not (no iptables, no overlayfs), fall back to vfs storage and no
    # iptables: the compose network still works between containers and the
    # published ports through docker-proxy. dockerd writes its own pid to
    # $WORK/dockerd.pid: that is the process cleanup stops.
    for flags in "" "--iptables=false --storage-driver=vfs"; do
        say "starting dockerd ${flags:-(default flags)}; log $WORK/dockerd.log"
        # shellcheck disable=SC2086
        dockerd $flags --pidfile "$WORK/dockerd.pid" >"$WORK/dockerd.log" 2>&1 &
        launcher=$!
        if wait_docker 60 "$launcher"; then
            DOCKERD_PID="$(cat "$WORK/dockerd.pid")"
            break
        fi
        say "dockerd did not come up; end of its log:"
        tail -n 15 "$WORK/dockerd.log" >&2 || true
        if [[ -s $WORK/dockerd.pid ]]; then
            kill -TERM "$(cat "$WORK/dockerd.pid")" 2>/dev/null || true
            wait "$launcher" 2>/dev/null || true
            rm -f "$WORK/dockerd.pid"
        fi
    done
    if ! docker info >/dev/null 2>&1; then
        # The one case this test does not fail on: a machine whose kernel or
        # sandbox cannot run a Docker engine at all. ctest shows it as
        # skipped (SKIP_RETURN_CODE 77), with this reason in its output.
        say "SKIP: no Docker engine could be started on this machine (see the dockerd log above)"
        exit 77
    fi
fi

# ------------------------------------------------------- 2. base image ----

phase "base image (debootstrap, once)"
if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    say "creating debian:bookworm-slim with debootstrap from $MIRROR"
    root="$WORK/rootfs"
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -n 30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import - debian:bookworm-slim >/dev/null
    rm -rf "$root"
fi
docker image inspect debian:bookworm >/dev/null 2>&1 || docker tag debian:bookworm-slim debian:bookworm

# ----------------------------------------------------------- 3. images ----

phase "image build"
build_image() { # NAME DOCKERFILE CONTEXT
    say "building $1:$TAG"
    docker build --network host -t "$1:$TAG" -f "$2" "$3" >"$WORK/build-$1.log" 2>&1 ||
        { tail -n 40 "$WORK/build-$1.log" >&2; die "docker build of $1 failed"; }
}
build_image printfarm "$DEPLOY/Dockerfile" "$SRC"
build_image printfarm-postgres "$DEPLOY/postgres.Dockerfile" "$DEPLOY"
build_image printfarm-redis "$DEPLOY/redis.Dockerfile" "$DEPLOY"
build_image printfarm-prometheus "$DEPLOY/prometheus.Dockerfile" "$DEPLOY"

# The image holds every binary, runs as a non-root user and has a healthcheck.
[[ "$(docker image inspect -f '{{.Config.User}}' "printfarm:$TAG")" == printfarm ]] ||
    die "printfarm image does not run as user printfarm"
docker image inspect -f '{{.Config.Healthcheck.Test}}' "printfarm:$TAG" | grep -q pf-healthcheck ||
    die "printfarm image has no HEALTHCHECK"
for b in pf-files pf-scheduler pf-agent pf-discovery farmctl; do
    docker run --rm --entrypoint "$b" "printfarm:$TAG" --help >/dev/null 2>&1 ||
        die "$b --help fails in the image"
done
say "image sizes: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep ":$TAG" | tr '\n' ' ')"

# ---------------------------------------------------- 4. promtool check ----

phase "promtool check"
docker run --rm --entrypoint promtool \
    -v "$DEPLOY/prometheus.yml:/etc/prometheus/prometheus.yml:ro" \
    -v "$DEPLOY/alerts.yml:/etc/prometheus/alerts.yml:ro" \
    "printfarm-prometheus:$TAG" check config /etc/prometheus/prometheus.yml >&2 ||
    die "promtool check config failed"
docker run --rm --entrypoint promtool -v "$DEPLOY/alerts.yml:/alerts.yml:ro" \
    "printfarm-prometheus:$TAG" check rules /alerts.yml >&2 || die "promtool check rules failed"

# ---------------------------------------------------------- 5. the farm ----

phase "compose up (until healthy)"
bash "$DEPLOY/make-secrets.sh" "$WORK/secrets"
# The Raspberry Pi agent's token, bound to its printer id (docs/deploying.md).
od -An -tx1 -N24 /dev/urandom | tr -d ' \n' >"$WORK/secrets/printer_token"
echo "agent pi-marlin $(cat "$WORK/secrets/printer_token")" >>"$WORK/secrets/tokens"
chown 10001:10001 "$WORK/secrets/printer_token"
chmod 600 "$WORK/secrets/printer_token"
port() { bash "$SRC/tests/harness/free_port.sh"; }
# The farm's public address (PF_PUBLIC_HOST: what the schedulers advertise,
# so the leader redirect works for the host's farmctl and for containers
# alike): the docker0 bridge's address, which the host and every container
# reach and the LAN does not; the ports are published on it only.
PUBLIC="$(ip -4 -o addr show docker0 2>/dev/null | awk '{ print $4 }' | cut -d/ -f1 | head -n 1)"
[[ -n $PUBLIC ]] || PUBLIC="$(ip -4 route get 1.1.1.1 2>/dev/null | sed -n 's/.* src \([0-9.]*\).*/\1/p')"
[[ -n $PUBLIC ]] || die "no IPv4 address for the farm's published ports (no docker0, no route)"
say "farm published on $PUBLIC"
export PF_IMAGE_TAG=$TAG PF_SECRETS_DIR="$WORK/secrets" PF_PUBLIC_HOST="$PUBLIC" PF_PUBLISH_ADDR="$PUBLIC"
export PF_SIM_SPEED=0.02 PF_SIM_PRINTERS=2 PF_LOST_GRACE=10s
PF_SCHEDULER_1_PORT=$(port)
PF_SCHEDULER_2_PORT=$(port)
PF_FILES_PORT=$(port)
PF_DISCOVERY_PORT=$(port)
PF_PROMETHEUS_PORT=$(port)
PF_WEB_PORT=$(port)
export PF_SCHEDULER_1_PORT PF_SCHEDULER_2_PORT PF_FILES_PORT PF_DISCOVERY_PORT PF_PROMETHEUS_PORT
export PF_WEB_PORT

compose config -q || die "docker-compose rejects deploy/compose.yaml"
# The Raspberry Pi variant: valid, marlin driver, the serial device passed in.
PF_FARM_HOST=farm.example PF_PRINTER_ID=pi-mk4 PF_PROFILE=mk4 PF_SERIAL_DEVICE=/dev/ttyUSB7 \
    docker-compose -p "$PROJECT" -f "$DEPLOY/agent.compose.yaml" config >"$WORK/agent-config.yaml" ||
    die "docker-compose rejects deploy/agent.compose.yaml"
if ! grep -q 'PRINTFARM_DRIVER: marlin' "$WORK/agent-config.yaml" ||
    ! grep -q -- '- /dev/ttyUSB7:/dev/printer' "$WORK/agent-config.yaml"; then
    die "agent.compose.yaml does not run the marlin driver on the passed-through device"
fi
COMPOSE_UP=1
# depends_on waits for each dependency's healthcheck, so `up` returns once
# postgres, redis, discovery, files and both schedulers are healthy.
compose up -d --no-build --scale agent=2 >"$WORK/up.log" 2>&1 ||
    { cat "$WORK/up.log" >&2; die "docker-compose up failed"; }

# The host's farmctl, through the published ports, with the operator token.
export PRINTFARM_SCHEDULER="$PUBLIC:$PF_SCHEDULER_1_PORT,$PUBLIC:$PF_SCHEDULER_2_PORT"
export PRINTFARM_FILES="$PUBLIC:$PF_FILES_PORT" PRINTFARM_DISCOVERY="$PUBLIC:$PF_DISCOVERY_PORT"
PRINTFARM_TOKEN="$(cat "$WORK/secrets/operator_token")"
export PRINTFARM_TOKEN PRINTFARM_TIMEOUT=5s
unset PRINTFARM_CONFIG

# try SECONDS CMD...: runs CMD every second until it succeeds; false if it never does.
try() {
    local secs="$1" i
    shift
    for ((i = 0; i < secs; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 1
    done
    return 1
}
# poll SECONDS WHAT CMD...: try, or fail the test saying WHAT did not happen.
poll() {
    local secs="$1" what="$2"
    shift 2
    try "$secs" "$@" || die "$what: not within ${secs}s"
}
idle_printers() {
    [[ "$("$FARMCTL" printers --json --state idle | grep -c '"id": "')" -ge "$1" ]]
}
poll 120 "a leader answering farmctl" "$FARMCTL" jobs --limit 1
# two agent containers of two simulated printers each
poll 120 "4 simulated printers idle" idle_printers 4

phase "job printed"
# submit_and_wait: submits the mk4 cube and waits until the job is done;
# prints the job id.
job_done() { "$FARMCTL" job show "$1" --json | grep -q '"state": "done"'; }
submit_and_wait() {
    local id
    id="$("$FARMCTL" submit "$SRC/samples/gcode/cube_mk4_PLA.gcode" --profile mk4 \
        --material PLA --colour black --idempotency-key "deploy-$PROJECT-$1")" ||
        die "farmctl submit failed"
    say "submitted job $id"
    poll 180 "job $id printed" job_done "$id"
    "$FARMCTL" job show "$id" --json | grep -q '"state": "succeeded"' ||
        die "job $id is done without a succeeded attempt"
    printf '%s\n' "$id"
}
job1="$(submit_and_wait 1)"
say "job $job1 printed by a simulated printer"

phase "web page (pf-web)"
WEB="http://$PUBLIC:$PF_WEB_PORT"
curl -fsS --max-time 5 "$WEB/" | grep -q '<title>' || die "pf-web does not serve the page at $WEB/"
curl -fsS --max-time 10 -c "$WORK/web-cookies" --data-urlencode "token=$PRINTFARM_TOKEN" \
    "$WEB/api/login" | grep -q '"role":"operator"' || die "pf-web refused the operator token"
curl -fsS --max-time 10 -b "$WORK/web-cookies" "$WEB/api/jobs" | grep -q "$job1" ||
    die "pf-web's job list does not show job $job1"
say "pf-web: operator login, job $job1 listed"

phase "backup (pg_dump, as documented)"
compose exec -T -u postgres postgres pg_dump printfarm >"$WORK/printfarm.sql" ||
    die "pg_dump in the postgres container failed"
grep -q "$job1" "$WORK/printfarm.sql" || die "the pg_dump backup does not hold job $job1"
say "pg_dump: $(wc -c <"$WORK/printfarm.sql") bytes, job $job1 in it"

phase "prometheus targets and rules"
PROM="http://$PUBLIC:$PF_PROMETHEUS_PORT"
# targets_up N: Prometheus has N active targets and every one is up.
targets_up() {
    curl -fsS --max-time 5 "$PROM/api/v1/targets?state=active" | /usr/bin/python3 -c '
import json, sys
want = int(sys.argv[1])
targets = json.load(sys.stdin)["data"]["activeTargets"]
health = sorted((t["labels"]["job"], t["labels"]["instance"], t["health"]) for t in targets)
print(health, file=sys.stderr)
sys.exit(0 if len(health) == want and all(h == "up" for _, _, h in health) else 1)' "$1"
}
# 2 schedulers, files, discovery, web, 2 agent containers, prometheus itself
if ! try 90 targets_up 8; then
    targets_up 8 || true
    die "Prometheus does not report all 8 targets up"
fi
say "Prometheus: all 8 targets up"
# query EXPR: prints the first value of an instant query (empty when none).
query() {
    curl -fsS --max-time 5 -G "$PROM/api/v1/query" --data-urlencode "query=$1" |
        /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)["data"]["result"]
print(r[0]["value"][1] if r else "")'
}
rule_value() { [[ "$(query "$1")" == "$2" ]]; }
poll 90 "recording rule printfarm:scheduler_leaders = 1" rule_value 'printfarm:scheduler_leaders' 1
poll 90 "recording rule printfarm:jobs:by_state{state=\"done\"} = 1" \
    rule_value 'printfarm:jobs:by_state{state="done"}' 1
[[ "$(query 'count(ALERTS{alertname="NoSchedulerLeader"})')" == "" ]] ||
    die "NoSchedulerLeader is pending or firing while a leader runs"

phase "leader killed, other takes over"
# leader_container: the scheduler container whose /metrics says it leads.
leader_container() {
    local s
    for s in scheduler-1 scheduler-2; do
        if compose exec -T "$s" curl -fsS --max-time 3 http://127.0.0.1:9400/metrics 2>/dev/null |
            grep -q '^printfarm_scheduler_leader 1'; then
            echo "$s"
            return 0
        fi
    done
    return 1
}
leader=""
for _ in $(seq 1 30); do
    leader="$(leader_container)" && break
    sleep 1
done
[[ -n $leader ]] || die "neither scheduler container reports itself leader"
other=scheduler-2
[[ $leader == scheduler-2 ]] && other=scheduler-1
say "leader is $leader; killing its container"
docker kill "$(compose ps -q "$leader")" >/dev/null
other_leads() { [[ "$(leader_container)" == "$other" ]]; }
poll 60 "$other taking over as leader" other_leads
say "$other leads"
# The printer that printed job 1 waits for its bed to be cleared; the
# others are idle. Wait until the agents are back with the new leader.
poll 120 "3 printers idle under the new leader" idle_printers 3
job2="$(submit_and_wait 2)"
say "job $job2 printed under the new leader"

phase "marlin agent (agent.compose.yaml)"
# A virtual Marlin printer on a pty of this host. A pty cannot be passed in
# as a device node (the container's devpts is its own), so the test mounts
# it at /dev/vprinter instead; the rest is agent.compose.yaml as is.
"$VPRINTER" >"$WORK/vprinter.out" 2>"$WORK/vprinter.log" &
VPRINTER_PID=$!
pty_ready() { [[ -n "$(head -n 1 "$WORK/vprinter.out")" ]]; }
poll 10 "vprinter printing its pty path" pty_ready
pty="$(head -n 1 "$WORK/vprinter.out")"
[[ -c $pty ]] || die "vprinter's pty '$pty' is not a character device"
chmod 666 "$pty" # the agent runs as uid 10001
cat >"$WORK/pi-override.yaml" <<EOT
services:
  agent:
    environment:
      PRINTFARM_SERIAL_PORT: /dev/vprinter
    volumes:
      - $pty:/dev/vprinter
EOT
# exported: cleanup's `down` reads the file again and needs them too
export PF_FARM_HOST="$PUBLIC" PF_PRINTER_ID=pi-marlin PF_PROFILE=pi PF_SERIAL_DEVICE=/dev/null
PF_AGENT_ADMIN_PORT="$(port)"
export PF_AGENT_ADMIN_PORT
PI_UP=1
pi_compose up -d --no-build >"$WORK/pi-up.log" 2>&1 ||
    { cat "$WORK/pi-up.log" >&2; die "docker-compose up of agent.compose.yaml failed"; }
pi_idle() { "$FARMCTL" printer show pi-marlin --json | grep -q '"state": "idle"'; }
poll 90 "printer pi-marlin idle" pi_idle
id="$("$FARMCTL" submit "$SRC/samples/gcode/cube_mk4_PLA.gcode" --profile pi \
    --material PLA --colour black)" || die "farmctl submit (profile pi) failed"
say "submitted job $id for profile pi"
poll 300 "job $id printed on the marlin printer" job_done "$id"
"$FARMCTL" job show "$id" --json | grep -q '"printer_id": "pi-marlin"' ||
    die "job $id was not printed by pi-marlin"
grep -q 'M109\|M104' "$WORK/vprinter.log" ||
    die "the virtual Marlin printer saw no heating command"
say "job $id printed by the marlin agent on the virtual printer ($(grep -c . "$WORK/vprinter.log") lines logged)"
"$FARMCTL" status >&2 || true

say "PASS"
