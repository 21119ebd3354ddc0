#!/usr/bin/env bash
# One Apache Cassandra node on 127.0.0.1 for the ScyllaDB store's tests (the `scylla` driver
# speaks CQL to Cassandra as well; ScyllaDB itself has no package in the registries we reach).
#
#   scripts/cassandra.sh start   fetches Cassandra when it is not cached, starts one node on
#                                free loopback ports, waits until a CQL query answers, and prints
#                                `CHATNODE_SCYLLA_NODES=127.0.0.1:PORT` as its only stdout line.
#   scripts/cassandra.sh stop    ends that node by the PID in its pid file and waits for it.
#
# Maven Central does not serve the binary distribution (`apache-cassandra:<v>:tar.gz:bin` is
# not found there), so the node is `cassandra-all` and its runtime dependencies, fetched with
# `mvn dependency:copy-dependencies` into a cache folder and started as
# `org.apache.cassandra.service.CassandraDaemon` with the JVM options of Cassandra's own
# conf/jvm17-server.options and the jamm agent. Cassandra 5.0 runs on Java 17, not on 24 or
# later (it calls System.setSecurityManager), so the JDK is picked explicitly.
#
# Settings (environment):
#   CHATNODE_CASSANDRA_VERSION        Cassandra release (default 5.0.6)
#   CHATNODE_CASSANDRA_CACHE          fetched jars (default ~/.cache/chatnode/cassandra)
#   CHATNODE_CASSANDRA_DIR            this node's data, log, config and pid file (default
#                                     $CHATNODE_CASSANDRA_CACHE/node); give each node its own
#   CHATNODE_CASSANDRA_JAVA_HOME      a Java 17 (default /usr/lib/jvm/java-17-openjdk-amd64)
#   CHATNODE_CASSANDRA_START_TIMEOUT  seconds to wait for CQL (default 240)
#   CHATNODE_CASSANDRA_KEEP_DATA=1    start again on the data and ports of the last start in
#                                     $CHATNODE_CASSANDRA_DIR (otherwise a start begins empty)
set -euo pipefail

VERSION="${CHATNODE_CASSANDRA_VERSION:-5.0.6}"
CACHE="${CHATNODE_CASSANDRA_CACHE:-$HOME/.cache/chatnode/cassandra}"
NODE_DIR="${CHATNODE_CASSANDRA_DIR:-$CACHE/node}"
JAVA_HOME_17="${CHATNODE_CASSANDRA_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"
START_TIMEOUT="${CHATNODE_CASSANDRA_START_TIMEOUT:-240}"
LIB="$CACHE/$VERSION/lib"
PID_FILE="$NODE_DIR/cassandra.pid"
LOG="$NODE_DIR/cassandra.log"

