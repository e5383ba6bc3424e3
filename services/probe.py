"""Health probes for services.sh: speak just enough of each wire protocol to know a server works.

Standard library only, so that the services script does not depend on the project's venv.
Each probe sends one real request and checks the answer, which is stronger than an open port:

- ``kafka HOST:PORT[,…]`` sends a Metadata v4 request (no topics) and needs at least one broker
  in the answer. A KRaft broker only processes requests once it has caught up with the metadata
  log and been unfenced, so an answer means producers and consumers can work.
- ``mongo URL`` sends ``hello`` as an OP_MSG and needs ``ok: 1``.
- ``redis URL`` sends ``PING`` (after ``AUTH`` when the URL carries a password) and needs
  ``+PONG``.
- ``redis-cluster HOST:PORT[,…]`` sends ``CLUSTER INFO`` to every node named and needs
  ``cluster_state:ok`` from each (every slot served, the node agrees), knowing exactly the nodes
  named (no stale member of an older layout), none of them failed, and every node either a
  master serving slots or a replica (a replica-to-be not attached yet is a slotless master);
  it prints the number of
  nodes and masters the first one knows.
- ``cluster-id`` prints a fresh Kafka cluster id (what ``StorageTool random-uuid`` prints,
  without starting a JVM).

Exit status 0 means healthy; otherwise one line on stderr says what went wrong.
"""

from __future__ import annotations

import base64
import socket
import struct
import sys
import uuid
from urllib.parse import unquote, urlsplit

TIMEOUT_S = 3.0


class ProbeError(Exception):
    """The server answered, but not as a healthy one would."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise ProbeError("connection closed before the full answer arrived")
        chunks += chunk
    return bytes(chunks)


def _host_port(hostport: str, default_port: int) -> tuple[str, int]:
    host, sep, port = hostport.strip().rpartition(":")
    if not sep:
        return hostport.strip(), default_port
    return host.strip("[]"), int(port)


# --- Kafka ---------------------------------------------------------------------------------

_METADATA_KEY = 3
_METADATA_VERSION = 4  # oldest Metadata version Kafka 4.x still serves (KIP-896)


def probe_kafka(bootstrap: str) -> str:
    """Ask the first bootstrap server for cluster metadata; return a summary line."""
    host, port = _host_port(bootstrap.split(",", maxsplit=1)[0], 9092)
    client_id = b"coffeebus-services-probe"
    correlation_id = 7
    # Request header v1: api_key, api_version, correlation_id, client_id (int16-length string).
    # Metadata v4 body: topics as an empty array (no topics, only brokers), allow_auto_create.
    body = (
        struct.pack(">hhih", _METADATA_KEY, _METADATA_VERSION, correlation_id, len(client_id))
        + client_id
        + struct.pack(">i?", 0, False)
    )
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.sendall(struct.pack(">i", len(body)) + body)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        answer = _recv_exact(sock, size)
    got_correlation, _throttle_ms, broker_count = struct.unpack_from(">iii", answer, 0)
    if got_correlation != correlation_id:
        raise ProbeError(f"answer carries correlation id {got_correlation}, not {correlation_id}")
    if broker_count < 1:
        raise ProbeError("metadata lists no broker yet")
    offset = 12
    brokers = []
    for _ in range(broker_count):
        node_id, host_len = struct.unpack_from(">ih", answer, offset)
        offset += 6
        broker_host = answer[offset : offset + host_len].decode()
        offset += host_len
        (broker_port, rack_len) = struct.unpack_from(">ih", answer, offset)
        offset += 6 + max(rack_len, 0)
        brokers.append(f"{node_id}@{broker_host}:{broker_port}")
    return "brokers " + ",".join(brokers)


# --- MongoDB wire protocol -----------------------------------------------------------------

_OP_MSG = 2013


def _bson_hello() -> bytes:
    db = b"admin\x00"
    elements = (
        b"\x10hello\x00" + struct.pack("<i", 1) + b"\x02$db\x00" + struct.pack("<i", len(db)) + db
    )
    return struct.pack("<i", 4 + len(elements) + 1) + elements + b"\x00"


def _bson_top_level(doc: bytes) -> dict[str, object]:
    """Decode the scalar top-level fields of a BSON document; nested values are skipped."""
    fields: dict[str, object] = {}
    offset = 4
    end = struct.unpack_from("<i", doc, 0)[0] - 1
    fixed = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16}
    while offset < end:
        kind = doc[offset]
        name_end = doc.index(b"\x00", offset + 1)
        name = doc[offset + 1 : name_end].decode()
        offset = name_end + 1
        if kind == 0x01:
            fields[name] = struct.unpack_from("<d", doc, offset)[0]
        elif kind == 0x10:
            fields[name] = struct.unpack_from("<i", doc, offset)[0]
        elif kind == 0x08:
            fields[name] = doc[offset] == 1
        elif kind == 0x02:
            length = struct.unpack_from("<i", doc, offset)[0]
            fields[name] = doc[offset + 4 : offset + 4 + length - 1].decode()
            offset += 4 + length
            continue
        if kind in fixed:
            offset += fixed[kind]
        elif kind in (0x03, 0x04):  # embedded document or array: length-prefixed
            offset += struct.unpack_from("<i", doc, offset)[0]
        elif kind == 0x05:  # binary: length, subtype, bytes
            offset += 5 + struct.unpack_from("<i", doc, offset)[0]
        else:
            break  # a type hello never returns at top level; what we have is enough
    return fields


def probe_mongo(url: str) -> str:
    """Send ``hello`` over OP_MSG and check ``ok``; return a summary line."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 27017
    payload = struct.pack("<I", 0) + b"\x00" + _bson_hello()  # flagBits, section kind 0, body
    request_id = 11
    header = struct.pack("<iiii", 16 + len(payload), request_id, 0, _OP_MSG)
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.settimeout(TIMEOUT_S)
        sock.sendall(header + payload)
        size, _request, response_to, op_code = struct.unpack("<iiii", _recv_exact(sock, 16))
        answer = _recv_exact(sock, size - 16)
    if op_code != _OP_MSG or response_to != request_id:
        raise ProbeError(f"unexpected answer (opCode {op_code}, responseTo {response_to})")
    if answer[4] != 0:
        raise ProbeError(f"answer starts with section kind {answer[4]}, expected 0")
    fields = _bson_top_level(answer[5:])
    if fields.get("ok") not in (1, 1.0, True):
        raise ProbeError(f"hello answered ok={fields.get('ok')!r}: {fields.get('errmsg', '')}")
    return f"maxWireVersion {fields.get('maxWireVersion', '?')}"


