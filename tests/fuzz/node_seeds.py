#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_node (tests/fuzz/corpus/node/): the client
flows of client-flows.md as operation lists, so the fuzzer starts from inputs
that get past registration, the secure-TCP handshake, relay pairing and the
WebSocket upgrade. Run it after changing fuzz_node's input format:

    python3 tests/fuzz/node_seeds.py tests/fuzz/corpus/node
"""
import os
import struct
import sys

LICENCE = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="  # fuzz_node.c: LICENCE
UDP, OPEN, SEND, WS, UPGRADE, KEYX, FIN, CLOSE, API, WAIT, ADMIN = range(11)
MAIN, NAT, RELAY, WS_RDV, WS_RELAY = range(5)


# ---- protobuf, just enough: varint, length-delimited fields
def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        out += bytes([b | (0x80 if v else 0)])
        if not v:
            return out


def fld(num, val):
    if isinstance(val, int):
        return varint(num << 3) + varint(val)
    if isinstance(val, str):
        val = val.encode()
    return varint(num << 3 | 2) + varint(len(val)) + val


def msg(tag, *fields):
    return fld(tag, b"".join(fields))


def frame(p):  # wire.md §3: low two bits of the first byte = extra header bytes
    n = len(p)
    if n <= 0x3F:
        return bytes([n << 2]) + p
    return struct.pack("<H", n << 2 | 1) + p


# ---- fuzz_node operations
def op(code, arg, data=b""):
    return struct.pack("<BBH", code, arg, len(data)) + data


def open_arg(slot, target, src):
    for arg in range(256):
        if arg % 4 == slot and (arg >> 2) % 5 == target and (arg >> 5) % 8 == src:
            return arg
    raise ValueError((slot, target, src))


ID, PEER = "123456789", "987654321"
UUID, PK = bytes(range(16)), bytes(range(32, 64))
register_peer = lambda i=ID: msg(6, fld(1, i), fld(2, 1))
register_pk = lambda i=ID: msg(15, fld(1, i), fld(2, UUID), fld(3, PK))
punch_req = msg(8, fld(1, ID), fld(2, 1), fld(3, LICENCE), fld(6, "1.3.2"))
addr = bytes([127, 0, 0, 1, 0x52, 0x6C])
punch_sent = msg(10, fld(1, addr), fld(2, ID), fld(3, "127.0.0.1"), fld(4, 1), fld(5, "1.3.2"))
local_addr = msg(13, fld(1, addr), fld(2, addr), fld(3, "127.0.0.1"), fld(4, ID), fld(5, "1.3.2"))
request_relay = lambda uuid: msg(18, fld(1, ID), fld(2, uuid), fld(4, "127.0.0.1"), fld(6, LICENCE))
relay_resp = msg(19, fld(1, addr), fld(2, "u-1"), fld(3, "127.0.0.1"), fld(4, ID))
test_nat = msg(20, fld(1, 0))
online = msg(23, fld(1, PEER), fld(2, ID), fld(2, PEER))
hc = msg(26, fld(1, "token"))
http = msg(27, fld(1, "GET"), fld(2, "/api/login-options"), fld(3, fld(1, "Accept") + fld(2, "*/*")))

SEEDS = {
    # sources (fuzz_node.c source()): 0-2 127/8, 3-5 198.18/15, 6 2001:db8::/64, 7 ::1
    "udp_register": [op(UDP, 3, register_peer()), op(UDP, 3, register_pk()), op(UDP, 3, register_peer()),
                     op(UDP, 4, test_nat), op(UDP, 4, register_pk()), op(UDP, 6, register_peer(PEER)),
                     op(UDP, 6, register_pk(PEER))],
    "config_update": [op(UDP, 0, msg(14, fld(1, 7), fld(2, "127.0.0.1:21116"))), op(UDP, 5, msg(14, fld(1, 8)))],
    "tcp_plain": [op(OPEN, open_arg(0, MAIN, 5)), op(SEND, 4, register_pk(PEER)),
                  op(SEND, 4, online), op(SEND, 4, test_nat), op(FIN, 0)],
    "nat_port": [op(OPEN, open_arg(1, NAT, 4)), op(SEND, 5, test_nat), op(OPEN, open_arg(1, NAT, 6)),
                 op(SEND, 5, online)],
    # loopback sources get upstream's consoles on the NAT and relay ports
    "consoles": [op(OPEN, open_arg(0, NAT, 0)), op(SEND, 0, b"rs 127.0.0.1,198.18.0.1"),
                 op(OPEN, open_arg(1, NAT, 1)), op(SEND, 1, b"ib"), op(OPEN, open_arg(2, NAT, 7)), op(SEND, 2, b"aur"),
                 op(OPEN, open_arg(0, RELAY, 0)), op(SEND, 0, b"ba 198.18.0.9|198.18.0.10"),
                 op(OPEN, open_arg(1, RELAY, 2)), op(SEND, 1, b"u"), op(OPEN, open_arg(2, RELAY, 7)),
                 op(SEND, 2, b"sb 128"), op(WAIT, 0xf0)],
    "punch": [op(UDP, 3, register_peer()), op(UDP, 3, register_pk()),
              op(OPEN, open_arg(0, MAIN, 6)), op(KEYX, 0), op(SEND, 0, punch_req),
              op(UDP, 3, punch_sent), op(UDP, 3, local_addr), op(SEND, 0, request_relay("u-1")),
              op(UDP, 3, relay_resp), op(CLOSE, 0)],
    "stream_register": [op(OPEN, open_arg(2, MAIN, 3)), op(KEYX, 2), op(SEND, 2, register_pk(PEER)),
                        op(SEND, 2, register_peer(PEER)), op(SEND, 2, b""), op(SEND, 2, hc)],
    "http_proxy": [op(OPEN, open_arg(3, MAIN, 4)), op(KEYX, 3), op(SEND, 3, http),
                   op(API, 4, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n"
                               b"{\"ok\":true}"), op(CLOSE, 7)],
    "http_proxy_chunked": [op(OPEN, open_arg(1, MAIN, 2)), op(KEYX, 1), op(SEND, 1, http),
                           op(API, 0, b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n4\r\nab"),
                           op(API, 4, b"cd\r\n0\r\n\r\n"), op(SEND, 1, hc)],
    "relay_pair": [op(OPEN, open_arg(0, RELAY, 3)), op(SEND, 4, request_relay("u-2")),
                   op(OPEN, open_arg(1, RELAY, 6)), op(SEND, 5, request_relay("u-2")),
                   op(SEND, 0, b"hello"), op(SEND, 1, b"world"), op(FIN, 0), op(CLOSE, 5)],
    "ws_rendezvous": [op(OPEN, open_arg(0, WS_RDV, 0)), op(UPGRADE, 0, b"X-Real-IP: 127.9.9.9\r\n"),
                      op(WS, 0, register_pk()), op(WS, 0, online), op(WS, 0, punch_req), op(WS, 8, b"ping"),
                      op(WS, 12, b"\x03\xe8")],
    "ws_relay": [op(OPEN, open_arg(2, WS_RELAY, 2)), op(UPGRADE, 2), op(WS, 2, request_relay("u-3")),
                 op(OPEN, open_arg(3, RELAY, 3)), op(SEND, 7, request_relay("u-3")),
                 op(WS, 2, b"data"), op(SEND, 7, b"back"), op(WS, 0x12, b"part"), op(WS, 6, b"end")],
    # OP_WAIT 0xf3 = 160 ms (at most two per input): the relay's wait, the
    # WebSocket handshake, api-proxy's request timeout and HealthCheck
    # heartbeats (all 100 ms in fuzz_node)
    "timeouts": [op(OPEN, open_arg(0, RELAY, 3)), op(SEND, 4, request_relay("u-9")),
                 op(OPEN, open_arg(1, WS_RDV, 4)),
                 op(OPEN, open_arg(2, MAIN, 5)), op(KEYX, 2), op(SEND, 2, hc), op(SEND, 2, http), op(WAIT, 0xf3),
                 op(WAIT, 0xf3)],
    # the admin socket: a reload while a pair and a stream registration are live
    "admin": [op(UDP, 3, register_peer()), op(UDP, 3, register_pk()), op(ADMIN, 0, b"help"),
              op(ADMIN, 0, b"stats registry"), op(OPEN, open_arg(0, RELAY, 3)), op(SEND, 4, request_relay("u-7")),
              op(OPEN, open_arg(1, RELAY, 6)), op(SEND, 5, request_relay("u-7")), op(OPEN, open_arg(2, MAIN, 4)),
              op(KEYX, 2), op(SEND, 2, register_pk(PEER)), op(ADMIN, 0, b"reload"), op(SEND, 0, b"after"),
              op(ADMIN, 0, b"modules"), op(ADMIN, 0, b"conns")],
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "node")
    os.makedirs(out, exist_ok=True)
    for name, ops in SEEDS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(b"".join(ops))


if __name__ == "__main__":
    main()
