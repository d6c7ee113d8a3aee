"""Helpers the LAN test runs inside a network namespace (ip netns exec):

  lan_peer.py send GROUP PORT IFADDR FARM DISCOVERY
      Sends a burst of malformed datagrams and a valid beacon of another farm
      to the group, then the valid beacon of FARM every 100 ms until killed.
      Prints "garbage-sent N" once the burst is out.

  lan_peer.py scheduler HOST:PORT
      A stand-in for pf-scheduler's Connect: prints "HELLO <printer_id>" for
      every agent Hello and keeps the stream open. Needs the generated
      printfarm.v1 modules on PYTHONPATH.
"""

import os
import socket
import sys
import time


def garbage(farm, discovery):
    """Malformed datagrams, each of which the listener must ignore."""
    good = "PFBEACON 1\nfarm=%s\ndiscovery=%s\n" % (farm, discovery)
    out = [b"", b"\x00", b"\xff" * 64, os.urandom(512), os.urandom(600), b"PFBEACON",
           b"PFBEACON 2\nfarm=%s\ndiscovery=%s\n" % (farm.encode(), discovery.encode()),
           b"PFBEACON 1\nfarm=%s\n" % farm.encode(),
           b"PFBEACON 1\ndiscovery=%s\n" % discovery.encode(),
           b"PFBEACON 1\nfarm=%s\nfarm=%s\ndiscovery=%s\n" % (farm.encode(), farm.encode(),
                                                             discovery.encode()),
           b"PFBEACON 1\nfarm=%s\x00\ndiscovery=%s\n" % (farm.encode(), discovery.encode()),
           b"PFBEACON 1\nfarm=%s\ndiscovery=nope\n" % farm.encode(),
           b"PFBEACON 1\nfarm=%s\ndiscovery=h:0\n" % farm.encode(),
           (good + "x" * 600).encode(),
           good.encode()[:-12]]
    # Every truncation that cuts before the port (a cut port is another valid
    # port), and a control byte at each place.
    for i in range(good.rindex(":") + 1):
        out.append(good.encode()[:i])
    for i in range(len(good)):
        b = bytearray(good.encode())
        b[i] = 0x01
        out.append(bytes(b))
    return out


def send(group, port, ifaddr, farm, discovery):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
    dest = (group, int(port))
    junk = garbage(farm, discovery)
    for d in junk:
        if d:
            s.sendto(d, dest)
    other = "PFBEACON 1\nfarm=%s-other\ndiscovery=%s\n" % (farm, discovery)
    s.sendto(other.encode(), dest)
    print("garbage-sent %d" % sum(1 for d in junk if d), flush=True)
    time.sleep(0.3)
    good = ("PFBEACON 1\nfarm=%s\ndiscovery=%s\n" % (farm, discovery)).encode()
    while True:
        s.sendto(good, dest)
        time.sleep(0.1)


def scheduler(address):
    from concurrent import futures

    import grpc
    from printfarm.v1 import scheduler_pb2 as pb

    def connect(requests, context):
        for msg in requests:
            if msg.WhichOneof("msg") == "hello":
                print("HELLO %s" % msg.hello.printer_id, flush=True)
                yield pb.SchedulerMessage(welcome=pb.Welcome(scheduler_id="lan-fake", epoch=1,
                                                             status_interval_ms=1000))

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    handler = grpc.method_handlers_generic_handler("printfarm.v1.Scheduler", {
        "Connect": grpc.stream_stream_rpc_method_handler(
            connect, request_deserializer=pb.AgentMessage.FromString,
            response_serializer=pb.SchedulerMessage.SerializeToString)})
    server.add_generic_rpc_handlers((handler,))
    if server.add_insecure_port(address) == 0:
        sys.exit("cannot bind %s" % address)
    server.start()
    print("LISTENING %s" % address, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(*sys.argv[2:7])
    elif sys.argv[1] == "scheduler":
        scheduler(sys.argv[2])
    else:
        sys.exit(__doc__)
