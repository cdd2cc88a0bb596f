#!/usr/bin/python3
"""An independent WebSocket client for rdvd's integration tests.

Built on Debian's python3-websockets (its own RFC 6455 framing, masking and
close handshake), so itest_websocket.c checks rdvd against a second
implementation. RendezvousMessages are encoded by hand (a few protobuf
fields). Prints "key=value" lines; exit status 0 when the scenario's own
expectations held, 1 otherwise, 2 on usage errors.

    ws_client.py --port P [--src IP] [--path /ws/id] [--header 'X-Real-IP: 1.2.3.4'] SCENARIO [ARGS]

Scenarios:
    testnat                 TestNatRequest -> TestNatResponse{port}; port must
                            equal our source port (or --expect-port), then the
                            server's close frame must carry 1000
    text                    a text message (ignored), then testnat
    ping                    ping "p1" -> pong
    punch ID KEY [NAT]      PunchHoleRequest -> print the one reply
"""
import argparse
import asyncio
import sys

import websockets


# ---------------------------------------------------------------- protobuf
def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_len(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def field_str(num, s):
    return field_len(num, s.encode())


def parse(buf):
    """Top-level fields: {number: [value, ...]} (varint -> int, length -> bytes)."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(buf, i)
        elif wt == 2:
            n, i = read_varint(buf, i)
            v, i = bytes(buf[i:i + n]), i + n
        elif wt == 1:
            v, i = bytes(buf[i:i + 8]), i + 8
        elif wt == 5:
            v, i = bytes(buf[i:i + 4]), i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out.setdefault(num, []).append(v)
    return out


def read_varint(buf, i):
    shift = v = 0
    while True:
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


TEST_NAT_REQUEST = field_len(20, b"")  # RendezvousMessage.test_nat_request = {}


def punch_hole_request(peer_id, key, nat):
    body = field_str(1, peer_id) + (field_varint(2, nat) if nat else b"") + field_str(3, key)
    return field_len(8, body)


# ---------------------------------------------------------------- scenarios
async def connect(args):
    headers = []
    for h in args.header:
        name, _, value = h.partition(":")
        headers.append((name.strip(), value.strip()))
    uri = "ws://127.0.0.1:%d%s" % (args.port, args.path)
    return await websockets.connect(uri, local_addr=(args.src, 0), extra_headers=headers,
                                    open_timeout=10, close_timeout=5, ping_interval=None,
                                    max_size=1 << 24)


async def testnat(args, ws):
    local_port = ws.local_address[1]
    await ws.send(TEST_NAT_REQUEST)
    reply = await asyncio.wait_for(ws.recv(), 10)
    if not isinstance(reply, bytes):
        print("error=text reply")
        return 1
    top = parse(reply)
    if 21 not in top:
        print("error=not a TestNatResponse: %s" % reply.hex())
        return 1
    port = parse(top[21][0]).get(1, [0])[0]
    print("port=%d" % port)
    print("local_port=%d" % local_port)
    try:  # the server ends the connection after this reply (rendezvous.md §4.2)
        await asyncio.wait_for(ws.recv(), 10)
        print("error=more than one message")
        return 1
    except websockets.ConnectionClosed:
        pass
    print("close_code=%s" % ws.close_code)
    want = args.expect_port if args.expect_port is not None else local_port
    return 0 if port == want and ws.close_code == 1000 else 1


async def text(args, ws):
    await ws.send("hello")  # ignored by the server (wire.md §7)
    return await testnat(args, ws)


async def ping(args, ws):
    waiter = await ws.ping(b"p1")
    await asyncio.wait_for(waiter, 10)
    print("pong=1")
    return 0


async def punch(args, ws):
    peer_id, key = args.rest[0], args.rest[1]
    nat = int(args.rest[2]) if len(args.rest) > 2 else 0
    await ws.send(punch_hole_request(peer_id, key, nat))
    print("sent=1", flush=True)
    reply = await asyncio.wait_for(ws.recv(), 15)
    print("reply=%s" % reply.hex())
    top = parse(reply)
    if 19 in top:  # RelayResponse
        rr = parse(top[19][0])
        print("tag=relay_response")
        print("uuid=%s" % rr.get(2, [b""])[0].decode())
        print("relay_server=%s" % rr.get(3, [b""])[0].decode())
        print("version=%s" % rr.get(7, [b""])[0].decode())
    elif 11 in top:
        ph = parse(top[11][0])
        print("tag=punch_hole_response")
        print("failure=%d" % ph.get(3, [0])[0])
    return 0


SCENARIOS = {"testnat": testnat, "text": text, "ping": ping, "punch": punch}


async def main(args):
    ws = await connect(args)
    try:
        return await SCENARIOS[args.scenario](args, ws)
    finally:
        await ws.close()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--src", default="127.0.0.1")
    p.add_argument("--path", default="/")
    p.add_argument("--header", action="append", default=[])
    p.add_argument("--expect-port", type=int)
    p.add_argument("scenario", choices=sorted(SCENARIOS))
    p.add_argument("rest", nargs="*")
    a = p.parse_args()
    if a.scenario == "punch" and len(a.rest) < 2:
        p.error("punch needs ID KEY")
    try:
        sys.exit(asyncio.run(main(a)))
    except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as e:
        print("error=%s: %s" % (type(e).__name__, e))
        sys.exit(1)
