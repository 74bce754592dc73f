#!/usr/bin/python3
"""An independent echo.v1 client in Python (Debian python3-grpcio), to check
that reqctx's servers interoperate using only standard metadata.

    /usr/bin/python3 tools/python_echo_client.py --target=127.0.0.1:PORT
        [--work_ms=N] [--timeout_ms=N] [--traceparent=00-...-01]
        [--cancel_after_ms=N]

Generates the message classes from proto/echo.proto with the system protoc
into a temporary directory (no build step). Prints each hop like the C++
client. Exits 0 on success, 1 on an RPC error.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import grpc


def load_messages():
    proto_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")
    out = tempfile.mkdtemp(prefix="echo_pb_")
    subprocess.run(["protoc", "-I" + proto_dir, "--python_out=" + out,
                    os.path.join(proto_dir, "echo.proto")], check=True)
    sys.path.insert(0, out)
    import echo_pb2  # noqa: E402 (generated above)
    return echo_pb2


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--message", default="hello from python")
    parser.add_argument("--work_ms", type=int, default=0)
    parser.add_argument("--timeout_ms", type=int, default=0)
    parser.add_argument("--traceparent", default="")
    parser.add_argument("--cancel_after_ms", type=int, default=0)
    args = parser.parse_args()

    pb = load_messages()
    channel = grpc.insecure_channel(args.target)
    echo = channel.unary_unary(
        "/echo.v1.Echo/Echo",
        request_serializer=pb.EchoRequest.SerializeToString,
        response_deserializer=pb.EchoResponse.FromString)
    metadata = [("traceparent", args.traceparent)] if args.traceparent else None
    timeout = args.timeout_ms / 1000.0 if args.timeout_ms > 0 else None
    request = pb.EchoRequest(message=args.message, work_ms=args.work_ms)
    start = time.monotonic()
    future = echo.future(request, timeout=timeout, metadata=metadata)
    if args.cancel_after_ms > 0:
        time.sleep(args.cancel_after_ms / 1000.0)
        future.cancel()
    try:
        response = future.result()
    except grpc.FutureCancelledError:
        print("error: CANCELLED (by this client) after %.0f ms" %
              ((time.monotonic() - start) * 1000))
        return 1
    except grpc.RpcError as e:
        print("error: %s: %s after %.0f ms" % (e.code().name, e.details(),
                                              (time.monotonic() - start) * 1000))
        return 1
    print("message:  %s\ntrace id: %s" % (response.message, response.trace_id))
    for i, hop in enumerate(response.hops):
        remaining = ("none" if hop.deadline_remaining_ms < 0
                     else "%d ms" % hop.deadline_remaining_ms)
        print("hop %d: %-10s trace %s span %s deadline remaining %s" %
              (i, hop.service, hop.trace_id, hop.span_id, remaining))
    return 0


if __name__ == "__main__":
    sys.exit(main())
