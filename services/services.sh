#!/usr/bin/env bash
# services.sh — install, start, health-check and stop CoffeeBus's real services on loopback,
# without Docker: Kafka (KRaft, jars from Maven Central), Redis (Debian's redis-server) and
# FerretDB v1 (built from the Go module proxy) as the MongoDB wire-protocol server, storing its
# data in a PostgreSQL cluster of this script's own (Debian's postgresql, run as `postgres`).
#
#   services.sh up [SERVICE...]      install what is missing, start, wait until healthy
#   services.sh down [SERVICE...]    stop what this script started (pid files)
#   services.sh status [SERVICE...]  state and health of each; exit 0 only if all are healthy
#   services.sh logs SERVICE [N]     log file path and its last N lines (default 50)
#   services.sh reset                down, then delete all run state (data, logs, pid files)
#   services.sh browser              install Debian's chromium if missing (for the web demo tests)
#
# SERVICE is kafka, redis, ferretdb (alias mongo) or postgres; none means all, plus the browser.
# ferretdb includes postgres, its backend (started first, stopped last).
# COFFEEBUS_KAFKA_NODES=3 makes kafka a cluster of three brokers/controllers on loopback (ports:
# see kafka_ports); `up kafka` then starts whichever of its nodes is not running.
# COFFEEBUS_REDIS_NODES=6 makes redis a Redis Cluster of three masters with a replica each
# (ports from COFFEEBUS_REDIS_PORT up); `up redis` then starts whichever node is not running.
# Downloads and builds are cached under $COFFEEBUS_HOME (default ~/.cache/coffeebus), run state
# under $COFFEEBUS_HOME/run. KAFKA_BOOTSTRAP_SERVERS, REDIS_URL or MONGO_URL in the environment
# mean "use that existing server": `up` then only checks that it answers (with MONGO_URL, no
# PostgreSQL is started either). See README.md here.
set -euo pipefail
export LC_ALL=C # EPOCHREALTIME and tool output in one known format

SERVICES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COFFEEBUS_HOME=${COFFEEBUS_HOME:-$HOME/.cache/coffeebus}
RUN_DIR=$COFFEEBUS_HOME/run
PYTHON=${PYTHON:-python3}
PROBE=$SERVICES_DIR/probe.py

LOOPBACK=127.0.0.1
# Ports can be moved (a second set of services beside the usual one, the script's own tests).
KAFKA_PORT=${COFFEEBUS_KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${COFFEEBUS_KAFKA_CONTROLLER_PORT:-9093}
# COFFEEBUS_KAFKA_NODES=3: a cluster of that many brokers (all also controller voters); node i
# listens on KAFKA_PORT + 2(i-1) and KAFKA_CONTROLLER_PORT + 2(i-1) (see kafka_ports).
KAFKA_NODES=${COFFEEBUS_KAFKA_NODES:-1}
REDIS_PORT=${COFFEEBUS_REDIS_PORT:-6379}
# COFFEEBUS_REDIS_NODES=6: a Redis Cluster of three masters, each with a replica; node i
# listens on REDIS_PORT + i-1 (see the Redis Cluster section). 1: one server.
REDIS_NODES=${COFFEEBUS_REDIS_NODES:-1}
FERRETDB_PORT=${COFFEEBUS_FERRETDB_PORT:-27017}
# FerretDB's PostgreSQL; 5433 leaves 5432 to a Debian cluster the machine may also run.
POSTGRES_PORT=${COFFEEBUS_POSTGRES_PORT:-5433}
FERRETDB_VERSION=${FERRETDB_VERSION:-v1.24.2}
FERRETDB_MODULE=github.com/FerretDB/FerretDB
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx512m -Xms256m}
# Deadlines in seconds, counted from the moment the process is launched.
KAFKA_READY_S=${KAFKA_READY_S:-120}
REDIS_READY_S=${REDIS_READY_S:-20}
REDIS_CLUSTER_READY_S=${REDIS_CLUSTER_READY_S:-90}
FERRETDB_READY_S=${FERRETDB_READY_S:-30}
POSTGRES_READY_S=${POSTGRES_READY_S:-30}
EXTERNAL_READY_S=${EXTERNAL_READY_S:-15}
STOP_S=${STOP_S:-30}
LOG_TAIL_LINES=30

# ---------------------------------------------------------------------------------------------
# Helpers

say() { printf '%s\n' "$*"; }

die() {
	printf 'services.sh: error: %s\n' "$*" >&2
	exit 1
}

now_us() { printf '%s' "${EPOCHREALTIME/./}"; }

# seconds_since START_US → "7.1s"
seconds_since() {
	local d=$(($(now_us) - $1))
	printf '%d.%ds' $((d / 1000000)) $((d / 100000 % 10))
}

# fail_service NAME MESSAGE LOGFILE: the one way a service failure is reported.
fail_service() {
	local name=$1 message=$2 logfile=$3
	{
		printf 'services.sh: error: %s: %s\n' "$name" "$message"
		printf 'services.sh: %s log: %s\n' "$name" "$logfile"
		if [[ -s $logfile ]]; then
			printf -- '----- last %d lines of %s -----\n' "$LOG_TAIL_LINES" "$logfile"
			tail -n "$LOG_TAIL_LINES" "$logfile"
			printf -- '-----\n'
		else
			printf 'services.sh: (%s has nothing in it yet)\n' "$logfile"
		fi
	} >&2
	exit 1
}

# probe KIND TARGET: one real request to the server; prints a summary, or why it failed.
probe() {
	if [[ $1 == postgres ]]; then
		probe_postgres "$2"
		return
	fi
	"$PYTHON" "$PROBE" "$@" 2>&1
}

# probe_postgres URL: log in as FerretDB does (user, password, database of the URL) and run a
# query, with psql: PostgreSQL's own client, installed with the server.
probe_postgres() {
	local answer
	if ! answer=$(PGCONNECT_TIMEOUT=3 "$POSTGRES_BIN/psql" -XAtqw -c 'SHOW server_version' "$1" 2>&1); then
		printf '%s' "${answer%%$'\n'*}"
		return 1
	fi
	printf 'PostgreSQL %s' "${answer%% *}"
}

port_open() { (: <"/dev/tcp/$1/$2") 2>/dev/null; }

