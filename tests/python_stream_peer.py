#!/usr/bin/python3
"""Misbehaving echo.v1 stream peers in Python (Debian python3-grpcio and
python3-protobuf), to check that a reqctx server cuts streams that would
otherwise hang (issue 22).

    /usr/bin/python3 tests/python_stream_peer.py --target=127.0.0.1:PORT
        --mode=stall|noread [--method=Chat|Collect] [--messages=2]
        [--message_bytes=262144] [--max_mb=256] [--bound_s=60]

--mode=stall sends --messages requests on --method (Chat: reading each
response), then goes silent without half-closing: the server's
message-wait (or idle) timeout should end the call.
--mode=noread sends --message_bytes requests on Chat as fast as flow
control lets it (at most --max_mb in all, far more than the flow-control
windows hold) and reads nothing, so every Write on the path ends up
blocked: the server's idle timeout (or the deadline) should end the call.
gRPC hands the peer a status only once what arrived before it is read, so
the peer starts reading only on SIGUSR1 (sent by the test once the server
has ended the call) or at --bound_s, then reports.

No code generator: the messages are built from a descriptor written here
(the field numbers of proto/echo.proto), and the calls use grpc's generic
stream_stream / stream_unary with their serializers. Prints one line,
"status CODE after MS ms: DETAILS (sent N, received M)", and exits 0 if the
call ended with an error, 1 if it succeeded, 2 if it did not end within
--bound_s (the peer's own deadline). Prints "skip: ..." and exits 3 if grpc
cannot be imported.
"""
import argparse
import signal
import sys
import threading
import time

try:
    import grpc
    from google.protobuf import descriptor_pb2
    from google.protobuf import message_factory
except ImportError as e:  # The caller turns this into one skip line.
    print("skip: python3 grpc/protobuf not importable: %s" % e)
    sys.exit(3)


def echo_messages():
    """EchoRequest and EchoResponse classes for echo.v1 (proto/echo.proto)."""
    f = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(
        name="python_stream_peer/echo.proto", package="echo.v1",
        syntax="proto3")

    def message(name, fields):
        m = fdp.message_type.add(name=name)
        for number, (field, kind, label, type_name) in enumerate(fields, 1):
            m.field.add(name=field, number=number, type=kind, label=label,
                        type_name=type_name)

    one, many = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    message("EchoRequest", [("message", f.TYPE_STRING, one, None),
                            ("work_ms", f.TYPE_INT64, one, None)])
    message("Hop", [("service", f.TYPE_STRING, one, None),
                    ("trace_id", f.TYPE_STRING, one, None),
                    ("span_id", f.TYPE_STRING, one, None),
                    ("deadline_remaining_ms", f.TYPE_INT64, one, None),
                    ("messages_received", f.TYPE_INT64, one, None)])
    message("EchoResponse", [("message", f.TYPE_STRING, one, None),
                             ("trace_id", f.TYPE_STRING, one, None),
                             ("hops", f.TYPE_MESSAGE, many, ".echo.v1.Hop")])
    classes = message_factory.GetMessages([fdp])
    return classes["echo.v1.EchoRequest"], classes["echo.v1.EchoResponse"]


class Peer:
    def __init__(self, args):
        self.args = args
        self.request_cls, self.response_cls = echo_messages()
        self.sent = 0
        self.received = 0
        self.stop = threading.Event()  # Set once the call has ended.

    def stub(self, channel, kind):
        return getattr(channel, kind)(
            "/echo.v1.Echo/" + self.args.method,
            request_serializer=self.request_cls.SerializeToString,
            response_deserializer=self.response_cls.FromString)

    def stalled_requests(self, count, payload, each_sent=None):
        """`count` requests, then silence (no half-close) until the end."""
        for n in range(count):
            yield self.request_cls(message="%s %d" % (payload, n))
            self.sent += 1
            if each_sent is not None:
                each_sent.wait(self.args.bound_s)
                each_sent.clear()
        self.stop.wait(self.args.bound_s)

    def flood(self, payload, max_bytes):
        """Requests as fast as gRPC takes them, up to `max_bytes`, then
        silence until the end."""
        request = self.request_cls(message=payload)
        while not self.stop.is_set() and self.sent * len(payload) < max_bytes:
            yield request
            self.sent += 1
        self.stop.wait(self.args.bound_s)

    def run(self):
        channel = grpc.insecure_channel(self.args.target)
        bound = self.args.bound_s
        start = time.monotonic()
        try:
            if self.args.mode == "stall" and self.args.method == "Collect":
                self.stub(channel, "stream_unary")(
                    self.stalled_requests(self.args.messages, "part"),
                    timeout=bound)
            elif self.args.mode == "stall":
                # One request, one response, in lockstep; then silence.
                answered = threading.Event()
                responses = self.stub(channel, "stream_stream")(
                    self.stalled_requests(self.args.messages, "line",
                                          answered), timeout=bound)
                for _ in responses:
                    self.received += 1
                    answered.set()
            else:
                read_now = threading.Event()
                signal.signal(signal.SIGUSR1, lambda *_: read_now.set())
                responses = self.stub(channel, "stream_stream")(
                    self.flood("x" * self.args.message_bytes,
                               self.args.max_mb << 20), timeout=bound)
                print("flooding", flush=True)
                read_now.wait(bound + 5)
                self.stop.set()
                # Responses that arrived before the end are read now, so
                # gRPC can hand over the status.
                try:
                    for _ in responses:
                        self.received += 1
                except grpc.RpcError:
                    pass
                return self.report(responses.code(), responses.details(),
                                   start)
        except grpc.RpcError as e:
            self.stop.set()
            return self.report(e.code(), e.details(), start)
        finally:
            self.stop.set()
        self.report(grpc.StatusCode.OK, "", start)
        return 1

    def report(self, code, details, start):
        print("status %s after %d ms: %s (sent %d, received %d)" %
              (code.name, (time.monotonic() - start) * 1000, details,
               self.sent, self.received))
        sys.stdout.flush()
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and \
                "reqctx" not in (details or ""):
            # Our own --bound_s deadline, not the server's cut.
            return 2
        return 0 if code != grpc.StatusCode.OK else 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--mode", choices=["stall", "noread"], required=True)
    parser.add_argument("--method", choices=["Chat", "Collect"],
                        default="Chat")
    parser.add_argument("--messages", type=int, default=2)
    parser.add_argument("--message_bytes", type=int, default=256 * 1024)
    parser.add_argument("--max_mb", type=int, default=256)
    parser.add_argument("--bound_s", type=float, default=60)
    args = parser.parse_args()
    if args.mode == "noread":
        args.method = "Chat"
    return Peer(args).run()


if __name__ == "__main__":
    sys.exit(main())
