"""One uvicorn worker on a listening socket of its own, bound with SO_REUSEPORT.

    python bench/reuseport_worker.py APP PORT [--factory]

Started once per worker by ``bench/load.py`` (``start_reuseport``): every worker binds the
same port, and the kernel spreads incoming connections over the sockets by a hash of their
addresses. (Not ``uvicorn --fd``: uvicorn takes an inherited descriptor for a Unix socket,
so a TCP one gets no TCP_NODELAY and every response waits on Nagle and delayed ACKs.)
"""

from __future__ import annotations

import socket
import sys

import uvicorn


def main(app: str, port: int, factory: bool) -> None:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind(("127.0.0.1", port))
    config = uvicorn.Config(
        app, factory=factory, log_level="warning", access_log=False, backlog=2048
    )
    uvicorn.Server(config).run(sockets=[listener])


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), "--factory" in sys.argv[3:])