# alive PID: the process exists and is not a zombie. Services outlive this script, so once it
# exits they are reparented and, after they stop, linger as zombies until reaped; kill -0
# alone would count those as running.
alive() {
	local stat
	kill -0 "$1" 2>/dev/null || return 1
	stat=$(<"/proc/$1/stat") 2>/dev/null || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# pid_of PIDFILE MARKER: print the pid if the file names a live process whose command line
# contains MARKER (so a recycled pid is not mistaken for ours); otherwise print nothing.
pid_of() {
	local pidfile=$1 marker=$2 pid
	[[ -s $pidfile ]] || return 0
	pid=$(<"$pidfile")
	[[ $pid =~ ^[0-9]+$ ]] || return 0
	alive "$pid" || return 0
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 0
	printf '%s' "$pid"
}

# clear_stale NAME PIDFILE MARKER: drop a pid file whose process is gone.
clear_stale() {
	if [[ -e $2 && -z $(pid_of "$2" "$3") ]]; then
		say "$1: removing stale pid file $2"
		rm -f "$2"
	fi
}

# launch PIDFILE LOGFILE CMD...: run CMD in its own session (so it outlives this shell and
# its terminal), stdout+stderr to LOGFILE; the pid file is written by the process itself, so
# it is the pid of CMD and not of a wrapper. The previous log is kept as LOGFILE.1.
launch() {
	local pidfile=$1 logfile=$2
	shift 2
	[[ -e $logfile ]] && mv -f "$logfile" "$logfile.1"
	rm -f "$pidfile"
	# shellcheck disable=SC2016 # $$ and $@ belong to the inner shell
	# 9>&-: the service must not inherit the lock on services.lock (see lock()).
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 9>&- &
	wait_pidfile "$pidfile"
}

# wait_pidfile FILE: up to 5 s for a starting process to write its pid file.
wait_pidfile() {
	local waited=0
	while [[ ! -s $1 ]] && ((waited < 50)); do
		sleep 0.1
		waited=$((waited + 1))
	done
}

# port_taken NAME PORT: fail if a process this script did not start listens on PORT.
port_taken() {
	if port_open "$LOOPBACK" "$2"; then
		die "$1: port $2 on $LOOPBACK is taken by a process services.sh did not start (see 'ss -ltnp')"
	fi
}

# reuse_foreign NAME ADDRESS PROBE_ARGS...: succeed if a server that services.sh did not start
# (another COFFEEBUS_HOME, a hand-started one) already answers the health probe on ADDRESS, so
# it is used as it is; fail with a clear error if the port is taken by something that does not
# answer; return 1 if the port is free.
reuse_foreign() {
	local name=$1 address=$2 answer
	shift 2
	port_open "${address%:*}" "${address##*:}" || return 1
	if answer=$(probe "$@"); then
		say "$name: using the server already answering on $address, not started by services.sh ($answer)"
		return 0
	fi
	port_taken "$name" "${address##*:}"
}

# wait_ready NAME DEADLINE_S START_US LOGFILE PIDFILE MARKER ADDRESS PROBE_ARGS...
# Poll the probe until it passes; fail early if the process dies, or at the deadline.
# START_US is the launch time, or 0 for a process that was already running.
wait_ready() {
	local name=$1 deadline=$2 start=$3 logfile=$4 pidfile=$5 marker=$6 address=$7
	shift 7
	local answer was_running=0
	if ((start == 0)); then
		was_running=1
		start=$(now_us)
	fi
	while true; do
		if answer=$(probe "$@"); then
			if ((was_running)); then
				say "$name: already running, ready on $address ($answer)"
			else
				say "$name: ready on $address in $(seconds_since "$start") ($answer)"
			fi
			return 0
		fi
		if [[ -n $pidfile && -z $(pid_of "$pidfile" "$marker") ]]; then
			fail_service "$name" "the process exited before it became ready (last probe: $answer)" "$logfile"
		fi
		if (($(now_us) - start > deadline * 1000000)); then
			fail_service "$name" "not ready on $address within ${deadline}s (last probe: $answer); it is left running: 'services.sh down' stops it" "$logfile"
		fi
		sleep 0.25
	done
}

# stop_pidfile NAME PIDFILE MARKER [SIGNAL]: SIGNAL (default TERM), wait up to STOP_S, then
# SIGKILL.
stop_pidfile() {
	local name=$1 pidfile=$2 marker=$3 signal=${4:-TERM} pid start
	pid=$(pid_of "$pidfile" "$marker")
	if [[ -z $pid ]]; then
		[[ -e $pidfile ]] && rm -f "$pidfile"
		say "$name: not running"
		return 0
	fi
	start=$(now_us)
	kill -"$signal" "$pid" 2>/dev/null || true
	while alive "$pid"; do
		if (($(now_us) - start > STOP_S * 1000000)); then
			say "$name: still running ${STOP_S}s after SIG$signal, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.1
	done
	rm -f "$pidfile"
	say "$name: stopped (pid $pid) in $(seconds_since "$start")"
}

# apt_install PACKAGE...: install Debian packages; `apt-get update` only when the plain
# install fails (no or stale package lists). Package scripts must not start services here:
# a Debian redis-server started by its init script would hold port 6379 with persistence on.
apt_install() {
	local log=$COFFEEBUS_HOME/apt.log policy=/usr/sbin/policy-rc.d made_policy=0 ok=0
	[[ $(id -u) == 0 ]] || die "need root to 'apt-get install $*'; install it and run again"
	say "apt: installing $* (log: $log)"
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=1
	fi
	if DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$log" 2>&1; then
		ok=1
	elif apt-get update >>"$log" 2>&1 &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$log" 2>&1; then
		ok=1
	fi
	((made_policy)) && rm -f "$policy"
	((ok)) || fail_service apt "could not install $*" "$log"
}

java_cmd() { printf '%s' "${JAVA_HOME:+$JAVA_HOME/bin/}java"; }

ensure_java_and_maven() {
	local java major
	java=$(java_cmd)
	command -v "$java" >/dev/null || apt_install openjdk-17-jre-headless
	major=$("$java" -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1)
	((${major:-0} >= 17)) || die "kafka: Kafka 4.x needs Java >= 17, '$java' is Java ${major:-unknown}"
	command -v mvn >/dev/null || apt_install maven
}

# ---------------------------------------------------------------------------------------------
# Kafka (KRaft). Node id, ports and directories are parameters so that a three-node cluster
# on loopback (chaos tests) can reuse start_kafka_node/wait_kafka_node with KAFKA_RUN_DIR set.

KAFKA_POM=$SERVICES_DIR/kafka/pom.xml
KAFKA_LOG4J=$SERVICES_DIR/kafka/log4j2.properties
KAFKA_RUN_DIR=${KAFKA_RUN_DIR:-$RUN_DIR/kafka}

kafka_version() { sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$KAFKA_POM"; }

# kafka_libs: set KAFKA_LIBS to the folder holding the broker's jars, copying them with Maven
# first if this pom's set is not cached yet. The folder is keyed by version and pom hash.
kafka_libs() {
	local version hash dir build log
	version=$(kafka_version)
	hash=$(sha256sum "$KAFKA_POM" | cut -c1-12)
	dir=$COFFEEBUS_HOME/kafka/$version-$hash
	if [[ ! -e $dir/.complete ]]; then
		ensure_java_and_maven
		log=$COFFEEBUS_HOME/kafka/maven.log
		build=$COFFEEBUS_HOME/kafka/build-$hash
		say "kafka: copying Kafka $version jars with Maven (log: $log)"
		rm -rf "$dir" "$build"
		mkdir -p "$build"
		cp "$KAFKA_POM" "$build/pom.xml"
		(cd "$build" && mvn -B -q dependency:copy-dependencies -DincludeScope=runtime \
			-DoutputDirectory="$dir/libs") >"$log" 2>&1 ||
			fail_service kafka "Maven could not copy the Kafka $version jars" "$log"
		rm -rf "$build"
		# Kafka's SLF4J API and the Log4j binding must agree: log4j-slf4j-impl is for
		# slf4j 1.7, log4j-slf4j2-impl for slf4j 2.x. A wrong pair logs nothing at all.
		if compgen -G "$dir/libs/slf4j-api-2.*.jar" >/dev/null &&
			! compgen -G "$dir/libs/log4j-slf4j2-impl-*.jar" >/dev/null; then
			die "kafka: Kafka $version uses slf4j 2.x; use log4j-slf4j2-impl in $KAFKA_POM"
		fi
		touch "$dir/.complete"
	fi
	KAFKA_LIBS=$dir/libs
}

# kafka_write_config ID BROKER_PORT CONTROLLER_PORT VOTERS FILE
# VOTERS is "ID@HOST:PORT,…"; one voter means a standalone node formatted with --standalone.
kafka_write_config() {
	local id=$1 broker_port=$2 controller_port=$3 voters=$4 file=$5 node_dir quorum rf min_isr
	node_dir=$(dirname "$file")
	local -a voter_list
	IFS=, read -r -a voter_list <<<"$voters"
	rf=$((${#voter_list[@]} < 3 ? ${#voter_list[@]} : 3))
	min_isr=$((rf >= 3 ? 2 : 1))
	if ((${#voter_list[@]} == 1)); then
		quorum="controller.quorum.bootstrap.servers=${voters#*@}"
	else
		quorum="controller.quorum.voters=$voters"
	fi
	cat >"$file" <<EOF
# Written by services/services.sh; rewritten at every start.
process.roles=broker,controller
node.id=$id
$quorum
listeners=PLAINTEXT://$LOOPBACK:$broker_port,CONTROLLER://$LOOPBACK:$controller_port
advertised.listeners=PLAINTEXT://$LOOPBACK:$broker_port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$node_dir/data

# Topics are declared in topology.yaml and created by 'coffeebus topology apply'; tests create
# their own with the admin client. No auto-creation, so a misspelt topic name fails loudly
# instead of silently creating a new, empty topic.
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=$rf
min.insync.replicas=$min_isr

# Internal topics sized for a test box: 10 partitions instead of 50 make the first
# FindCoordinator (which creates __consumer_offsets) and the first transaction noticeably
# faster, while groups still spread over several coordinator partitions as in production.
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
share.coordinator.state.topic.num.partitions=10

# Tests join consumer groups constantly: no 3 s wait for more members before the first rebalance.
group.initial.rebalance.delay.ms=0

# Test data is disposable: keep at most 6 hours or 256 MiB per partition, in 16 MiB segments
# (retention only ever deletes closed segments).
log.retention.hours=6
log.retention.bytes=268435456
log.segment.bytes=16777216
log.retention.check.interval.ms=60000
EOF
}

# start_kafka_node ID BROKER_PORT CONTROLLER_PORT [VOTERS]
# Format the node's storage on first use and launch the broker; does not wait (the nodes of a
# multi-node cluster only become ready together). Prints nothing if the node already runs.
# Sets KAFKA_STARTED_US to the launch time, or to 0 when the node was already running.
start_kafka_node() {
	local id=$1 broker_port=$2 controller_port=$3
	local voters=${4:-$id@$LOOPBACK:$controller_port}
	local node_dir=$KAFKA_RUN_DIR/node-$id
	local props=$node_dir/server.properties log=$node_dir/kafka.log pidfile=$node_dir/kafka.pid
	local java cluster_id_file=$KAFKA_RUN_DIR/cluster.id
	KAFKA_STARTED_US=0
	clear_stale "kafka-$id" "$pidfile" "$props"
	[[ -n $(pid_of "$pidfile" "$props") ]] && return 0
	reuse_foreign "kafka-$id" "$LOOPBACK:$broker_port" kafka "$LOOPBACK:$broker_port" && return 0
	port_taken "kafka-$id" "$controller_port"
	kafka_libs
	java=$(java_cmd)
	mkdir -p "$node_dir/data"
	cp "$KAFKA_LOG4J" "$node_dir/log4j2.properties"
	kafka_write_config "$id" "$broker_port" "$controller_port" "$voters" "$props"
	local -a jvm=(-Dlog4j2.configurationFile="$node_dir/log4j2.properties" -cp "$KAFKA_LIBS/*")
	if [[ ! -e $node_dir/data/meta.properties ]]; then
		[[ -s $cluster_id_file ]] || probe cluster-id >"$cluster_id_file"
		local -a mode=()
		[[ $voters == *,* ]] || mode=(--standalone)
		say "kafka-$id: formatting $node_dir/data"
		"$java" "${jvm[@]}" kafka.tools.StorageTool format "${mode[@]}" \
			-t "$(<"$cluster_id_file")" -c "$props" >"$node_dir/format.log" 2>&1 ||
			fail_service kafka "StorageTool format failed" "$node_dir/format.log"
	fi
	say "kafka-$id: starting Kafka $(kafka_version) (log: $log)"
	KAFKA_STARTED_US=$(now_us)
	# shellcheck disable=SC2086 # KAFKA_HEAP_OPTS holds several options
	launch "$pidfile" "$log" "$java" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "${jvm[@]}" kafka.Kafka "$props"
}

# kafka_ports ID: set KAFKA_NODE_PORT and KAFKA_NODE_CONTROLLER_PORT for node ID (1-based).
# A stride of 2 keeps the defaults' pairs apart: 9092/9093, 9094/9095, 9096/9097.
kafka_ports() {
	KAFKA_NODE_PORT=$((KAFKA_PORT + 2 * ($1 - 1)))
	KAFKA_NODE_CONTROLLER_PORT=$((KAFKA_CONTROLLER_PORT + 2 * ($1 - 1)))
}

# kafka_check_nodes: KAFKA_NODES is a small count and the nodes' ports do not collide.
kafka_check_nodes() {
	[[ $KAFKA_NODES =~ ^[1-9]$ ]] || die "kafka: COFFEEBUS_KAFKA_NODES must be 1-9, not '$KAFKA_NODES'"
	local id ports=" "
	for ((id = 1; id <= KAFKA_NODES; id++)); do
		kafka_ports "$id"
		for port in "$KAFKA_NODE_PORT" "$KAFKA_NODE_CONTROLLER_PORT"; do
			[[ $ports == *" $port "* ]] &&
				die "kafka: port $port would serve two listeners of a $KAFKA_NODES-node cluster (node i uses COFFEEBUS_KAFKA_PORT + 2(i-1) and COFFEEBUS_KAFKA_CONTROLLER_PORT + 2(i-1))"
			ports+="$port "
		done
	done
}

# kafka_voters: the controller quorum of all KAFKA_NODES nodes, "1@HOST:PORT,2@HOST:PORT,…".
kafka_voters() {
	local id voters=""
	for ((id = 1; id <= KAFKA_NODES; id++)); do
		kafka_ports "$id"
		voters+="${voters:+,}$id@$LOOPBACK:$KAFKA_NODE_CONTROLLER_PORT"
	done
	printf '%s' "$voters"
}

# start_kafka: start every node (without waiting: a multi-node cluster only becomes ready once
# a quorum runs), then wait for each. Nodes already running are left alone, so after one node
# was stopped or killed, `up kafka` starts just that one again.
start_kafka() {
	local id voters
	local -a launched=()
	kafka_check_nodes
	voters=$(kafka_voters)
	for ((id = 1; id <= KAFKA_NODES; id++)); do
		kafka_ports "$id"
		start_kafka_node "$id" "$KAFKA_NODE_PORT" "$KAFKA_NODE_CONTROLLER_PORT" "$voters"
		launched+=("$KAFKA_STARTED_US")
	done
	KAFKA_NODE_STARTED_US=("${launched[@]}")
}

wait_kafka() {
	local id
	for ((id = 1; id <= KAFKA_NODES; id++)); do
		kafka_ports "$id"
		wait_kafka_node "$id" "$KAFKA_NODE_PORT" "${KAFKA_NODE_STARTED_US[id - 1]:-0}"
	done
}

# wait_kafka_node ID BROKER_PORT [STARTED_US]
wait_kafka_node() {
	local id=$1 broker_port=$2 started=${3:-0}
	local node_dir=$KAFKA_RUN_DIR/node-$id
	wait_ready "kafka-$id" "$KAFKA_READY_S" "$started" "$node_dir/kafka.log" \
		"$node_dir/kafka.pid" "$node_dir/server.properties" "$LOOPBACK:$broker_port" \
		kafka "$LOOPBACK:$broker_port"
}

stop_kafka_node() {
	local node_dir=$KAFKA_RUN_DIR/node-$1
	stop_pidfile "kafka-$1" "$node_dir/kafka.pid" "$node_dir/server.properties"
}

# ---------------------------------------------------------------------------------------------
# Redis

REDIS_DIR=$RUN_DIR/redis
REDIS_PIDFILE=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log
REDIS_MARKER=redis-server

start_redis() {
	REDIS_STARTED_US=0
	if ((REDIS_NODES > 1)); then
		start_redis_cluster
		return
	fi
	clear_stale redis "$REDIS_PIDFILE" "$REDIS_MARKER"
	[[ -n $(pid_of "$REDIS_PIDFILE" "$REDIS_MARKER") ]] && return 0
	reuse_foreign redis "$LOOPBACK:$REDIS_PORT" redis "redis://$LOOPBACK:$REDIS_PORT/0" && return 0
	command -v redis-server >/dev/null || apt_install redis-server
	mkdir -p "$REDIS_DIR"
	[[ -e $REDIS_LOG ]] && mv -f "$REDIS_LOG" "$REDIS_LOG.1"
	say "redis: starting $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') (log: $REDIS_LOG)"
	REDIS_STARTED_US=$(now_us)
	# Daemonized, so redis-server writes the pid file itself; no persistence: test data only.
	redis-server --daemonize yes --bind "$LOOPBACK" --port "$REDIS_PORT" --save "" \
		--appendonly no --dir "$REDIS_DIR" --logfile "$REDIS_LOG" --pidfile "$REDIS_PIDFILE" 9>&- ||
		fail_service redis "redis-server refused to start" "$REDIS_LOG"
	wait_pidfile "$REDIS_PIDFILE"
}

wait_redis() {
	if ((REDIS_NODES > 1)); then
		wait_redis_cluster
		return
	fi
	wait_ready redis "$REDIS_READY_S" "$REDIS_STARTED_US" "$REDIS_LOG" "$REDIS_PIDFILE" "$REDIS_MARKER" \
		"$LOOPBACK:$REDIS_PORT" redis "redis://$LOOPBACK:$REDIS_PORT/0"
}

# --- Redis Cluster (COFFEEBUS_REDIS_NODES=6): half the nodes masters, each with one replica.
# Node i serves on REDIS_PORT + i-1 and talks to the others (the cluster bus) on
# REDIS_PORT + REDIS_NODES + i-1: 7000-7005 and 7006-7011 for `COFFEEBUS_REDIS_PORT=7000`.
# Each node keeps its cluster view in node-<i>/nodes.conf (written by Redis, whatever the
# persistence), so a node started again rejoins on its own: a killed master whose replica took
# over comes back as that replica's replica. No persistence, as the single node: a master
# started again *before* its replica took over would come back empty and as master — wait for
# the failover first (tests/chaos/services.py does).

REDIS_CLUSTER_DIR=$RUN_DIR/redis-cluster
# The failure detector: a master unreachable this long is failed over to its replica.
REDIS_CLUSTER_NODE_TIMEOUT_MS=${REDIS_CLUSTER_NODE_TIMEOUT_MS:-3000}

redis_node_port() { printf '%s' $((REDIS_PORT + $1 - 1)); }
redis_node_dir() { printf '%s' "$REDIS_CLUSTER_DIR/node-$1"; }

# redis_check_nodes: REDIS_NODES is 1, or an even count of at least 6 (three masters, the
# fewest Redis Cluster accepts, each with a replica).
redis_check_nodes() {
	[[ $REDIS_NODES =~ ^[0-9]+$ ]] && { ((REDIS_NODES == 1)) || ((REDIS_NODES >= 6 && REDIS_NODES <= 18 && REDIS_NODES % 2 == 0)); } ||
		die "redis: COFFEEBUS_REDIS_NODES must be 1 or an even 6-18 (masters with one replica each), not '$REDIS_NODES'"
}

# redis_cluster_nodes: "HOST:PORT,…" of every node.
redis_cluster_nodes() {
	local id out=""
	for ((id = 1; id <= REDIS_NODES; id++)); do out+="${out:+,}$LOOPBACK:$(redis_node_port "$id")"; done
	printf '%s' "$out"
}

start_redis_node() {
	local id=$1 port dir pidfile log
	port=$(redis_node_port "$id")
	dir=$(redis_node_dir "$id")
	pidfile=$dir/redis.pid log=$dir/redis.log
	clear_stale "redis-$id" "$pidfile" "$LOOPBACK:$port"
	[[ -n $(pid_of "$pidfile" "$LOOPBACK:$port") ]] && return 0
	port_taken "redis-$id" "$port"
	port_taken "redis-$id" $((port + REDIS_NODES))
	mkdir -p "$dir"
	[[ -e $log ]] && mv -f "$log" "$log.1"
	say "redis-$id: starting cluster node on $LOOPBACK:$port (log: $log)"
	# cluster-replica-validity-factor 0: a replica fails over however long it was cut off from
	# its master (on one box, a busy replica may lag; the alternative is a slot range down).
	redis-server --daemonize yes --bind "$LOOPBACK" --port "$port" --save "" --appendonly no \
		--cluster-enabled yes --cluster-config-file nodes.conf --cluster-port $((port + REDIS_NODES)) \
		--cluster-node-timeout "$REDIS_CLUSTER_NODE_TIMEOUT_MS" --cluster-replica-validity-factor 0 \
		--dir "$dir" --logfile "$log" --pidfile "$pidfile" 9>&- ||
		fail_service "redis-$id" "redis-server refused to start" "$log"
	wait_pidfile "$pidfile"
}

start_redis_cluster() {
	local id layout="nodes=$REDIS_NODES port=$REDIS_PORT"
	redis_check_nodes
	# The nodes' cluster state (nodes.conf) names ports: one of another layout is useless, and
	# holds no data (no persistence). Start over, unless one of its nodes still runs.
	if [[ -d $REDIS_CLUSTER_DIR && $(cat "$REDIS_CLUSTER_DIR/layout" 2>/dev/null) != "$layout" ]]; then
		for pidfile in "$REDIS_CLUSTER_DIR"/node-*/redis.pid; do
			[[ -n $(pid_of "$pidfile" redis-server) ]] &&
				die "redis: a cluster of another layout runs from $REDIS_CLUSTER_DIR; stop it with the COFFEEBUS_REDIS_NODES/PORT it was started with"
		done
		say "redis: discarding the cluster state of another layout in $REDIS_CLUSTER_DIR"
		rm -rf "$REDIS_CLUSTER_DIR"
	fi
	mkdir -p "$REDIS_CLUSTER_DIR"
	printf '%s\n' "$layout" >"$REDIS_CLUSTER_DIR/layout"
	REDIS_STARTED_US=$(now_us)
	for ((id = 1; id <= REDIS_NODES; id++)); do start_redis_node "$id"; done
}

# redis_known_nodes PORT: how many nodes that node knows (1 = not part of a cluster yet).
redis_known_nodes() {
	redis-cli -h "$LOOPBACK" -p "$1" cluster info 2>/dev/null | tr -d '\r' |
		sed -n 's/^cluster_known_nodes://p'
}

# wait_redis_cluster: every node answers PING; a set of fresh nodes is made a cluster (first
# half masters, one replica each, slots split evenly); then every node must report
# cluster_state:ok. A half-made cluster (some nodes fresh, some not) is an error: `reset`.
wait_redis_cluster() {
	local id port fresh=0 joined=0 known
	for ((id = 1; id <= REDIS_NODES; id++)); do
		port=$(redis_node_port "$id")
		wait_ready "redis-$id" "$REDIS_READY_S" "$REDIS_STARTED_US" "$(redis_node_dir "$id")/redis.log" \
			"$(redis_node_dir "$id")/redis.pid" "$LOOPBACK:$port" "$LOOPBACK:$port" \
			redis "redis://$LOOPBACK:$port/0" >/dev/null
		known=$(redis_known_nodes "$port")
		if [[ $known == 1 ]]; then fresh=$((fresh + 1)); else joined=$((joined + 1)); fi
	done
	if ((joined == 0)); then
		local -a nodes
		IFS=, read -r -a nodes <<<"$(redis_cluster_nodes)"
		say "redis: creating a cluster of ${#nodes[@]} nodes ($((${#nodes[@]} / 2)) masters, one replica each)"
		redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes \
			>"$REDIS_CLUSTER_DIR/create.log" 2>&1 ||
			fail_service redis "redis-cli --cluster create failed" "$REDIS_CLUSTER_DIR/create.log"
	elif ((fresh > 0)); then
		die "redis: $fresh node(s) of the cluster have no cluster state while $joined have; 'services.sh reset' starts over"
	fi
	# Slots agreed by every node, replicas attached: seconds when idle, more on a busy box.
	wait_ready redis "$REDIS_CLUSTER_READY_S" "$REDIS_STARTED_US" "$REDIS_CLUSTER_DIR/node-1/redis.log" "" "" \
		"$(redis_cluster_nodes)" redis-cluster "$(redis_cluster_nodes)"
}

stop_redis_cluster() {
	local id
	for ((id = 1; id <= REDIS_NODES; id++)); do
		stop_pidfile "redis-$id" "$(redis_node_dir "$id")/redis.pid" "$LOOPBACK:$(redis_node_port "$id")"
	done
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL: FerretDB's backend. Debian's server binaries (apt), a cluster of this script's own
# in $COFFEEBUS_HOME/run/postgres on its own port; Debian's default cluster (15/main, 5432) and
# its init script are left alone.

POSTGRES_MAJOR=15 # Debian 12's
POSTGRES_BIN=/usr/lib/postgresql/$POSTGRES_MAJOR/bin
POSTGRES_DIR=$RUN_DIR/postgres
POSTGRES_DATA=$POSTGRES_DIR/data
POSTGRES_PIDFILE=$POSTGRES_DIR/postgres.pid
POSTGRES_LOG=$POSTGRES_DIR/postgres.log
POSTGRES_INIT_LOG=$POSTGRES_DIR/initdb.log
# Where the postgres user sees POSTGRES_DATA (see AS_POSTGRES); on the host an empty directory.
POSTGRES_MOUNT=/var/lib/postgresql/coffeebus
# FerretDB's role and database. The password is fixed: the cluster listens on loopback only,
# holds test data, and pg_hba.conf admits this one role to this one database and nothing else.
POSTGRES_USER=ferretdb
POSTGRES_PASSWORD=ferretdb
POSTGRES_DB=ferretdb
POSTGRES_URL=postgres://$POSTGRES_USER:$POSTGRES_PASSWORD@$LOOPBACK:$POSTGRES_PORT/$POSTGRES_DB
# On the postmaster's command line (its children show it in ps), so pid_of knows it; the " -D"
# that follows keeps port 5433 from matching 54330.
POSTGRES_MARKER="cluster_name=coffeebus:$POSTGRES_PORT -D"
POSTGRES_STARTED_US=0

# AS_POSTGRES CMD...: the command prefix that runs CMD as the postgres OS user with
# POSTGRES_DATA at POSTGRES_MOUNT. PostgreSQL refuses to run as root, and the postgres user may
# not enter COFFEEBUS_HOME: the default ~/.cache/coffeebus is below /root (0700), a pytest
# tmp_path below /tmp/pytest-of-root (0700). Rather than open those directories to it, CMD runs
# in a mount namespace of its own (unshare) in which the data directory is bind-mounted at
# POSTGRES_MOUNT, a path the postgres user reaches. The mount is private to CMD and its children
# and goes away with them; clusters of several COFFEEBUS_HOMEs share the mount point without
# seeing each other. Every step execs, so the pid of the prefixed command is CMD's.
# shellcheck disable=SC2016 # $1, $2 and $@ belong to the inner shell
AS_POSTGRES=(
	unshare --mount --propagation private --
	bash -c 'mount --bind -- "$1" "$2" && cd / && shift 2 &&
		exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"'
	as_postgres "$POSTGRES_DATA" "$POSTGRES_MOUNT"
)

postgres_install() {
	[[ -x $POSTGRES_BIN/postgres ]] || apt_install postgresql
	[[ -x $POSTGRES_BIN/postgres ]] ||
		die "postgres: 'apt-get install postgresql' did not bring $POSTGRES_BIN/postgres (services.sh runs PostgreSQL $POSTGRES_MAJOR, Debian 12's)"
	id postgres >/dev/null 2>&1 || die "postgres: Debian's postgresql package made no 'postgres' user"
}

# postgres_write_config: postgresql.conf and pg_hba.conf, rewritten at every start (initdb's
# are replaced entirely; what is not set here has PostgreSQL's built-in default).
postgres_write_config() {
	cat >"$POSTGRES_DATA/postgresql.conf" <<EOF
# Written by services/services.sh; rewritten at every start.
listen_addresses = '$LOOPBACK'
port = $POSTGRES_PORT
# TCP only: no socket directory (Debian's /var/run/postgresql belongs to its own clusters).
unix_socket_directories = ''
# FerretDB's pool opens up to 50 connections (its pool_max_conns default).
max_connections = 100
# A test box shared with Kafka, Redis and the tests: PostgreSQL's (and Debian's) default size.
shared_buffers = 128MB

# Durability: PostgreSQL's defaults, spelt out. A commit waits for its WAL flush, so nothing
# acknowledged is lost even if PostgreSQL or the OS crashes, and the cluster never needs a
# reset after one. Relaxing it bought nothing measurable here: FerretDB, not the ~80 us
# fdatasync of this disk, is the limit (README.md, "PostgreSQL, FerretDB's backend").
fsync = on
synchronous_commit = on

log_destination = 'stderr'
logging_collector = off
log_line_prefix = '%m [%p] '
# Start, stop, checkpoints, FATAL and PANIC; not the ERROR of every failed statement, which
# FerretDB returns to its client anyway: the stores' idempotent inserts meet duplicate keys
# thousands of times per test run (3 log lines each).
log_min_messages = log
log_timezone = 'UTC'
timezone = 'UTC'
EOF
	cat >"$POSTGRES_DATA/pg_hba.conf" <<EOF
# Written by services/services.sh; rewritten at every start.
# FerretDB's role, its database, over loopback TCP, with its password; nothing else.
# TYPE DATABASE USER ADDRESS METHOD
host $POSTGRES_DB $POSTGRES_USER $LOOPBACK/32 scram-sha-256
EOF
	chown postgres:postgres "$POSTGRES_DATA/postgresql.conf" "$POSTGRES_DATA/pg_hba.conf"
}

# postgres_init: create the cluster on first use — initdb, then FerretDB's role and database in
# single-user mode (so they exist before the server listens). A half-made cluster (no
# `initialized` mark) is deleted and made again, as is a mark without its data directory.
postgres_init() {
	[[ -e $POSTGRES_DIR/initialized && -e $POSTGRES_DATA/PG_VERSION ]] && return 0
	local log=$POSTGRES_INIT_LOG
	rm -rf "$POSTGRES_DATA"
	mkdir -p "$POSTGRES_DATA"
	chown postgres:postgres "$POSTGRES_DATA"
	chmod 700 "$POSTGRES_DATA"
	say "postgres: creating the cluster in $POSTGRES_DATA (log: $log)"
	# C collation (FerretDB compares and sorts in Go); the auth methods are replaced by
	# pg_hba.conf at every start.
	"${AS_POSTGRES[@]}" "$POSTGRES_BIN/initdb" -D "$POSTGRES_MOUNT" --username=postgres \
		--encoding=UTF8 --locale=C --auth-local=peer --auth-host=scram-sha-256 --no-instructions \
		>"$log" 2>&1 || fail_service postgres "initdb failed" "$log"
	postgres_write_config
	"${AS_POSTGRES[@]}" "$POSTGRES_BIN/postgres" --single -D "$POSTGRES_MOUNT" postgres >>"$log" 2>&1 <<EOF ||
CREATE ROLE $POSTGRES_USER LOGIN PASSWORD '$POSTGRES_PASSWORD';
CREATE DATABASE $POSTGRES_DB OWNER $POSTGRES_USER;
EOF
		fail_service postgres "creating FerretDB's role and database failed" "$log"
	# Single-user mode reports a failed statement in its output only, not in its exit status.
	if grep -qE '^(ERROR|FATAL|PANIC):' "$log"; then
		fail_service postgres "creating FerretDB's role and database failed" "$log"
	fi
	touch "$POSTGRES_DIR/initialized"
}

# postgres_clear_lock: delete the postmaster.pid of a postmaster that is gone (killed, or the
# machine stopped). PostgreSQL ignores a stale one only if no process has its pid, but a killed
# service lingers as a zombie until it is reaped (see alive), and PostgreSQL takes that for a
# postmaster still running. Only called when our pid file shows no live postmaster.
postgres_clear_lock() {
	local lockfile=$POSTGRES_DATA/postmaster.pid pid
	[[ -s $lockfile ]] || return 0
	pid=$(head -n 1 "$lockfile")
	if [[ $pid =~ ^[0-9]+$ ]] && alive "$pid" &&
		tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$POSTGRES_MARKER"; then
		return 0 # a live postmaster of this cluster: PostgreSQL will refuse to start, and say why
	fi
	say "postgres: removing the lock file of a postmaster that is gone (pid $pid)"
	rm -f "$lockfile"
}

# Sets POSTGRES_STARTED_US to the launch time, or to 0 when PostgreSQL was already running.
start_postgres() {
	POSTGRES_STARTED_US=0
	clear_stale postgres "$POSTGRES_PIDFILE" "$POSTGRES_MARKER"
	[[ -n $(pid_of "$POSTGRES_PIDFILE" "$POSTGRES_MARKER") ]] && return 0
	reuse_foreign postgres "$LOOPBACK:$POSTGRES_PORT" postgres "$POSTGRES_URL" && return 0
	postgres_install
	mkdir -p "$POSTGRES_DIR" "$POSTGRES_MOUNT"
	postgres_init
	postgres_write_config
	postgres_clear_lock
	say "postgres: starting PostgreSQL $("$POSTGRES_BIN/postgres" --version | sed 's/.*) //') (log: $POSTGRES_LOG)"
	POSTGRES_STARTED_US=$(now_us)
	launch "$POSTGRES_PIDFILE" "$POSTGRES_LOG" "${AS_POSTGRES[@]}" "$POSTGRES_BIN/postgres" \
		-c "cluster_name=coffeebus:$POSTGRES_PORT" -D "$POSTGRES_MOUNT"
}

wait_postgres() {
	wait_ready postgres "$POSTGRES_READY_S" "$POSTGRES_STARTED_US" "$POSTGRES_LOG" "$POSTGRES_PIDFILE" \
		"$POSTGRES_MARKER" "$LOOPBACK:$POSTGRES_PORT" postgres "$POSTGRES_URL"
}

# SIGINT is PostgreSQL's fast shutdown: open transactions are rolled back, clients disconnected,
# a checkpoint written. SIGTERM (smart shutdown) would wait for FerretDB's idle pooled
# connections to close, which they do not.
stop_postgres() { stop_pidfile postgres "$POSTGRES_PIDFILE" "$POSTGRES_MARKER" INT; }

# ---------------------------------------------------------------------------------------------
# FerretDB v1 (PostgreSQL backend)

FERRETDB_DIR=$RUN_DIR/ferretdb
FERRETDB_PIDFILE=$FERRETDB_DIR/ferretdb.pid
FERRETDB_LOG=$FERRETDB_DIR/ferretdb.log
FERRETDB_BIN=$COFFEEBUS_HOME/ferretdb/$FERRETDB_VERSION/ferretdb

# ferretdb_build: compile FerretDB from its module on the Go module proxy, once per version.
# `go install …@version` builds a binary that panics at start, because build/version/version.txt
# is git-ignored upstream and so missing from the module zip: write it, then build.
ferretdb_build() {
	[[ -x $FERRETDB_BIN ]] && return 0
	command -v go >/dev/null || die "ferretdb: needs Go >= 1.24 on PATH to build FerretDB $FERRETDB_VERSION"
	local base=$COFFEEBUS_HOME/ferretdb log info src commit
	log=$base/build.log
	src=$base/src-$FERRETDB_VERSION
	mkdir -p "$base"
	say "ferretdb: building FerretDB $FERRETDB_VERSION from the Go module proxy (log: $log; about 2-3 min the first time)"
	info=$(cd "$base" && GOTOOLCHAIN=local go mod download -json "$FERRETDB_MODULE@$FERRETDB_VERSION" 2>"$log") ||
		fail_service ferretdb "go mod download $FERRETDB_MODULE@$FERRETDB_VERSION failed" "$log"
	local -a fields
	mapfile -t fields < <("$PYTHON" -c 'import json, sys
d = json.load(sys.stdin)
print(d["Dir"]); print(d.get("Origin", {}).get("Hash", ""))' <<<"$info")
	commit=${fields[1]:-}
	rm -rf "$src"
	cp -R "${fields[0]}" "$src"
	chmod -R u+w "$src" # the module cache is read-only
	printf '%s\n' "$FERRETDB_VERSION" >"$src/build/version/version.txt"
	[[ -n $commit ]] && printf '%s\n' "$commit" >"$src/build/version/commit.txt"
	printf 'coffeebus-services\n' >"$src/build/version/package.txt"
	(cd "$src" && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -o "$FERRETDB_BIN.tmp" ./cmd/ferretdb) >>"$log" 2>&1 ||
		fail_service ferretdb "go build of FerretDB $FERRETDB_VERSION failed" "$log"
	mv -f "$FERRETDB_BIN.tmp" "$FERRETDB_BIN"
	rm -rf "$src"
}

# start_ferretdb: launch FerretDB on this script's PostgreSQL, which must already answer
# (cmd_up waits for it first). A running FerretDB is restarted if it uses anything else
# (SQLite, as services.sh used to start it, or another cluster), or if its PostgreSQL was just
# started again: its pooled connections to the old server would each fail their next command
# ("terminating connection due to administrator command", SQLSTATE 57P01, as an InternalError).
start_ferretdb() {
	local pid
	FERRETDB_STARTED_US=0
	clear_stale ferretdb "$FERRETDB_PIDFILE" "$FERRETDB_BIN"
	pid=$(pid_of "$FERRETDB_PIDFILE" "$FERRETDB_BIN")
	if [[ -n $pid ]]; then
		if ! tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "--postgresql-url=$POSTGRES_URL "; then
			say "ferretdb: the running FerretDB (pid $pid) does not use $LOOPBACK:$POSTGRES_PORT; restarting it"
		elif ((POSTGRES_STARTED_US)); then
			say "ferretdb: restarting it (pid $pid): its PostgreSQL was started again, its pooled connections are dead"
		else
			return 0
		fi
		stop_pidfile ferretdb "$FERRETDB_PIDFILE" "$FERRETDB_BIN"
	fi
	reuse_foreign ferretdb "$LOOPBACK:$FERRETDB_PORT" mongo "mongodb://$LOOPBACK:$FERRETDB_PORT" && return 0
	ferretdb_build
	mkdir -p "$FERRETDB_DIR/state"
	say "ferretdb: starting FerretDB $FERRETDB_VERSION on PostgreSQL $LOOPBACK:$POSTGRES_PORT (log: $FERRETDB_LOG)"
	FERRETDB_STARTED_US=$(now_us)
	# --debug-addr=- : no HTTP debug listener (8088 is free for others); the wire probe is the
	# health check. --state-dir: FerretDB keeps state.json there, by default in the cwd.
	launch "$FERRETDB_PIDFILE" "$FERRETDB_LOG" "$FERRETDB_BIN" --handler=postgresql \
		--postgresql-url="$POSTGRES_URL" \
		--state-dir="$FERRETDB_DIR/state" \
		--listen-addr="$LOOPBACK:$FERRETDB_PORT" --telemetry=disable --debug-addr=- \
		--log-format=text --log-level=INFO
}

wait_ferretdb() {
	wait_ready ferretdb "$FERRETDB_READY_S" "$FERRETDB_STARTED_US" "$FERRETDB_LOG" "$FERRETDB_PIDFILE" \
		"$FERRETDB_BIN" "$LOOPBACK:$FERRETDB_PORT" mongo "mongodb://$LOOPBACK:$FERRETDB_PORT"
}

# ---------------------------------------------------------------------------------------------
# External servers (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL, MONGO_URL)

external_var() {
	case $1 in
	kafka) printf 'KAFKA_BOOTSTRAP_SERVERS' ;;
	redis) printf 'REDIS_URL' ;;
	ferretdb | postgres) printf 'MONGO_URL' ;; # PostgreSQL only serves a FerretDB of ours
	esac
}

is_external() {
	local var
	var=$(external_var "$1")
	[[ -n ${!var:-} ]]
}

probe_kind() {
	case $1 in
	kafka) printf 'kafka' ;;
	redis) printf 'redis' ;;
	ferretdb) printf 'mongo' ;;
	esac
}

check_external() {
	local name=$1 var value start answer
	var=$(external_var "$name")
	value=${!var}
	if [[ $name == postgres ]]; then
		say "postgres: not needed, $var=$value names the MongoDB server"
		return 0
	fi
	start=$(now_us)
	until answer=$(probe "$(probe_kind "$name")" "$value"); do
		if (($(now_us) - start > EXTERNAL_READY_S * 1000000)); then
			die "$name: the server named by $var=$value did not answer within ${EXTERNAL_READY_S}s ($answer); unset $var to have services.sh start a local one"
		fi
		sleep 0.25
	done
	say "$name: using the existing server at $var=$value ($answer)"
}

# ---------------------------------------------------------------------------------------------
# Commands

# In the order they start: a service after the one it needs.
ALL_SERVICES=(kafka redis postgres ferretdb)

# select_services NAME...: normalise the names given on the command line into SELECTED, in
# ALL_SERVICES order; ferretdb brings postgres, the backend it cannot run without.
select_services() {
	local name wanted=" "
	(($# > 0)) || set -- "${ALL_SERVICES[@]}"
	for name in "$@"; do
		case $name in
		kafka | redis | postgres) wanted+="$name " ;;
		postgresql | pg) wanted+="postgres " ;;
		ferretdb | mongo | mongodb) wanted+="postgres ferretdb " ;;
		*) die "unknown service '$name' (known: ${ALL_SERVICES[*]})" ;;
		esac
	done
	SELECTED=()
	for name in "${ALL_SERVICES[@]}"; do
		[[ $wanted == *" $name "* ]] && SELECTED+=("$name")
	done
	return 0
}

# lock: serialise up/down/reset across shells and clones sharing COFFEEBUS_HOME. The lock is
# held on fd 9 until this script exits; every process that outlives it closes fd 9.
lock() {
	mkdir -p "$COFFEEBUS_HOME" "$RUN_DIR"
	exec 9>"$COFFEEBUS_HOME/services.lock"
	flock -w 900 9 || die "another services.sh holds $COFFEEBUS_HOME/services.lock"
}

# ensure_browser: Debian's chromium, which the web demo's Playwright tests launch by path
# (a browser download, `playwright install`, is never used). A no-op once installed.
ensure_browser() {
	command -v chromium >/dev/null || apt_install chromium
}

cmd_browser() {
	lock
	ensure_browser
	say "browser: $(command -v chromium) ($(chromium --version 2>/dev/null || echo 'version unknown'))"
}

cmd_up() {
	# `up` with no service named is what `make test` runs: it also brings the browser.
	local start name with_browser=0
	(($# > 0)) || with_browser=1
	select_services "$@"
	lock
	start=$(now_us)
	command -v "$PYTHON" >/dev/null || apt_install python3
	if ((with_browser)); then ensure_browser; fi
	# Install and build first (no-ops once cached), then launch everything, then wait: the
	# JVM's start overlaps with the others, and each "ready in" counts from its own launch.
	for name in "${SELECTED[@]}"; do
		is_external "$name" && continue
		case $name in
		kafka) kafka_libs ;;
		redis) command -v redis-server >/dev/null || apt_install redis-server ;;
		postgres) postgres_install ;;
		ferretdb) ferretdb_build ;;
		esac
	done
	# FerretDB is launched only once its PostgreSQL answers (SELECTED has postgres before it).
	local postgres_waited=0
	for name in "${SELECTED[@]}"; do
		is_external "$name" && continue
		case $name in
		kafka) start_kafka ;;
		redis) start_redis ;;
		postgres) start_postgres ;;
		ferretdb)
			wait_postgres
			postgres_waited=1
			start_ferretdb
			;;
		esac
	done
	# Wait for the quick starters first, so that each "ready in" is its own start-up time.
	for name in redis postgres ferretdb kafka; do
		[[ " ${SELECTED[*]} " == *" $name "* ]] || continue
		if is_external "$name"; then
			check_external "$name"
			continue
		fi
		case $name in
		kafka) wait_kafka ;;
		redis) wait_redis ;;
		postgres) ((postgres_waited)) || wait_postgres ;;
		ferretdb) wait_ferretdb ;;
		esac
	done
	say "services: ${SELECTED[*]} ready in $(seconds_since "$start")"
}

