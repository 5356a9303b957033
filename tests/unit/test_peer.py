"""labsim.peer: the owner of a loopback connection's other end, from the kernel's tables."""

import os
import socket

from labsim.peer import is_owner, tcp_peer_uid


def test_peer_uid_of_a_local_client_is_ours():
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname())
    conn, _ = srv.accept()
    try:
        assert tcp_peer_uid(conn) == os.getuid()
        assert is_owner(conn)
    finally:
        for s in (conn, cli, srv):
            s.close()


def test_a_client_that_closed_at_once_is_not_taken_for_root():
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname())
    cli.sendall(b"GET /power/0 HTTP/1.0\r\n\r\n")
    cli.close()  # its socket leaves ESTABLISHED before we look
    conn, _ = srv.accept()
    try:
        assert tcp_peer_uid(conn) is None
        assert not is_owner(conn)
    finally:
        conn.close()
        srv.close()


def test_a_dual_stack_client_is_found_in_tcp6():
    """gRPC's clients (labgrid's coordinator connections) reach an IPv4 port from an IPv6
    socket: their end is listed in tcp6 under v4-mapped addresses. Seen: the coordinator's
    owner-only relay closed on its own owner."""
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.socket(socket.AF_INET6)
    cli.connect(("::ffff:127.0.0.1", srv.getsockname()[1]))
    conn, _ = srv.accept()
    try:
        assert tcp_peer_uid(conn) == os.getuid()
    finally:
        for s in (conn, cli, srv):
            s.close()
