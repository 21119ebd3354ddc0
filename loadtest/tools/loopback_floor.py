#!/usr/bin/env python3
"""The kernel's floor under the `burst` scenario on this machine.

One process pinned to CPU 0 writes one frame to each of N loopback TCP connections (what a
node does for one message in a room of N present members); another pinned to CPU 1 reads
them with epoll (what the harness does). There is no WebSocket, no actor, no store: only the
send and receive paths of the kernel. The time the writer needs for N sends is the least any
single-core server can take for the same burst on this machine.

    python3 loadtest/tools/loopback_floor.py --connections 5000 --rounds 7

Needs `ulimit -n` above twice the connections. Prints the median of the rounds.
"""

import argparse
import os
import select
import socket
import statistics
import time


def reader(port, n, rounds, ready_w, done_r, cpu):
    os.sched_setaffinity(0, {cpu})
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
    ep = select.epoll()
    for c in conns:
        c.setblocking(False)
        ep.register(c.fileno(), select.EPOLLIN)
    os.write(ready_w, b"r")
    for _ in range(rounds):
        got = 0
        while got < n:
            for fd, _ in ep.poll():
                got += len(os.read(fd, 65536)) // FRAME
        stamp = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        os.write(ready_w, str(stamp).encode().ljust(32))
        os.read(done_r, 1)
    os._exit(0)


FRAME = 120


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--connections", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--writer-cpu", type=int, default=0)
    ap.add_argument("--reader-cpu", type=int, default=1)
    args = ap.parse_args()
    n = args.connections

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    child = os.fork()
    if child == 0:
        reader(port, n, args.rounds, ready_w, done_r, args.reader_cpu)
    os.sched_setaffinity(0, {args.writer_cpu})
    peers = []
    for _ in range(n):
        s, _ = listener.accept()
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peers.append(s)
    os.read(ready_r, 1)
    frame = b"x" * FRAME
    sends, lasts = [], []
    for _ in range(args.rounds):
        time.sleep(0.3)
        start = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        for s in peers:
            s.send(frame)
        end = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        last = int(os.read(ready_r, 32).strip())
        sends.append((end - start) / 1e6)
        lasts.append((last - start) / 1e6)
        os.write(done_w, b"n")
    os.waitpid(child, 0)
    send = statistics.median(sends)
    print(
        f"{n} connections: the writer's {n} sends took {send:.1f} ms "
        f"(median of {args.rounds}, {min(sends):.1f}-{max(sends):.1f}), "
        f"{send * 1000 / n:.2f} us per send; the last frame was read "
        f"{statistics.median(lasts):.1f} ms after the first send"
    )


if __name__ == "__main__":
    main()
