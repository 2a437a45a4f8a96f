#!/usr/bin/env python3
"""Forward TCP connections accepted inside a network namespace to an address of this
process's own namespace: the local cluster's apiserver (on the host's loopback) made
reachable from a kubelet node's namespace, as e2e/src/netns.rs's forwarder does for
rekube's own nodes. The listeners are made while the main thread has joined the node's
namespace (a socket belongs to the namespace it was made in); the thread then returns to
its own namespace before any upstream connection is made.

    netns-forward.py --netns /run/netns/NAME --listen 0.0.0.0:6443 --upstream 127.0.0.1:6443

Runs until killed (SIGTERM). Prints one line when it listens.
"""
import argparse
import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def split(hostport):
    host, port = hostport.rsplit(":", 1)
    return host, int(port)


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    try:
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def serve(listener, upstream):
    while True:
        client, _ = listener.accept()
        try:
            server = socket.create_connection(upstream, timeout=10)
            server.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, server), (server, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--netns", required=True)
    p.add_argument("--listen", action="append", required=True)
    p.add_argument("--upstream", required=True)
    args = p.parse_args()
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(args.netns, os.O_RDONLY)
    listeners = []
    setns(target)
    try:
        for addr in args.listen:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(split(addr))
            s.listen(128)
            listeners.append(s)
    finally:
        setns(own)
        os.close(target)
        os.close(own)
    upstream = split(args.upstream)
    threads = [threading.Thread(target=serve, args=(s, upstream), daemon=True) for s in listeners]
    for t in threads:
        t.start()
    print(f"[netns-forward] {' '.join(args.listen)} in {args.netns} -> {args.upstream}", flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    sys.exit(main())