cmd_down() {
	select_services "$@"
	lock
	local i name
	# In reverse: FerretDB before its PostgreSQL.
	for ((i = ${#SELECTED[@]} - 1; i >= 0; i--)); do
		name=${SELECTED[i]}
		case $name in
		kafka)
			local id
			for ((id = 1; id <= KAFKA_NODES; id++)); do stop_kafka_node "$id"; done
			;;
		redis)
			if ((REDIS_NODES > 1)); then stop_redis_cluster; else stop_pidfile redis "$REDIS_PIDFILE" "$REDIS_MARKER"; fi
			;;
		postgres) stop_postgres ;;
		ferretdb) stop_pidfile ferretdb "$FERRETDB_PIDFILE" "$FERRETDB_BIN" ;;
		esac
	done
}

# report_health LABEL KIND PIDFILE MARKER ADDRESS TARGET LOG: one status line; returns 1 if
# the service does not answer its probe.
report_health() {
	local label=$1 kind=$2 pidfile=$3 marker=$4 address=$5 target=$6 log=$7 pid answer
	pid=$(pid_of "$pidfile" "$marker")
	if answer=$(probe "$kind" "$target"); then
		if [[ -n $pid ]]; then
			say "$label: healthy on $address, pid $pid ($answer); log: $log"
		else
			say "$label: healthy on $address, not started by services.sh ($answer)"
		fi
		return 0
	fi
	if [[ -n $pid ]]; then
		say "$label: running (pid $pid) but NOT healthy on $address ($answer); log: $log"
	else
		say "$label: not running"
	fi
	return 1
}