log() { echo "cassandra.sh: $*" >&2; }

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Fetches cassandra-all and its runtime dependencies into $LIB once; `.complete` marks a whole
# copy, so an interrupted fetch is redone rather than used.
fetch() {
  if [ -f "$LIB/.complete" ]; then
    return
  fi
  command -v mvn >/dev/null || { log "mvn is not installed"; exit 1; }
  local work
  work="$(mktemp -d -t chatnode-cassandra-fetch.XXXXXX)"
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>chatnode</groupId>
  <artifactId>cassandra-fetch</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$VERSION</version>
    </dependency>
  </dependencies>
</project>
EOF
  log "fetching cassandra-all $VERSION and its dependencies with mvn"
  rm -rf "$LIB"
  mkdir -p "$LIB"
  if ! (cd "$work" && JAVA_HOME="$JAVA_HOME_17" mvn -q -B dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$LIB" >"$work/mvn.log" 2>&1); then
    log "mvn could not fetch cassandra-all $VERSION:"
    tail -n 40 "$work/mvn.log" >&2
    rm -rf "$work"
    exit 1
  fi
  rm -rf "$work"
  touch "$LIB/.complete"
}

running_pid() {
  if [ -f "$PID_FILE" ]; then
    local pid
    pid="$(cat "$PID_FILE")"
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      echo "$pid"
    fi
  fi
}

# Asks the node `SELECT release_version FROM system.local` over the CQL v4 binary protocol
# (STARTUP, then QUERY); exits 0 when a Rows result comes back. Python's standard library
# only, so no cqlsh or driver is needed.
cql_answers() {
  python3 - "$1" <<'PY'
import socket, struct, sys
port = int(sys.argv[1])
def frame(stream, opcode, body):
    return struct.pack(">BBhBi", 4, 0, stream, opcode, len(body)) + body
def read(sock):
    head = b""
    while len(head) < 9:
        chunk = sock.recv(9 - len(head))
        if not chunk:
            raise EOFError
        head += chunk
    _, _, _, opcode, length = struct.unpack(">BBhBi", head)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise EOFError
        body += chunk
    return opcode, body
def string(s):
    return struct.pack(">H", len(s)) + s.encode()
try:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(frame(1, 0x01, struct.pack(">H", 1) + string("CQL_VERSION") + string("3.0.0")))
    opcode, _ = read(sock)
    if opcode != 0x02:  # READY
        sys.exit(1)
    query = "SELECT release_version FROM system.local"
    body = struct.pack(">i", len(query)) + query.encode() + struct.pack(">HB", 1, 0)
    sock.sendall(frame(2, 0x07, body))
    opcode, body = read(sock)
    sys.exit(0 if opcode == 0x08 and struct.unpack(">i", body[:4])[0] == 2 else 1)
except (OSError, EOFError):
    sys.exit(1)
PY
}

write_config() {
  local native_port="$1" storage_port="$2"
  cat >"$NODE_DIR/cassandra.yaml" <<EOF
# A single-node test cluster, written by scripts/cassandra.sh.
cluster_name: chatnode-test
num_tokens: 1
auto_bootstrap: false
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
endpoint_snitch: SimpleSnitch
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "127.0.0.1:$storage_port"
listen_address: 127.0.0.1
rpc_address: 127.0.0.1
storage_port: $storage_port
ssl_storage_port: $storage_port
start_native_transport: true
native_transport_port: $native_port
storage_compatibility_mode: NONE
authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
data_file_directories:
  - $NODE_DIR/data
commitlog_directory: $NODE_DIR/commitlog
saved_caches_directory: $NODE_DIR/saved_caches
hints_directory: $NODE_DIR/hints
cdc_raw_directory: $NODE_DIR/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
commitlog_segment_size: 8MiB
commitlog_total_space: 128MiB
concurrent_compactors: 1
disk_access_mode: mmap_index_only
# Tests create and drop keyspaces all the time; snapshots of dropped tables only fill the disk.
auto_snapshot: false
snapshot_on_duplicate_row_detection: false
EOF
  cat >"$NODE_DIR/logback.xml" <<'EOF'
<configuration>
  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="STDOUT"/></root>
  <logger name="org.apache.cassandra" level="INFO"/>
</configuration>
EOF
}

start() {
  if [ -n "$(running_pid)" ]; then
    log "a node already runs from $NODE_DIR (pid $(running_pid)); stop it first"
    exit 1
  fi
  [ -x "$JAVA_HOME_17/bin/java" ] || { log "no Java 17 at $JAVA_HOME_17"; exit 1; }
  fetch
  local native_port storage_port jmx_port jamm
  if [ "${CHATNODE_CASSANDRA_KEEP_DATA:-0}" = 1 ] && [ -f "$NODE_DIR/ports" ]; then
    # A restart of the same node (a fault test): same data, same ports, so clients that hold
    # the address reconnect to it.
    read -r native_port storage_port jmx_port <"$NODE_DIR/ports"
  else
    rm -rf "$NODE_DIR/data" "$NODE_DIR/commitlog" "$NODE_DIR/saved_caches" "$NODE_DIR/hints" \
      "$NODE_DIR/cdc_raw"
    native_port="$(free_port)"
    storage_port="$(free_port)"
    jmx_port="$(free_port)"
  fi
  mkdir -p "$NODE_DIR"
  echo "$native_port $storage_port $jmx_port" >"$NODE_DIR/ports"
  jamm="$(ls "$LIB"/jamm-*.jar | head -n 1)"
  write_config "$native_port" "$storage_port"
  # Cassandra's conf/jvm17-server.options (GC and JPMS), a 1 GiB heap instead of the quarter
  # of memory it would take, and the system properties that let a lone node start at once.
  local -a opts=(
    -Xms1g -Xmx1g -Xss256k
    -XX:+UseG1GC -XX:+ParallelRefProcEnabled -XX:MaxTenuringThreshold=1 -XX:G1HeapRegionSize=16m
    -XX:G1RSetUpdatingPauseTimePercent=5 -XX:MaxGCPauseMillis=300
    -XX:InitiatingHeapOccupancyPercent=70
    -Djdk.attach.allowAttachSelf=true
    --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
    --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
    --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
    --add-exports java.sql/java.sql=ALL-UNNAMED
    --add-exports java.base/java.lang.ref=ALL-UNNAMED
    --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
    --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
    --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
    --add-opens java.base/java.lang.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
    --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
    --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
    --add-opens java.base/jdk.internal.math=ALL-UNNAMED
    --add-opens java.base/jdk.internal.module=ALL-UNNAMED
    --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
    --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
    --add-opens java.base/sun.nio.ch=ALL-UNNAMED
    --add-opens java.base/java.io=ALL-UNNAMED
    --add-opens java.base/java.lang.reflect=ALL-UNNAMED
    --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
    --add-opens java.base/java.lang=ALL-UNNAMED
    --add-opens java.base/java.util=ALL-UNNAMED
    -Dio.netty.tryReflectionSetAccessible=true
    -Dio.netty.allocator.useCacheForAllThreads=true
    -Dio.netty.allocator.maxOrder=11
    "-javaagent:$jamm"
    -Dcassandra-foreground=yes
    "-Dcassandra.config=file://$NODE_DIR/cassandra.yaml"
    "-Dcassandra.storagedir=$NODE_DIR"
    "-Dcassandra.logdir=$NODE_DIR"
    "-Dlogback.configurationFile=file://$NODE_DIR/logback.xml"
    "-Dcassandra.jmx.local.port=$jmx_port"
    -Djava.rmi.server.hostname=127.0.0.1
    -Dcassandra.skip_wait_for_gossip_to_settle=0
    -Dcassandra.ring_delay_ms=100
    -Dcassandra.superuser_setup_delay_ms=0
    -Dcassandra.auto_bootstrap=false
    -cp "$LIB/*"
    org.apache.cassandra.service.CassandraDaemon
  )
  # setsid: the node gets its own session, so a test runner's Ctrl-C or the end of the calling
  # shell does not reach it; it ends only through `stop`.
  setsid "$JAVA_HOME_17/bin/java" "${opts[@]}" >"$LOG" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PID_FILE"
  local deadline=$((SECONDS + START_TIMEOUT))
  while ! cql_answers "$native_port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "Cassandra exited before it answered CQL; the last lines of $LOG:"
      tail -n 40 "$LOG" >&2
      rm -f "$PID_FILE"
      exit 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "Cassandra did not answer CQL within ${START_TIMEOUT}s; the last lines of $LOG:"
      tail -n 40 "$LOG" >&2
      stop
      exit 1
    fi
    sleep 0.5
  done
  log "Cassandra $VERSION (pid $pid) answers CQL on 127.0.0.1:$native_port; log $LOG"
  echo "CHATNODE_SCYLLA_NODES=127.0.0.1:$native_port"
}

stop() {
  local pid
  pid="$(running_pid)"
  if [ -z "$pid" ]; then
    rm -f "$PID_FILE"
    return
  fi
  # A stopped (SIGSTOP) node would never see SIGTERM; continue it first.
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "Cassandra (pid $pid) did not stop in 30 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  fetch) fetch ;;
  *)
    echo "usage: $0 start|stop|fetch (see the comment at the top)" >&2
    exit 2
    ;;
esac
