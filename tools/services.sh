#!/usr/bin/env bash
# tools/services.sh — real backing services for the integration tests.
#
#   tools/services.sh start    install what is missing, start all four, wait until ready
#   tools/services.sh stop     stop all four
#   tools/services.sh start|stop|restart NAME...   only those (postgres mosquitto kafka influxdb)
#   tools/services.sh reload mosquitto   re-read its ACL, certificates and CRL (SIGHUP)
#   tools/services.sh status   one line per service (exit 0 only if all are running)
#   tools/services.sh env      `export NAME=value` lines for the tests (eval them)
#   tools/services.sh smoke    exercise each service with a real client
#
# Services (all on 127.0.0.1 only, non-default ports, data under ONE work folder
# ${IOT_SERVICES_DIR:-/tmp/iot-platform-services}):
#   postgres   PostgreSQL 15 (Debian)             127.0.0.1:25432
#   mosquitto  Mosquitto 2.0 (Debian)             127.0.0.1:21883, mutual TLS :28883 (test CA in pki/)
#   kafka      Apache Kafka (KRaft, Maven jars)   127.0.0.1:29092 (controller :29093)
#   influxdb   InfluxDB OSS 1.8 (built with Go)   127.0.0.1:28086 (rpc :28088)
#
# Works unattended (CI=true, no stdin) on a fresh Debian 12 as root: everything
# comes from Debian apt, Maven Central or the Go module proxy, nothing else.
# Build products are cached outside the work folder (~/.m2, Go module cache,
# ~/.cache/iot-platform) so wiping the work folder or a second `start` is fast.
set -euo pipefail

WORK="${IOT_SERVICES_DIR:-/tmp/iot-platform-services}"
CACHE="${IOT_SERVICES_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/iot-platform}"
HOST=127.0.0.1

# Below the kernel's ephemeral range (ip_local_port_range, 32768-60999 by default): a port in
# it can be taken as the source port of any outgoing connection while a service restarts.
PG_PORT=25432
MQTT_PORT=21883
MQTT_TLS_PORT=28883
KAFKA_PORT=29092
KAFKA_CONTROLLER_PORT=29093
INFLUX_PORT=28086
INFLUX_RPC_PORT=28088

KAFKA_VERSION=3.8.1      # Scala 2.13 build; KRaft combined mode is production-ready here
SLF4J_VERSION=1.7.36     # matches the slf4j-api Kafka 3.8 depends on
INFLUX_VERSION=1.8.10    # last 1.x with the v2-compat API (/api/v2/write, Flux /api/v2/query)

INFLUX_TOKEN="iot:iot"   # auth is disabled, so any token works; user:password form stays valid if enabled
INFLUX_ORG="-"           # 1.8 ignores the org

# Deadlines (seconds) for readiness polling.
PG_TIMEOUT=60
MQTT_TIMEOUT=30
KAFKA_TIMEOUT=120
INFLUX_TIMEOUT=60

SERVICES=(postgres mosquitto kafka influxdb)

# Go (/usr/local/go) and mosquitto (/usr/sbin) may be missing from a non-login PATH (CI).
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

# Log lines carry seconds since the script started, so CI logs show what took long.
log() { printf '[services +%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { printf '[services +%ss] ERROR: %s\n' "$SECONDS" "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
is_root() { [[ $EUID -eq 0 ]]; }

# ---------------------------------------------------------------------------
# generic helpers
# ---------------------------------------------------------------------------

# TCP connect probe with bash's /dev/tcp: needs no extra tool.
port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# pid_alive PIDFILE PATTERN: the pid in PIDFILE is alive AND its command line
# matches PATTERN (guards against a recycled pid after a reboot/crash).
pid_alive() {
	local pidfile=$1 pattern=$2 pid
	[[ -s $pidfile ]] || return 1
	pid=$(head -n1 "$pidfile" | tr -dc '0-9')
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$pattern"
}

pid_of() { head -n1 "$1" | tr -dc '0-9'; }

# Print the tail of a log, for failure messages.
show_log() {
	local file=$1
	if [[ -f $file ]]; then
		printf -- '----- last lines of %s -----\n' "$file" >&2
		tail -n 40 "$file" >&2 || true
		printf -- '-----\n' >&2
	else
		printf -- '(no log file %s)\n' "$file" >&2
	fi
}

# wait_ready NAME TIMEOUT LOGFILE PIDFILE PATTERN -- CMD...
# Polls CMD every 0.5s until it succeeds; fails early if the process died,
# or at the deadline, naming the service and showing its log.
wait_ready() {
	local name=$1 timeout=$2 logfile=$3 pidfile=$4 pattern=$5
	shift 6
	local deadline=$((SECONDS + timeout))
	while ! "$@" >/dev/null 2>&1; do
		if ! pid_alive "$pidfile" "$pattern"; then
			log "FAILED: $name exited during startup"
			show_log "$logfile"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "FAILED: $name not ready after ${timeout}s"
			show_log "$logfile"
			return 1
		fi
		sleep 0.5
	done
	log "$name ready on $HOST:$(service_port "$name")"
}

# Refuse to start when some unrelated process already holds our port.
assert_port_free() {
	local name=$1 port=$2
	if port_open "$port"; then
		die "$name: port $HOST:$port is already in use by a process this script did not start"
	fi
}

# stop_pid NAME PIDFILE PATTERN TIMEOUT: SIGTERM, wait, SIGKILL as last resort.
stop_pid() {
	local name=$1 pidfile=$2 pattern=$3 timeout=$4 pid deadline
	if ! pid_alive "$pidfile" "$pattern"; then
		rm -f "$pidfile"
		log "$name already stopped"
		return 0
	fi
	pid=$(pid_of "$pidfile")
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + timeout))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "$name (pid $pid) ignored SIGTERM for ${timeout}s, sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
	rm -f "$pidfile"
	log "$name stopped"
}

