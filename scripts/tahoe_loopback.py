#!/usr/bin/env python3
"""Runs the `tahoe` command with every wildcard bind moved to 127.0.0.1.

Tahoe-LAFS 1.20 always opens a foolscap log port on 0.0.0.0 (allmydata.util.iputil binds
('', 0)) and no setting controls it; test grids must listen on loopback only. This swaps the
`socket` module that allmydata.util.iputil sees for one whose sockets rewrite those binds.

Usage: python3 tahoe_loopback.py <tahoe arguments>
"""
import socket
import sys
import types

import allmydata.util.iputil as iputil


class LoopbackSocket(socket.socket):
    def bind(self, address):
        if isinstance(address, tuple) and address and address[0] in ("", "0.0.0.0"):
            address = ("127.0.0.1",) + tuple(address[1:])
        return super().bind(address)


loopback = types.ModuleType("socket")
loopback.__dict__.update(socket.__dict__)
loopback.socket = LoopbackSocket
iputil.socket = loopback

from allmydata.scripts.runner import run  # noqa: E402  (after the swap, on purpose)

if __name__ == "__main__":
    sys.argv[0] = "tahoe"
    sys.exit(run())