# --- Redis ---------------------------------------------------------------------------------


def _resp_command(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _resp_line(sock: socket.socket) -> bytes:
    line = bytearray()
    while not line.endswith(b"\r\n"):
        line += _recv_exact(sock, 1)
    return bytes(line[:-2])


def probe_redis(url: str) -> str:
    """Send PING (after AUTH when the URL has a password); return a summary line."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    with socket.create_connection((host, port), timeout=TIMEOUT_S) as sock:
        sock.settimeout(TIMEOUT_S)
        if parts.password is not None:
            auth = [unquote(parts.password)]
            if parts.username:
                auth.insert(0, unquote(parts.username))
            sock.sendall(_resp_command("AUTH", *auth))
            reply = _resp_line(sock)
            if reply != b"+OK":
                raise ProbeError(f"AUTH answered {reply.decode(errors='replace')}")
        sock.sendall(_resp_command("PING"))
        reply = _resp_line(sock)
    if reply != b"+PONG":
        raise ProbeError(f"PING answered {reply.decode(errors='replace')}")
    return "PONG"


def _resp_bulk(sock: socket.socket) -> bytes:
    head = _resp_line(sock)
    if head.startswith(b"-"):
        raise ProbeError(head[1:].decode(errors="replace"))
    if not head.startswith(b"$"):
        raise ProbeError(f"expected a bulk string, got {head[:40]!r}")
    size = int(head[1:])
    return _recv_exact(sock, size + 2)[:size] if size >= 0 else b""


def probe_redis_cluster(nodes: str) -> str:
    """``CLUSTER INFO`` and ``CLUSTER NODES`` on each node of "host:port,…" (module
    docstring: ``redis-cluster``)."""
    named = nodes.split(",")
    summary = ""
    for node in named:
        host, _, port = node.rpartition(":")
        with socket.create_connection((host, int(port)), timeout=TIMEOUT_S) as sock:
            sock.settimeout(TIMEOUT_S)
            sock.sendall(_resp_command("CLUSTER", "INFO"))
            text = _resp_bulk(sock).decode()
            info = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
            sock.sendall(_resp_command("CLUSTER", "NODES"))
            view = [line.split() for line in _resp_bulk(sock).decode().splitlines()]
        if info.get("cluster_state") != "ok":
            raise ProbeError(f"{node}: cluster_state:{info.get('cluster_state', '?')}")
        known = info.get("cluster_known_nodes", "?")
        if known != str(len(named)):
            raise ProbeError(f"{node} knows {known} nodes, not the {len(named)} named")
        for fields in view:
            flags = fields[2].split(",")
            if {"fail", "fail?", "noaddr"} & set(flags):
                raise ProbeError(f"{node} sees {fields[1]} as {fields[2]}")
            if "master" in flags and len(fields) < 9:  # a replica-to-be, not attached yet
                raise ProbeError(f"{node} sees {fields[1]} as a master without slots")
        if not summary:
            summary = f"cluster_state:ok, {known} nodes, {info.get('cluster_size', '?')} masters"
    return summary


# --- Kafka cluster id ----------------------------------------------------------------------


def new_cluster_id() -> str:
    """A random Kafka Uuid in its base64url form, as ``StorageTool random-uuid`` makes it.

    Kafka rejects the all-zero and metadata-topic ids and avoids ids starting with ``-`` (they
    read as command-line options); with 122 random bits only the last rule ever applies.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def main(argv: list[str]) -> int:
    """Run one probe named on the command line; print its summary or the reason it failed."""
    probes = {
        "kafka": probe_kafka,
        "mongo": probe_mongo,
        "redis": probe_redis,
        "redis-cluster": probe_redis_cluster,
    }
    if argv[1:2] == ["cluster-id"]:
        print(new_cluster_id())
        return 0
    if len(argv) != 3 or argv[1] not in probes:
        print(
            f"usage: {argv[0]} {{kafka|mongo|redis|redis-cluster}} TARGET | cluster-id",
            file=sys.stderr,
        )
        return 2
    try:
        print(probes[argv[1]](argv[2]))
    except (OSError, ProbeError, struct.error, ValueError, IndexError) as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
