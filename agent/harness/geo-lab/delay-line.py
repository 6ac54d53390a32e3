#!/usr/bin/env python3
"""A user-space L2 delay line for the geo lab (the kernel here has no netem).

Forwards every Ethernet frame arriving on interface A out of interface B, and the reverse, each
DELAY_MS after it arrived (FIFO, so order is kept). Runs inside a network namespace of its own,
between a region's bridge and the core bridge. Usage: delay-line.py IF_A IF_B DELAY_MS
Stdlib only; stops on SIGTERM.
"""
import collections
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
MAX_FRAME = 65600  # veths in the lab run with a 64 KiB MTU


def open_raw(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024 * 1024)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024 * 1024)
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def main():
    if_a, if_b, delay_ms = sys.argv[1], sys.argv[2], float(sys.argv[3])
    delay = delay_ms / 1000.0
    a, b = open_raw(if_a), open_raw(if_b)
    other = {a.fileno(): b, b.fileno(): a}
    queue = collections.deque()  # (due, out socket, frame)
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    poller = select.poll()
    poller.register(a, select.POLLIN)
    poller.register(b, select.POLLIN)
    print("delay line ready", flush=True)
    while running:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, out, frame = queue.popleft()
            try:
                out.send(frame)
            except OSError:
                pass  # a full queue drops the frame, as a real link would
        timeout = max(0.0, (queue[0][0] - now) * 1000.0) if queue else 100.0
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            continue
        now = time.monotonic()
        for fd, _ in events:
            sock = a if fd == a.fileno() else b
            for _ in range(256):
                try:
                    frame, addr = sock.recvfrom(MAX_FRAME)
                except BlockingIOError:
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue  # our own sends, seen on the way out
                queue.append((now + delay, other[fd], frame))


if __name__ == "__main__":
    main()
