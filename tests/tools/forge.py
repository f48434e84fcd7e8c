#!/usr/bin/env python3
"""Forged packets and a counting listener for the anti-spoofing end-to-end
tests. Runs inside a lab namespace (ip netns exec); sends only to the
addresses it is given, which the tests take from their own lab.

  forge.py vxlan TO PORT VNI INNER_SRC INNER_DST DPORT [INNER_DST_MAC]
      one UDP datagram to TO:PORT carrying VXLAN (VNI) + Ethernet + IPv4 +
      UDP (INNER_SRC -> INNER_DST:DPORT, payload b"forged"); the kernel
      writes the outer headers, so the outer source is this namespace's.
      INNER_DST_MAC (default 02:42:c0:a8:00:01) matters to a kernel VXLAN
      receiver, which takes only frames to its device's MAC.
  forge.py flood TO PORT VNI INNER_SRC INNER_DST DPORT COUNT
      COUNT copies of the vxlan datagram above, as fast as one socket
      sends; prints how many the kernel took (a full queue refuses some).
  forge.py raw SRC DST DPORT
      one UDP datagram with a source address of our choice (IP_HDRINCL).
  forge.py listen PORT SECONDS
      counts UDP datagrams to PORT (any address) for SECONDS; prints the count.
"""
import socket
import struct
import sys
import time


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ipv4_udp(src, dst, dport, payload):
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x4242, 0, 64, 17, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )
    hdr = hdr[:10] + struct.pack("!H", csum(hdr)) + hdr[12:]
    return hdr + udp


def main():
    cmd = sys.argv[1]
    if cmd in ("vxlan", "flood"):
        to, port, vni, isrc, idst, dport = sys.argv[2:8]
        if cmd == "flood":
            count, dmac = int(sys.argv[8]), "02:42:c0:a8:00:01"
        else:
            count = 1
            dmac = sys.argv[8] if len(sys.argv) > 8 else "02:42:c0:a8:00:01"
        inner = ipv4_udp(isrc, idst, int(dport), b"forged")
        eth = bytes.fromhex(dmac.replace(":", "")) + bytes.fromhex("0242c0a80002") + b"\x08\x00"
        vx = struct.pack("!II", 0x08000000, int(vni) << 8)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        data, to = vx + eth + inner, (to, int(port))
        sent = 0
        for _ in range(count):
            try:
                s.sendto(data, to)
                sent += 1
            except OSError:
                pass
        if cmd == "flood":
            print(sent)
    elif cmd == "raw":
        src, dst, dport = sys.argv[2:5]
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        s.sendto(ipv4_udp(src, dst, int(dport), b"forged"), (dst, 0))
    elif cmd == "listen":
        port, seconds = int(sys.argv[2]), float(sys.argv[3])
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        deadline = time.time() + seconds
        n = 0
        while True:
            left = deadline - time.time()
            if left <= 0:
                break
            s.settimeout(left)
            try:
                s.recv(65535)
                n += 1
            except socket.timeout:
                break
        print(n)
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
