"""`dw stack up` right after a server was killed: its closed connections in TIME_WAIT must not read as a busy port."""
from __future__ import annotations

import socket

from dw_assets.stack import find_free_port
from dw_assets.stack.process import port_in_use


def test_a_port_left_in_time_wait_by_a_killed_server_is_free_but_a_listening_one_is_busy():
    port = find_free_port()
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = server.accept()
    # The server side closes first (as the kernel does for a killed broker): its end of the connection stays
    # in TIME_WAIT on the server's port, which makes a plain bind() fail for about a minute.
    conn.close()
    client.recv(1)  # the server's FIN has arrived: the server side is the active closer
    server.close()
    client.close()
    plain = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        plain.bind(("127.0.0.1", port))
        time_wait = False
    except OSError:
        time_wait = True
    finally:
        plain.close()
    assert time_wait, "the kernel did not keep the connection in TIME_WAIT; the test proves nothing"
    assert not port_in_use(port)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listening:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do
        listening.bind(("127.0.0.1", port))
        listening.listen()
        assert port_in_use(port)