cmd_status() {
	select_services "$@"
	local name id node_dir address label answer healthy=1
	for name in "${SELECTED[@]}"; do
		if is_external "$name"; then
			local var
			var=$(external_var "$name")
			if [[ $name == postgres ]]; then
				say "postgres: not needed, external $var=${!var}"
			elif answer=$(probe "$(probe_kind "$name")" "${!var}"); then
				say "$name: external $var=${!var}, healthy ($answer)"
			else
				say "$name: external $var=${!var}, NOT answering ($answer)"
				healthy=0
			fi
			continue
		fi
		case $name in
		kafka)
			kafka_check_nodes
			for ((id = 1; id <= KAFKA_NODES; id++)); do
				kafka_ports "$id"
				node_dir=$KAFKA_RUN_DIR/node-$id address=$LOOPBACK:$KAFKA_NODE_PORT label=kafka
				((KAFKA_NODES == 1)) || label=kafka-$id
				report_health "$label" kafka \
					"$node_dir/kafka.pid" "$node_dir/server.properties" "$address" "$address" \
					"$node_dir/kafka.log" || healthy=0
			done
			;;
		redis)
			if ((REDIS_NODES > 1)); then
				redis_check_nodes
				for ((id = 1; id <= REDIS_NODES; id++)); do
					address=$LOOPBACK:$(redis_node_port "$id")
					report_health "redis-$id" redis "$(redis_node_dir "$id")/redis.pid" "$address" \
						"$address" "redis://$address/0" "$(redis_node_dir "$id")/redis.log" || healthy=0
				done
				if answer=$(probe redis-cluster "$(redis_cluster_nodes)"); then
					say "redis: cluster healthy ($answer)"
				else
					say "redis: cluster NOT healthy ($answer)"
					healthy=0
				fi
				continue
			fi
			address=$LOOPBACK:$REDIS_PORT
			report_health redis redis "$REDIS_PIDFILE" "$REDIS_MARKER" "$address" \
				"redis://$address/0" "$REDIS_LOG" || healthy=0
			;;
		postgres)
			address=$LOOPBACK:$POSTGRES_PORT
			report_health postgres postgres "$POSTGRES_PIDFILE" "$POSTGRES_MARKER" "$address" \
				"$POSTGRES_URL" "$POSTGRES_LOG" || healthy=0
			;;
		ferretdb)
			address=$LOOPBACK:$FERRETDB_PORT
			report_health ferretdb mongo "$FERRETDB_PIDFILE" "$FERRETDB_BIN" "$address" \
				"mongodb://$address" "$FERRETDB_LOG" || healthy=0
			;;
		esac
	done
	((healthy))
}

