"""A minimal HTTP/1.1 client on a raw socket: the cold-start and slow-reader
figures time or pace individual reads, which http.client hides."""

import socket


class BadResponse(Exception):
    pass


def request(sock, path, host="bench"):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())


def read_head(sock, buf=b""):
    """Reads up to the end of the header block: (status, headers, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise BadResponse(f"connection closed inside the header ({len(buf)} bytes)")
        buf += chunk
        if len(buf) > 65536:
            raise BadResponse("header block over 64 KiB")
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise BadResponse(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, rest


def read_response(sock):
    """One whole response: (status, headers, body). Content-Length, chunked, or
    up to the close."""
    status, headers, rest = read_head(sock)
    if "content-length" in headers:
        n = int(headers["content-length"])
        body = bytearray(rest)
        while len(body) < n:
            chunk = sock.recv(min(1 << 20, n - len(body)))
            if not chunk:
                raise BadResponse(f"closed after {len(body)} of {n} body bytes")
            body += chunk
        return status, headers, bytes(body)
    if headers.get("transfer-encoding", "").lower() == "chunked":
        return status, headers, _read_chunked(sock, rest)
    body = bytearray(rest)
    while chunk := sock.recv(1 << 20):
        body += chunk
    return status, headers, bytes(body)


def _read_chunked(sock, buf):
    body = bytearray()

    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise BadResponse("closed inside a chunked body")
            buf += chunk

    while True:
        while b"\r\n" not in buf:
            need(len(buf) + 1)
        line, buf = buf.split(b"\r\n", 1)
        size = int(line.split(b";")[0], 16)
        if size == 0:
            while not buf.startswith(b"\r\n") and b"\r\n\r\n" not in buf:
                need(len(buf) + 1)  # trailers, none expected
            return bytes(body)
        need(size + 2)
        body += buf[:size]
        buf = buf[size + 2 :]


def get(port, path, timeout=30.0):
    """One request on a fresh connection: (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        request(sock, path)
        return read_response(sock)


def get_head(port, path, timeout=30.0):
    """Status and headers only; the connection is closed before the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        request(sock, path)
        status, headers, _ = read_head(sock)
        return status, headers
