"""A minimal asyncio PostgreSQL client that only logs in (startup message,
SCRAM-SHA-256 or md5 password) and then holds the connection idle: enough to
measure what a proxy spends per idle client.

Hazards: SCRAM's PBKDF2 (4096 rounds) costs about a millisecond; the salted
password is cached per (salt, iterations), which helps when the server side
uses the role's stored verifier (one salt). Opening thousands of sockets
needs RLIMIT_NOFILE raised (see `raise_nofile`).
"""

import asyncio
import base64
import hashlib
import hmac
import os
import resource
import struct

_salted_cache = {}


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class LoginError(Exception):
    pass


async def _read_msg(reader):
    head = await reader.readexactly(5)
    tag, length = head[:1], struct.unpack("!I", head[1:])[0]
    if length < 4 or length > 1 << 20:
        raise LoginError(f"bad message length {length}")
    return tag, await reader.readexactly(length - 4)


def _msg(tag, body):
    return tag + struct.pack("!I", len(body) + 4) + body


def _error_text(body):
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[part[:1]] = part[1:].decode(errors="replace")
    return f"{fields.get(b'C', '')} {fields.get(b'M', '')}"


class _Scram:
    def __init__(self, password):
        self.password = password.encode()
        self.nonce = base64.b64encode(os.urandom(18)).decode()
        self.first_bare = f"n=,r={self.nonce}"

    def initial(self):
        first = ("n,," + self.first_bare).encode()
        return b"SCRAM-SHA-256\0" + struct.pack("!I", len(first)) + first

    def final(self, server_first):
        attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
        if not attrs["r"].startswith(self.nonce):
            raise LoginError("server nonce does not extend ours")
        salt, rounds = base64.b64decode(attrs["s"]), int(attrs["i"])
        key = (self.password, salt, rounds)
        if key not in _salted_cache:
            _salted_cache[key] = hashlib.pbkdf2_hmac("sha256", self.password, salt, rounds)
        salted = _salted_cache[key]
        client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
        stored = hashlib.sha256(client_key).digest()
        without_proof = f"c=biws,r={attrs['r']}"
        auth_msg = f"{self.first_bare},{server_first},{without_proof}".encode()
        sig = hmac.new(stored, auth_msg, hashlib.sha256).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, sig))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()


async def login(host, port, user, password, database):
    """Open one connection and log in; returns (reader, writer) at ReadyForQuery."""
    reader, writer = await asyncio.open_connection(host, port)
    params = f"user\0{user}\0database\0{database}\0application_name\0hold\0\0".encode()
    body = struct.pack("!I", 196608) + params
    writer.write(struct.pack("!I", len(body) + 4) + body)
    scram = None
    while True:
        tag, body = await _read_msg(reader)
        if tag == b"E":
            writer.close()
            raise LoginError(_error_text(body))
        if tag == b"Z":
            return reader, writer
        if tag != b"R":
            continue
        code = struct.unpack("!I", body[:4])[0]
        if code == 10:
            scram = _Scram(password)
            writer.write(_msg(b"p", scram.initial()))
        elif code == 11:
            writer.write(_msg(b"p", scram.final(body[4:].decode())))
        elif code == 5:
            inner = hashlib.md5(password.encode() + user.encode()).hexdigest()
            outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
            writer.write(_msg(b"p", b"md5" + outer.encode() + b"\0"))
        elif code == 3:
            writer.write(_msg(b"p", password.encode() + b"\0"))
        elif code not in (0, 12):
            raise LoginError(f"unsupported authentication request {code}")


class QueryError(Exception):
    """An ErrorResponse to a query (SQLSTATE and message)."""


async def query(reader, writer, sql):
    """One simple query on a logged-in connection: sends it, reads up to
    ReadyForQuery; raises QueryError on an ErrorResponse (after draining to
    ReadyForQuery) and asyncio.IncompleteReadError if the server closed."""
    writer.write(_msg(b"Q", sql.encode() + b"\0"))
    error = None
    while True:
        tag, body = await _read_msg(reader)
        if tag == b"E" and error is None:
            error = _error_text(body)
        elif tag == b"Z":
            if error is not None:
                raise QueryError(error)
            return


async def open_tcp(host, port):
    """A bare TCP connection that never sends a startup packet."""
    return await asyncio.open_connection(host, port)


async def open_many(n, connect, concurrency=64):
    """Run `connect()` n times, at most `concurrency` at once; returns
    (connections, errors)."""
    sem = asyncio.Semaphore(concurrency)
    conns, errors = [], []

    async def one():
        async with sem:
            try:
                conns.append(await connect())
            except (OSError, LoginError, asyncio.IncompleteReadError) as e:
                errors.append(str(e) or type(e).__name__)

    await asyncio.gather(*(one() for _ in range(n)))
    return conns, errors


def close_all(conns):
    for _, writer in conns:
        try:
            writer.write(_msg(b"X", b""))
            writer.close()
        except (OSError, RuntimeError):
            pass