service_port() {
	case $1 in
	postgres) echo "$PG_PORT" ;;
	mosquitto) echo "$MQTT_PORT" ;;
	kafka) echo "$KAFKA_PORT" ;;
	influxdb) echo "$INFLUX_PORT" ;;
	esac
}

# Serialise start/stop so two concurrent callers don't race on the same dirs.
take_lock() {
	mkdir -p "$WORK"
	exec 9>"$WORK/.lock"
	flock -w 900 9 || die "could not lock $WORK/.lock"
}

# ---------------------------------------------------------------------------
# packages (Debian apt only; apt-get update at most once per run)
# ---------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
	local sudo=()
	is_root || sudo=(sudo -n)
	if ((APT_UPDATED == 0)); then
		log "apt-get update"
		"${sudo[@]}" apt-get -q update -o DPkg::Lock::Timeout=300 >/dev/null
		APT_UPDATED=1
	fi
	log "apt-get install $*"
	# confold/confdef: never stop at a config-file prompt; lock timeout: wait
	# for a concurrent apt instead of failing.
	"${sudo[@]}" apt-get -q install -y --no-install-recommends \
		-o DPkg::Lock::Timeout=300 \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"$@" </dev/null >/dev/null
}

# Newest installed server version's bin dir (empty if none).
pg_bindir() {
	local dirs=(/usr/lib/postgresql/*/bin)
	[[ -d ${dirs[0]} ]] || return 0
	printf '%s\n' "${dirs[@]}" | sort -V | tail -n1
}

ensure_packages() {
	local missing=()
	[[ -n $(pg_bindir) ]] || missing+=(postgresql)
	have psql || missing+=(postgresql-client)
	have mosquitto || missing+=(mosquitto)
	have mosquitto_sub || missing+=(mosquitto-clients)
	have kcat || missing+=(kcat)
	have coap-client-notls || missing+=(libcoap3-bin) # libcoap's client (coap-client-notls): tests talk CoAP as devices do
	have curl || missing+=(curl ca-certificates)
	have openssl || missing+=(openssl)
	have gcc || missing+=(gcc libc6-dev)
	[[ -f /usr/include/mosquitto_broker.h ]] || missing+=(mosquitto-dev libmosquitto-dev)
	have java || missing+=(openjdk-17-jre-headless)
	# build tools only matter while their product is not cached yet
	[[ -s $KAFKA_CP_FILE ]] || have mvn || missing+=(maven)
	[[ -x $INFLUX_BIN ]] || have go || missing+=(golang-go)
	have flock || missing+=(util-linux)
	if ((${#missing[@]})); then
		apt_install "${missing[@]}"
	fi
}

# ---------------------------------------------------------------------------
# PostgreSQL 15 — own data dir, run as the `postgres` OS user (it refuses root)
# ---------------------------------------------------------------------------

PG_DIR="$WORK/postgres"
PG_DATA="$PG_DIR/data"
PG_RUN="$PG_DIR/run" # unix socket dir; keeps clear of Debian's /var/run/postgresql
PG_LOG="$PG_DIR/postgres.log"

as_pg() {
	if is_root; then
		(cd "$PG_DIR" && runuser -u postgres -- "$@")
	else
		(cd "$PG_DIR" && "$@")
	fi
}

postgres_running() {
	pid_alive "$PG_DATA/postmaster.pid" postgres && port_open "$PG_PORT"
}

postgres_init_cluster() {
	local bin=$1
	mkdir -p "$PG_DIR" "$PG_RUN"
	if is_root; then
		chown postgres:postgres "$PG_DIR" "$PG_RUN"
		runuser -u postgres -- test -w "$PG_DIR" ||
			die "postgres: OS user 'postgres' cannot write $PG_DIR; choose an IOT_SERVICES_DIR it can reach (e.g. under /tmp)"
	fi
	chmod 700 "$PG_RUN"
	[[ -s $PG_DATA/PG_VERSION ]] && return 0
	log "postgres: initdb $PG_DATA"
	# Local socket: trust (only root/postgres can enter $PG_RUN); TCP: password.
	as_pg "$bin/initdb" -D "$PG_DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
		--auth-local=trust --auth-host=scram-sha-256 --no-instructions >"$PG_DIR/initdb.log" 2>&1 ||
		{ show_log "$PG_DIR/initdb.log"; die "postgres: initdb failed"; }
	cat >>"$PG_DATA/postgresql.conf" <<EOF

# --- tools/services.sh ---
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_RUN'
max_connections = 200
# Throwaway test data: trade crash durability for speed.
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
}

postgres_start() {
	if postgres_running; then
		log "postgres already running (pid $(pid_of "$PG_DATA/postmaster.pid"))"
		return 0
	fi
	assert_port_free postgres "$PG_PORT"
	local bin
	bin=$(pg_bindir)
	postgres_init_cluster "$bin"
	# A crash can leave a stale postmaster.pid; postgres itself copes with it.
	as_pg "$bin/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "-p $PG_PORT" -W start </dev/null >/dev/null 9>&-
}

postgres_wait() {
	local bin
	bin=$(pg_bindir)
	wait_ready postgres "$PG_TIMEOUT" "$PG_LOG" "$PG_DATA/postmaster.pid" postgres -- \
		"$bin/pg_isready" -q -h "$HOST" -p "$PG_PORT"
}

# Idempotent: role iot/iot (superuser so tests can create extensions/schemas)
# and databases iot + iot_test.
postgres_provision() {
	local psql=(psql -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN" -p "$PG_PORT" -U postgres -d postgres)
	"${psql[@]}" <<'SQL' >/dev/null || { show_log "$PG_LOG"; die "postgres: provisioning failed"; }
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'iot') THEN
    CREATE ROLE iot LOGIN SUPERUSER PASSWORD 'iot';
  END IF;
END$$;
SELECT 'CREATE DATABASE iot OWNER iot' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'iot')\gexec
SELECT 'CREATE DATABASE iot_test OWNER iot' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'iot_test')\gexec
SQL
}

postgres_stop() {
	if ! pid_alive "$PG_DATA/postmaster.pid" postgres; then
		log "postgres already stopped"
		return 0
	fi
	as_pg "$(pg_bindir)/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
	log "postgres stopped"
}

# ---------------------------------------------------------------------------
# Mosquitto 2.0 — own config file, daemonised with a pid file
# ---------------------------------------------------------------------------

MQTT_DIR="$WORK/mosquitto"
MQTT_CONF="$MQTT_DIR/mosquitto.conf"
MQTT_PID="$MQTT_DIR/mosquitto.pid"
MQTT_LOG="$MQTT_DIR/mosquitto.log"

mosquitto_running() { pid_alive "$MQTT_PID" mosquitto && port_open "$MQTT_PORT"; }

# A device CA for the TLS listener, made with openssl once per work folder: a root, an
# issuing CA (what a platform under test imports with `iot-platform ca import`), the broker's
# server certificate, the platform's service certificate (CN iot-platform) and an empty CRL.
# The platform under test writes its own CRL over crl.pem; `reload mosquitto` re-reads it.
PKI_DIR="$WORK/pki"

pki_issue() { # NAME SUBJECT EXTENSIONS DAYS: a P-256 key and a certificate from the issuing CA
	local name=$1 subject=$2 extensions=$3 days=$4
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI_DIR/$name.key" \
		-out "$PKI_DIR/$name.csr" -subj "$subject" 2>/dev/null
	openssl x509 -req -in "$PKI_DIR/$name.csr" -CA "$PKI_DIR/ca.crt" -CAkey "$PKI_DIR/ca.key" \
		-CAcreateserial -out "$PKI_DIR/$name.crt" -days "$days" -extfile <(printf '%b' "$extensions") 2>/dev/null
}

pki_ensure() {
	[[ -s $PKI_DIR/crl.pem && -s $PKI_DIR/platform.crt ]] && return 0
	log "making the test device CA under $PKI_DIR"
	rm -rf "$PKI_DIR"
	mkdir -p "$PKI_DIR"
	openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
		-keyout "$PKI_DIR/root.key" -out "$PKI_DIR/root.crt" -subj "/O=iot-platform tests/CN=test root CA" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI_DIR/ca.key" \
		-out "$PKI_DIR/ca.csr" -subj "/O=iot-platform tests/CN=test issuing CA" 2>/dev/null
	openssl x509 -req -in "$PKI_DIR/ca.csr" -CA "$PKI_DIR/root.crt" -CAkey "$PKI_DIR/root.key" -CAcreateserial \
		-out "$PKI_DIR/ca.crt" -days 1825 -extfile <(printf '%s\n' "basicConstraints=critical,CA:TRUE,pathlen:0" \
		"keyUsage=critical,keyCertSign,cRLSign" "subjectKeyIdentifier=hash" "authorityKeyIdentifier=keyid") 2>/dev/null
	cat "$PKI_DIR/ca.crt" "$PKI_DIR/root.crt" >"$PKI_DIR/chain.pem"
	pki_issue broker "/CN=$HOST" "subjectAltName=IP:$HOST,DNS:localhost\nextendedKeyUsage=serverAuth\n" 825
	pki_issue platform "/CN=iot-platform" "extendedKeyUsage=clientAuth\n" 825
	: >"$PKI_DIR/index.txt"
	echo 01 >"$PKI_DIR/crlnumber"
	printf '%s\n' "[ca]" "default_ca = test" "[test]" "database = $PKI_DIR/index.txt" \
		"crlnumber = $PKI_DIR/crlnumber" "default_md = sha256" "default_crl_days = 30" >"$PKI_DIR/ca.cnf"
	openssl ca -gencrl -keyfile "$PKI_DIR/ca.key" -cert "$PKI_DIR/ca.crt" -out "$PKI_DIR/crl.pem" \
		-config "$PKI_DIR/ca.cnf" 2>/dev/null || die "could not make the test CRL"
	chmod 600 "$PKI_DIR"/*.key
}

# Global (non-listener) settings.
mosquitto_conf_global() {
	cat <<EOF
# generated by tools/services.sh — do not edit, it is rewritten on every start
pid_file $MQTT_PID
# Sessions, subscriptions and queued QoS 1 messages survive a broker restart (written at a
# clean stop and every autosave_interval seconds): the platform's persistent session gets
# what was published while the broker was down for a restart.
persistence true
persistence_location $MQTT_DIR/
autosave_interval 10
log_dest file $MQTT_LOG
log_type error
log_type warning
log_type notice
log_type information
connection_messages true
# Stay the invoking user: as root mosquitto would otherwise drop to user
# 'mosquitto', which cannot write this folder or read keys generated here.
user $(id -un)
# Settings such as allow_anonymous apply to all listeners below.
per_listener_settings false
# Stamps each published message with its publisher's identity (user property iot-identity).
plugin $MQTT_PLUGIN
allow_anonymous true
EOF
}

# Global settings for throughput, which the ingestion benchmark and the platform's ingestion
# subscriber depend on. Mosquitto's defaults suit small fleets: a subscriber more than 1,000
# messages behind loses QoS 1 messages (on loopback a bare aiomqtt subscriber lost 23-53% of
# a 50,000-message QoS 1 burst; none with these), and its window of 20 caps one subscriber
# at 20 / round-trip time.
mosquitto_conf_throughput() {
	cat <<'EOF'

# --- throughput (all four are global and re-read on SIGHUP) ---
# Disable Nagle's algorithm on client sockets. MQTT packets are tiny (a PUBACK is 4 bytes):
# with Nagle the kernel holds a small packet back until the previous one is acknowledged,
# while the peer delays its TCP ACK (up to 40 ms on Linux), so a QoS 1 stream stalls every
# round trip. Production: on; it costs a few more TCP packets, never latency.
set_tcp_nodelay true
# Outgoing QoS 1/2 messages in flight per client before the broker waits for PUBACKs
# (default 20). One subscriber's ceiling is window / round-trip time: 20 in flight at 50 ms
# is 400 msgs/s. Production: size it to the ingestion consumer's rate x RTT (1000 covers
# 20,000 msgs/s at 50 ms); keep it bounded rather than 0 (unlimited), which would push a
# slow client's whole backlog into its socket at once; 1 means strict ordering, at a crawl.
max_inflight_messages 1000
# QoS 1/2 messages queued per client beyond the in-flight window (while it is slow, or
# offline with a persistent session). Past this limit Mosquitto DROPS QoS 1 messages
# silently; the default 1000 is well under a second of a busy fleet. 100000 lets the
# ingestion subscriber fall ~10 s behind at 10,000 msgs/s without loss (~20 MB for that
# client at 200-byte messages). Production: the longest consumer stall to ride out x the
# message rate; watch broker memory ($SYS/broker/heap/current), memory_limit caps it.
max_queued_messages 100000
# The same queue limit in bytes; 0 = none, so max_queued_messages alone decides. 0 is the
# default: stated so that nobody adds a byte cap without thinking about the count above.
max_queued_bytes 0
EOF
}

# Who may use which topics (global, as per_listener_settings is false). Anonymous clients are
# those of the plain listener (tests only) and may use every topic. On the TLS listener every
# client is named by its certificate's CN: a device only its own topics, the platform's
# service identity all of them.
mosquitto_conf_acl() {
	# acl-too-wide is deliberately over-permitted: the tests use it to show that the platform
	# refuses a reading for another device even when the broker's ACL lets it through.
	printf '%s\n' "topic readwrite #" "" "user iot-platform" "topic readwrite #" "" \
		"user acl-too-wide" "topic readwrite #" "" \
		"pattern readwrite devices/%u/#" "pattern readwrite sensors/%u/#" >"$MQTT_DIR/acl"
	cat <<EOF

acl_file $MQTT_DIR/acl
EOF
}

# Mutual TLS for devices: a certificate from the test CA is required, its CN is the MQTT
# username (so the ACL above confines it), and the CRL is enforced (re-read on SIGHUP).
mosquitto_conf_listener_tls() {
	cat <<EOF

listener $MQTT_TLS_PORT $HOST
protocol mqtt
cafile $PKI_DIR/chain.pem
certfile $PKI_DIR/broker.crt
keyfile $PKI_DIR/broker.key
require_certificate true
use_identity_as_username true
crlfile $PKI_DIR/crl.pem
EOF
}

# Plain MQTT listener, loopback only.
mosquitto_conf_listener_plain() {
	cat <<EOF

listener $MQTT_PORT $HOST
protocol mqtt
EOF
}

# The config is the global parts followed by one block per listener; further
# listeners (e.g. TLS) are added as another mosquitto_conf_listener_* function
# and appended in this list.
mosquitto_write_config() {
	{
		mosquitto_conf_global
		mosquitto_conf_throughput
		mosquitto_conf_acl
		mosquitto_conf_listener_plain
		mosquitto_conf_listener_tls
	} >"$MQTT_CONF"
}

# The identity plugin (tools/mosquitto/identity_plugin.c), rebuilt when its source changes.
MQTT_PLUGIN="$MQTT_DIR/identity_plugin.so"
mosquitto_build_plugin() {
	local source
	source="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/mosquitto/identity_plugin.c"
	[[ -s $MQTT_PLUGIN && $MQTT_PLUGIN -nt $source ]] && return 0
	gcc -Wall -O2 -fPIC -shared -o "$MQTT_PLUGIN" "$source" || die "could not build the Mosquitto identity plugin"
}

mosquitto_start() {
	if mosquitto_running && port_open "$MQTT_TLS_PORT"; then
		log "mosquitto already running (pid $(pid_of "$MQTT_PID"))"
		return 0
	fi
	if mosquitto_running; then # started by an older version of this script, without TLS
		log "mosquitto runs without its TLS listener: restarting it"
		mosquitto_stop
	fi
	assert_port_free mosquitto "$MQTT_PORT"
	assert_port_free mosquitto "$MQTT_TLS_PORT"
	mkdir -p "$MQTT_DIR"
	pki_ensure
	mosquitto_build_plugin
	rm -f "$MQTT_PID"
	mosquitto_write_config
	local bin
	bin=$(command -v mosquitto)
	"$bin" -c "$MQTT_CONF" -d </dev/null >>"$MQTT_LOG" 2>&1 9>&- ||
		{ show_log "$MQTT_LOG"; die "mosquitto failed to start"; }
}

# Ready = a client can connect and get its SUBACK (-E exits right after it).
mosquitto_probe() {
	mosquitto_sub -h "$HOST" -p "$MQTT_PORT" -t 'iot-platform/probe' -E -W 3 -i "probe-$$"
}

mosquitto_wait() {
	wait_ready mosquitto "$MQTT_TIMEOUT" "$MQTT_LOG" "$MQTT_PID" mosquitto -- mosquitto_probe
}

mosquitto_stop() { stop_pid mosquitto "$MQTT_PID" mosquitto 30; }

# ---------------------------------------------------------------------------
# Kafka — single KRaft node (broker+controller), jars from Maven Central
# ---------------------------------------------------------------------------

KAFKA_DIR="$WORK/kafka"
KAFKA_DATA="$KAFKA_DIR/data"
KAFKA_PID="$KAFKA_DIR/kafka.pid"
KAFKA_LOG="$KAFKA_DIR/kafka.log"
KAFKA_PROPS="$KAFKA_DIR/server.properties"
# The classpath points straight into ~/.m2, so nothing is copied and a wiped
# work folder costs only one offline-fast Maven run.
KAFKA_CP_FILE="$CACHE/kafka-$KAFKA_VERSION.classpath"

kafka_running() { pid_alive "$KAFKA_PID" kafka.Kafka && port_open "$KAFKA_PORT"; }

# Resolve kafka_2.13 and its runtime deps with Maven; cache the classpath.
kafka_resolve() {
	if [[ -s $KAFKA_CP_FILE ]]; then
		local jar ok=1
		while IFS= read -r jar; do [[ -f $jar ]] || { ok=0; break; }; done < <(tr ':' '\n' <"$KAFKA_CP_FILE")
		((ok)) && return 0
	fi
	local mvndir="$KAFKA_DIR/maven"
	mkdir -p "$mvndir" "$CACHE"
	cat >"$mvndir/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <!-- generated by tools/services.sh: only used to resolve the Kafka broker's jars -->
  <groupId>local.iot-platform</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>$KAFKA_VERSION</version>
    </dependency>
    <!-- the binary distribution ships this binding; without it the broker logs nothing -->
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>$SLF4J_VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
	log "kafka: resolving org.apache.kafka:kafka_2.13:$KAFKA_VERSION with Maven"
	(cd "$mvndir" && mvn -q -B -ntp dependency:build-classpath -DincludeScope=runtime \
		-Dmdep.outputFile="$KAFKA_CP_FILE.tmp" </dev/null >"$mvndir/mvn.log" 2>&1) ||
		{ show_log "$mvndir/mvn.log"; die "kafka: Maven could not resolve the broker jars"; }
	mv "$KAFKA_CP_FILE.tmp" "$KAFKA_CP_FILE"
}

kafka_write_config() {
	cat >"$KAFKA_PROPS" <<EOF
# generated by tools/services.sh — rewritten on every start
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
auto.create.topics.enable=true
# several partitions so tests can exercise keyed ordering / consumer groups
num.partitions=4
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
# fewer internal partitions than the default 50: the first consumer group
# otherwise waits for 50 partitions to be created
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
# single member groups should not wait 3s for a rebalance
group.initial.rebalance.delay.ms=0
log.retention.hours=24
EOF
	cat >"$KAFKA_DIR/log4j.properties" <<'EOF'
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.state.change.logger=WARN
EOF
}

# JVM flags: modest heap (the CI machine has 2 cores and is shared with the
# tests), G1 with short pauses, log4j 1.x config from the work folder.
kafka_jvm_args() {
	KAFKA_JVM=(java -Xms256m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20
		-Djava.awt.headless=true -Djava.net.preferIPv4Stack=true
		-Dlog4j.configuration="file:$KAFKA_DIR/log4j.properties"
		-Dkafka.logs.dir="$KAFKA_DIR/logs"
		-cp "$(cat "$KAFKA_CP_FILE")")
}

kafka_java() {
	kafka_jvm_args
	"${KAFKA_JVM[@]}" "$@"
}

kafka_format() {
	[[ -s $KAFKA_DATA/meta.properties ]] && return 0
	local cluster_id
	if [[ ! -s $KAFKA_DIR/cluster.id ]]; then
		kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1 >"$KAFKA_DIR/cluster.id"
	fi
	cluster_id=$(cat "$KAFKA_DIR/cluster.id")
	[[ -n $cluster_id ]] || die "kafka: could not generate a cluster id"
	log "kafka: formatting storage (cluster id $cluster_id)"
	kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_PROPS" --ignore-formatted \
		</dev/null >"$KAFKA_DIR/format.log" 2>&1 ||
		{ show_log "$KAFKA_DIR/format.log"; die "kafka: storage format failed"; }
}

kafka_start() {
	if kafka_running; then
		log "kafka already running (pid $(pid_of "$KAFKA_PID"))"
		return 0
	fi
	assert_port_free kafka "$KAFKA_PORT"
	assert_port_free kafka-controller "$KAFKA_CONTROLLER_PORT"
	mkdir -p "$KAFKA_DIR" "$KAFKA_DATA" "$KAFKA_DIR/logs"
	kafka_resolve
	kafka_write_config
	kafka_format
	# setsid: own session, so the broker outlives the caller's process group.
	# All fds redirected so a caller capturing our output does not hang, and
	# fd 9 (the start/stop lock) closed so the daemon does not hold the lock.
	kafka_jvm_args
	# shellcheck disable=SC2016 # $$ and $1 are for the inner shell
	setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$KAFKA_PID" \
		"${KAFKA_JVM[@]}" kafka.Kafka "$KAFKA_PROPS" \
		</dev/null >>"$KAFKA_LOG" 2>&1 9>&- &
	# wait until the pid file exists so wait_ready can watch the process
	local _
	for _ in $(seq 50); do [[ -s $KAFKA_PID ]] && break; sleep 0.1; done
}

# Ready = metadata request answered with our one broker.
kafka_probe() {
	kcat -L -b "$HOST:$KAFKA_PORT" -m 3 2>/dev/null | grep -q '1 brokers:'
}

kafka_wait() {
	wait_ready kafka "$KAFKA_TIMEOUT" "$KAFKA_LOG" "$KAFKA_PID" kafka.Kafka -- kafka_probe
}

kafka_stop() { stop_pid kafka "$KAFKA_PID" kafka.Kafka 60; }

# ---------------------------------------------------------------------------
# InfluxDB OSS 1.8.10 — built from the Go module proxy, binary cached
#
# Why 1.8 built from source: the tests use the Python influxdb-client, which
# needs /api/v2/write and Flux on /api/v2/query. Debian only has 1.6 (no v2
# API) and prebuilt release tarballs cannot be downloaded here. 1.8 is pure Go
# and `go install github.com/influxdata/influxdb/cmd/influxd@v1.8.10` builds
# as is (checked with Go 1.26; CGO is not needed). If that ever breaks with a
# newer Go, the fallback below retries with an older Go toolchain, which the
# go command fetches from the module proxy (GOTOOLCHAIN).
# v2-compat API in 1.8: org is ignored, bucket = "database/retention_policy",
# token "user:password" (anything while auth is disabled).
# ---------------------------------------------------------------------------

INFLUX_DIR="$WORK/influxdb"
INFLUX_CONF="$INFLUX_DIR/influxdb.conf"
INFLUX_PID="$INFLUX_DIR/influxd.pid"
INFLUX_LOG="$INFLUX_DIR/influxd.log"
INFLUX_BIN="$CACHE/bin/influxd-$INFLUX_VERSION"
INFLUX_FALLBACK_TOOLCHAIN=go1.21.13

influx_running() { pid_alive "$INFLUX_PID" influxd && port_open "$INFLUX_PORT"; }

influx_build() {
	[[ -x $INFLUX_BIN ]] && return 0
	local gobin
	mkdir -p "$CACHE/bin"
	gobin=$(mktemp -d "$CACHE/bin/build.XXXXXX")
	local ldflags="-s -w -X main.version=$INFLUX_VERSION -X main.commit=v$INFLUX_VERSION -X main.branch=1.8"
	local pkg="github.com/influxdata/influxdb/cmd/influxd@v$INFLUX_VERSION"
	log "influxdb: building influxd $INFLUX_VERSION with $(go version | cut -d' ' -f3) (cached afterwards)"
	# GOFLAGS reset: a -mod=... from the environment is rejected by `go install pkg@ver`.
	if ! CGO_ENABLED=0 GOBIN="$gobin" GOFLAGS=-buildvcs=false GOTOOLCHAIN=local \
		go install -ldflags "$ldflags" "$pkg"; then
		log "influxdb: build with the local Go failed; retrying with $INFLUX_FALLBACK_TOOLCHAIN from the module proxy"
		CGO_ENABLED=0 GOBIN="$gobin" GOFLAGS=-buildvcs=false GOTOOLCHAIN="$INFLUX_FALLBACK_TOOLCHAIN" \
			go install -ldflags "$ldflags" "$pkg" || { rm -rf "$gobin"; return 1; }
	fi
	mv "$gobin/influxd" "$INFLUX_BIN"
	rm -rf "$gobin"
}

influx_write_config() {
	cat >"$INFLUX_CONF" <<EOF
# generated by tools/services.sh — rewritten on every start
reporting-disabled = true
bind-address = "$HOST:$INFLUX_RPC_PORT"

[meta]
  dir = "$INFLUX_DIR/meta"

[data]
  dir = "$INFLUX_DIR/data"
  wal-dir = "$INFLUX_DIR/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[monitor]
  # no _internal database: less disk churn and log noise
  store-enabled = false

[http]
  enabled = true
  bind-address = "$HOST:$INFLUX_PORT"
  auth-enabled = false
  log-enabled = false
  flux-enabled = true
  unix-socket-enabled = false

[logging]
  level = "info"
EOF
}

influx_start() {
	if influx_running; then
		log "influxdb already running (pid $(pid_of "$INFLUX_PID"))"
		return 0
	fi
	assert_port_free influxdb "$INFLUX_PORT"
	assert_port_free influxdb-rpc "$INFLUX_RPC_PORT"
	[[ -x $INFLUX_BIN ]] || die "influxdb: no binary at $INFLUX_BIN"
	mkdir -p "$INFLUX_DIR"
	rm -f "$INFLUX_PID"
	influx_write_config
	setsid "$INFLUX_BIN" run -config "$INFLUX_CONF" -pidfile "$INFLUX_PID" \
		</dev/null >>"$INFLUX_LOG" 2>&1 9>&- &
	local _
	for _ in $(seq 50); do [[ -s $INFLUX_PID ]] && break; sleep 0.1; done
}

influx_probe() { curl -fsS -o /dev/null "http://$HOST:$INFLUX_PORT/ping"; }

influx_wait() {
	wait_ready influxdb "$INFLUX_TIMEOUT" "$INFLUX_LOG" "$INFLUX_PID" influxd -- influx_probe
}

# CREATE DATABASE is idempotent in InfluxDB 1.x.
influx_provision() {
	local db
	for db in iot iot_test; do
		curl -fsS -o /dev/null -XPOST "http://$HOST:$INFLUX_PORT/query" \
			--data-urlencode "q=CREATE DATABASE $db" ||
			{ show_log "$INFLUX_LOG"; die "influxdb: CREATE DATABASE $db failed"; }
	done
}

influx_stop() { stop_pid influxdb "$INFLUX_PID" influxd 30; }

# ---------------------------------------------------------------------------
# subcommands
# ---------------------------------------------------------------------------

cmd_start() {
	local t0=$SECONDS
	take_lock
	ensure_packages

	# The one slow cold step (Go build, ~1 min) runs in the background while
	# the other three services start.
	local build_pid=""
	if ! influx_running && [[ ! -x $INFLUX_BIN ]]; then
		mkdir -p "$INFLUX_DIR"
		influx_build </dev/null >"$INFLUX_DIR/build.log" 2>&1 9>&- &
		build_pid=$!
	fi

	postgres_start
	mosquitto_start
	kafka_start

	if [[ -n $build_pid ]]; then
		wait "$build_pid" || { show_log "$INFLUX_DIR/build.log"; die "influxdb: building influxd failed"; }
		log "influxdb: built $INFLUX_BIN"
	fi
	influx_start

	local failed=()
	postgres_wait && postgres_provision || failed+=(postgres)
	mosquitto_wait || failed+=(mosquitto)
	influx_wait && influx_provision || failed+=(influxdb)
	kafka_wait || failed+=(kafka)
	if ((${#failed[@]})); then
		die "not started: ${failed[*]} (logs under $WORK)"
	fi
	log "all services up in $((SECONDS - t0))s (work folder $WORK)"
}

# One service at a time (fault tests restart a broker mid-stream): start/stop NAME...
service_prefix() {
	case $1 in
	postgres | mosquitto | kafka) echo "$1" ;;
	influxdb) echo influx ;;
	*) die "unknown service '$1' (one of: ${SERVICES[*]})" ;;
	esac
}

cmd_start_some() {
	take_lock
	ensure_packages
	local name prefix
	for name in "$@"; do
		prefix=$(service_prefix "$name")
		"${prefix}_start"
		"${prefix}_wait" || die "$name did not come up (logs under $WORK)"
		if declare -F "${prefix}_provision" >/dev/null; then "${prefix}_provision"; fi
	done
}

cmd_stop_some() {
	take_lock
	local name
	for name in "$@"; do
		"$(service_prefix "$name")_stop"
	done
}

cmd_stop() {
	take_lock
	# In parallel: Kafka's controlled shutdown alone takes a few seconds.
	local pids=() p rc=0
	postgres_stop & pids+=($!)
	mosquitto_stop & pids+=($!)
	influx_stop & pids+=($!)
	kafka_stop & pids+=($!)
	for p in "${pids[@]}"; do wait "$p" || rc=1; done
	return "$rc"
}

# SIGHUP: Mosquitto re-reads its ACL, certificates and CRL without dropping sessions.
cmd_reload_mosquitto() {
	pid_alive "$MQTT_PID" mosquitto || die "mosquitto is not running"
	kill -HUP "$(pid_of "$MQTT_PID")"
	log "mosquitto reloaded"
}

cmd_status() {
	local all=0 name running pid pidfile
	for name in "${SERVICES[@]}"; do
		case $name in
		postgres) pidfile=$PG_DATA/postmaster.pid running=postgres_running ;;
		mosquitto) pidfile=$MQTT_PID running=mosquitto_running ;;
		kafka) pidfile=$KAFKA_PID running=kafka_running ;;
		influxdb) pidfile=$INFLUX_PID running=influx_running ;;
		esac
		if $running; then
			pid=$(pid_of "$pidfile")
			printf '%-10s running  %s:%s  pid %s\n' "$name" "$HOST" "$(service_port "$name")" "$pid"
		else
			printf '%-10s stopped  %s:%s\n' "$name" "$HOST" "$(service_port "$name")"
			all=1
		fi
	done
	return "$all"
}

cmd_env() {
	cat <<EOF
export IOT_TEST_POSTGRES_URL=postgresql+asyncpg://iot:iot@$HOST:$PG_PORT/iot_test
export IOT_TEST_MQTT_URL=mqtt://$HOST:$MQTT_PORT
export IOT_TEST_MQTTS_URL=mqtts://$HOST:$MQTT_TLS_PORT
export IOT_TEST_PKI_DIR=$PKI_DIR
export IOT_TEST_KAFKA_BROKERS=$HOST:$KAFKA_PORT
export IOT_TEST_INFLUX_URL=http://$HOST:$INFLUX_PORT
export IOT_TEST_INFLUX_TOKEN=$INFLUX_TOKEN
export IOT_TEST_INFLUX_ORG=$INFLUX_ORG
export IOT_TEST_INFLUX_BUCKET=iot_test/autogen
export IOT_SERVICES_DIR=$WORK
EOF
}

smoke_postgres() {
	local out
	out=$(PGPASSWORD=iot PGCONNECT_TIMEOUT=10 psql -X -h "$HOST" -p "$PG_PORT" -U iot -d iot_test -tAc 'SELECT 1') || return 1
	[[ $out == 1 ]]
}

smoke_mosquitto_plain() {
	local topic="iot-platform/smoke/$$-$RANDOM" msg="hello-$RANDOM" out sub_pid deadline
	out=$(mktemp)
	mosquitto_sub -h "$HOST" -p "$MQTT_PORT" -t "$topic" -C 1 -W 10 >"$out" &
	sub_pid=$!
	# Publish until the subscriber (which may still be subscribing) got one.
	deadline=$((SECONDS + 10))
	while kill -0 "$sub_pid" 2>/dev/null && ((SECONDS < deadline)); do
		mosquitto_pub -h "$HOST" -p "$MQTT_PORT" -t "$topic" -m "$msg" -q 1 || true
		sleep 0.3
	done
	local rc=0
	wait "$sub_pid" || rc=$?
	local got
	got=$(cat "$out")
	rm -f "$out"
	((rc == 0)) && [[ $got == "$msg" ]]
}

# The TLS listener: the platform's service certificate connects and publishes; none does not.
smoke_mosquitto_tls() {
	mosquitto_pub -h "$HOST" -p "$MQTT_TLS_PORT" --cafile "$PKI_DIR/chain.pem" --cert "$PKI_DIR/platform.crt" \
		--key "$PKI_DIR/platform.key" -t iot-platform/smoke/tls -m tls -q 1 || return 1
	! mosquitto_pub -h "$HOST" -p "$MQTT_TLS_PORT" --cafile "$PKI_DIR/chain.pem" -t iot-platform/smoke/tls -m no 2>/dev/null
}

smoke_mosquitto() { smoke_mosquitto_plain && smoke_mosquitto_tls; }

smoke_kafka() {
	local topic msg="hello-$RANDOM" got
	topic="smoke-$(date +%s)-$RANDOM"
	printf '%s\n' "$msg" | timeout 30 kcat -P -b "$HOST:$KAFKA_PORT" -t "$topic" -X message.timeout.ms=20000 || return 1
	got=$(timeout 30 kcat -C -b "$HOST:$KAFKA_PORT" -t "$topic" -o beginning -c 1 -e -q) || return 1
	[[ $got == "$msg" ]]
}

smoke_influxdb() {
	local meas="smoke_$$_$RANDOM" value="$RANDOM.5" code out
	code=$(curl -sS -o /dev/null -w '%{http_code}' -XPOST \
		"http://$HOST:$INFLUX_PORT/api/v2/write?org=$INFLUX_ORG&bucket=iot_test/autogen&precision=s" \
		-H "Authorization: Token $INFLUX_TOKEN" -H 'Content-Type: text/plain; charset=utf-8' \
		--data-binary "$meas,src=smoke value=$value $(date +%s)") || return 1
	[[ $code == 204 ]] || { log "influxdb write returned HTTP $code"; return 1; }
	out=$(curl -fsS -XPOST "http://$HOST:$INFLUX_PORT/api/v2/query?org=$INFLUX_ORG" \
		-H "Authorization: Token $INFLUX_TOKEN" \
		-H 'Accept: application/csv' -H 'Content-Type: application/vnd.flux' \
		--data-binary "from(bucket: \"iot_test/autogen\") |> range(start: -1h) |> filter(fn: (r) => r._measurement == \"$meas\")") || return 1
	grep -q ",$value," <<<"$out" || { log "influxdb flux query did not return $value: $out"; return 1; }
}

cmd_smoke() {
	local name rc=0
	for name in "${SERVICES[@]}"; do
		if "smoke_$name"; then
			echo "ok $name"
		else
			echo "FAIL $name"
			rc=1
		fi
	done
	return "$rc"
}

usage() {
	sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

main() {
	local command=${1:-}
	shift || true
	case $command in
	start) if (($#)); then cmd_start_some "$@"; else cmd_start; fi ;;
	stop) if (($#)); then cmd_stop_some "$@"; else cmd_stop; fi ;;
	restart) (($#)) || usage; cmd_stop_some "$@"; cmd_start_some "$@" ;;
	reload) [[ ${1:-} == mosquitto ]] || usage; cmd_reload_mosquitto ;;
	status) cmd_status ;;
	env) cmd_env ;;
	smoke) cmd_smoke ;;
	*) usage ;;
	esac
}

main "$@"
