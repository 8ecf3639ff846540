"""`python -m tests.forwarder ADDRESS PORT…`: forward ADDRESS:PORT to 127.0.0.1:PORT for each port (TCP), so
a network namespace (`tests.netns`) reaches the suite's loopback servers over its veth pair. Runs until
killed."""

from __future__ import annotations

import socket
import sys
import threading


def pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(1 << 16):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, target):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(address: str, port: int) -> None:
    listener = socket.create_server((address, port), reuse_port=False)
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", port))
        except OSError:
            client.close()
            continue
        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()


def main(address: str, ports: list[int]) -> None:
    threads = [threading.Thread(target=serve, args=(address, port), daemon=True) for port in ports]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main(sys.argv[1], [int(port) for port in sys.argv[2:]])