log_path() {
	case $1 in
	kafka) printf '%s' "$KAFKA_RUN_DIR/node-1/kafka.log" ;;
	redis) if ((REDIS_NODES > 1)); then printf '%s' "$(redis_node_dir 1)/redis.log"; else printf '%s' "$REDIS_LOG"; fi ;;
	postgres) printf '%s' "$POSTGRES_LOG" ;;
	ferretdb) printf '%s' "$FERRETDB_LOG" ;;
	esac
}

cmd_logs() {
	(($# >= 1)) || die "usage: services.sh logs SERVICE [LINES]"
	select_services "$1"
	# The last selected: ferretdb selects postgres too.
	local name=${SELECTED[-1]} path lines=${2:-50}
	path=$(log_path "$name")
	say "log: $path"
	[[ -e $path ]] || die "$name: no log yet at $path"
	tail -n "$lines" "$path"
}

cmd_reset() {
	cmd_down
	say "services: deleting run state in $RUN_DIR"
	rm -rf "$RUN_DIR"
}

usage() {
	# The header comment, up to the first line that is not a comment.
	sed -n '2,/^[^#]/{/^#/p}' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

main() {
	local command=${1:-}
	(($# > 0)) && shift
	case $command in
	up) cmd_up "$@" ;;
	down) cmd_down "$@" ;;
	status) cmd_status "$@" ;;
	logs) cmd_logs "$@" ;;
	reset) cmd_reset ;;
	browser) cmd_browser ;;
	-h | --help | help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
