#!/usr/bin/python3
"""A live Python grpcio client (Debian python3-grpcio, python3-protobuf)
against a chain of reqctx echo servers: it reads the budget ledger from
grpc-status-details-bin as any Python gRPC service would, with no code
generated from reqctx (issue 21, section 3: interop).

    ledger_python_interop.py DESCRIPTOR_SET --frontend=H:P --middle=H:P
        --work_ms=N --budget_ms=N --margin_ms=N [--bound_s=60]

--frontend is the first of three hops (frontend -> middle -> backend) and
--middle the second; the backend has --reply_margin_ms=margin_ms. Two calls:
  1. the frontend, OK, with `reqctx-ledger: always` and --ok_budget_ms
     (900: under 1 s gRPC C++ sends grpc-timeout exactly): the whole tree comes
     back (hop names, each hop's work, budgets that only shrink, the trace);
  2. the middle with budget_ms and work_ms per hop, so the budget runs out in
     the backend's work: DEADLINE_EXCEEDED with the ledger naming the backend,
     its cause, and shares that add up to the budget within a tolerance.
google.rpc.Status comes from the descriptor set (proto/google/rpc/*.proto):
Debian 12 ships neither grpcio-status (grpc_status.rpc_status) nor
googleapis-common-protos, and the messages are the same. Prints
"python-interop: ..." lines, "python-interop: done" when every check
passed; "skip: ..." (exit 3) when grpc cannot be imported.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Exits 3 with a skip line when grpc or protobuf cannot be imported.
from python_stream_peer import echo_messages  # noqa: E402
from ledger_python_decode import message_class  # noqa: E402

import grpc  # noqa: E402
from google.protobuf import descriptor_pb2, descriptor_pool  # noqa: E402

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = "00-%s-00f067aa0ba902b7-01" % TRACE_ID
LEDGER_URL = "type.googleapis.com/reqctx.v1.BudgetLedger"


def say(*args):
    print("python-interop:", *args)
    sys.stdout.flush()


class Schema:
    """The documented schema: a FileDescriptorSet of proto/google/rpc and
    proto/reqctx/v1."""

    def __init__(self, path):
        with open(path, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        self.pool = descriptor_pool.DescriptorPool()
        for file_proto in fds.file:
            self.pool.Add(file_proto)
        self.Status = message_class(self.pool, "google.rpc.Status")
        self.cause = self.pool.FindEnumTypeByName("reqctx.v1.Cause")

    def status(self, call):
        """google.rpc.Status from a finished call's trailers, and its details
        unpacked by type URL: {full name: message}."""
        raw = [v for k, v in (call.trailing_metadata() or ())
               if k == "grpc-status-details-bin"]
        assert len(raw) == 1, "grpc-status-details-bin: %d" % len(raw)
        st = self.Status.FromString(raw[0])
        details = {}
        for any_msg in st.details:
            name = any_msg.type_url.rsplit("/", 1)[1]
            msg = message_class(self.pool, name)()
            msg.ParseFromString(any_msg.value)
            details.setdefault(name, msg)
        return st, details

    def cause_name(self, hop):
        return self.cause.values_by_number[hop.cause].name


def wire_slack_us(budget_us):
    """How much later a deadline of `budget_us` may arrive than it was sent:
    gRPC C++ writes grpc-timeout exactly (in ms) below 1 s, in 10 ms units
    below 10 s, in 100 ms units above."""
    if budget_us < 1000000:
        return 1000
    return 10000 if budget_us < 10000000 else 100000


def total_us(hop):
    return hop.queued_us + hop.work_us + hop.outbound_us


def path(root):
    """The hops along the first outbound call that returned a ledger."""
    hops = [root]
    while True:
        nested = [o.ledger for o in hops[-1].outbound if o.HasField("ledger")]
        if not nested:
            return hops
        hops.append(nested[0])


def ok_call_returns_whole_tree(args, schema, stub):
    response, call = stub.with_call(
        args.request_cls(message="python", work_ms=args.short_work_ms),
        timeout=args.ok_budget_ms / 1000.0,
        metadata=[("reqctx-ledger", "always"), ("traceparent", TRACEPARENT)])
    assert call.code() == grpc.StatusCode.OK, call.code()
    assert response.trace_id == TRACE_ID, response.trace_id
    st, details = schema.status(call)
    assert st.code == 0, st.code
    ledger = details["reqctx.v1.BudgetLedger"]
    hops = path(ledger.root)
    assert [h.host for h in hops] == ["frontend", "middle", "backend"], \
        [h.host for h in hops]
    previous = args.ok_budget_ms * 1000
    for h in hops:
        assert h.method == "/echo.v1.Echo/Echo", h.method
        assert h.code == 0 and schema.cause_name(h) == "CAUSE_UNSPECIFIED", h
        # The deadline only shrinks along the chain.
        assert h.HasField("budget_us") and \
            0 < h.budget_us <= previous + wire_slack_us(previous), \
            (h.host, h.budget_us, previous)
        previous = h.budget_us
        # Each hop's own share is its work (a timer: never shorter).
        assert h.work_us >= args.short_work_ms * 1000 * 0.95, (h.host, h.work_us)
        assert total_us(h) <= h.budget_us
    for parent, child in zip(hops, hops[1:]):
        call_out = parent.outbound[0]
        assert call_out.sent and call_out.code == 0
        # The outbound call took at least what the callee spent.
        assert call_out.took_us >= total_us(child), (call_out, child)
        assert child.budget_us <= \
            call_out.budget_us + wire_slack_us(call_out.budget_us), \
            (call_out.budget_us, child.budget_us)
    info = details["google.rpc.ErrorInfo"]
    assert info.domain == "reqctx.dev" and info.metadata["hop"] == "frontend"
    say("ok call:", details["google.rpc.DebugInfo"].detail)


def deadline_runs_out_in_backend(args, schema, stub):
    budget_us = args.budget_ms * 1000
    try:
        stub(args.request_cls(message="python", work_ms=args.work_ms),
             timeout=args.budget_ms / 1000.0,
             metadata=[("traceparent", TRACEPARENT)])
        raise AssertionError("the call succeeded")
    except grpc.RpcError as call:
        assert call.code() == grpc.StatusCode.DEADLINE_EXCEEDED, \
            (call.code(), call.details())
        st, details = schema.status(call)
        message = call.details()
    # Code and message agree with grpc-status / grpc-message (grpc-go's
    # client takes them from the details when they are there).
    assert st.code == 4, st.code
    assert st.message == message, (st.message, message)
    urls = [d.type_url for d in st.details]
    assert urls == [LEDGER_URL, "type.googleapis.com/google.rpc.ErrorInfo",
                    "type.googleapis.com/google.rpc.DebugInfo"], urls
    ledger = details["reqctx.v1.BudgetLedger"]
    assert ledger.version == 1
    hops = path(ledger.root)
    assert [h.host for h in hops] == ["middle", "backend"], \
        [h.host for h in hops]
    middle, backend = hops
    assert middle.code == 4 and backend.code == 4, (middle, backend)
    # Python's grpc turns the timeout into a deadline rounded up to whole
    # ms and writes grpc-timeout against its core's cached clock, which may
    # lag by a few ms on a loaded machine: the middle may read a little
    # more than the timeout (CI saw it once), never much more.
    assert middle.budget_us <= budget_us + 5000, \
        (middle.budget_us, budget_us)
    # The middle hop did its work; the backend got what was left.
    assert middle.work_us >= args.work_ms * 1000 * 0.95, middle.work_us
    assert backend.budget_us < middle.budget_us - middle.work_us, \
        (backend.budget_us, middle.budget_us, middle.work_us)
    # The backend is where it ran out: its handler ended at its reply margin
    # (or its deadline), before its work_ms was done.
    assert backend.work_us < args.work_ms * 1000, backend.work_us
    assert backend.HasField("reply_margin_us")
    assert schema.cause_name(backend) in ("CALLER_DEADLINE", "REPLY_MARGIN"), \
        schema.cause_name(backend)
    assert backend.deadline_set_by in ("", "middle"), backend.deadline_set_by
    # The shares (each hop's own, plus the transit between them) add up to
    # the budget within a tolerance: the 3% + 2 ms each hop keeps back, the
    # reply margin, and 5% for the transits and replies.
    transit = max(middle.outbound[0].took_us - total_us(backend), 0)
    shares = middle.queued_us + middle.work_us + transit + total_us(backend)
    tolerance = budget_us * 0.08 + args.margin_ms * 1000 + 10000
    assert budget_us - tolerance <= shares <= budget_us + 5000, \
        (shares, budget_us, tolerance)
    info = details["google.rpc.ErrorInfo"]
    assert info.domain == "reqctx.dev" and info.metadata["hop"] == "middle"
    line = details["google.rpc.DebugInfo"].detail
    assert "backend" in line and "here" in line, line
    say("deadline: %s (shares %.1f ms of %d ms)" %
        (line, shares / 1000.0, args.budget_ms))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("descriptor_set")
    parser.add_argument("--frontend", required=True)
    parser.add_argument("--middle", required=True)
    parser.add_argument("--work_ms", type=int, required=True)
    parser.add_argument("--short_work_ms", type=int, default=20)
    parser.add_argument("--ok_budget_ms", type=int, default=900)
    parser.add_argument("--budget_ms", type=int, required=True)
    parser.add_argument("--margin_ms", type=int, required=True)
    parser.add_argument("--bound_s", type=float, default=60)
    args = parser.parse_args()
    args.request_cls, response_cls = echo_messages()
    schema = Schema(args.descriptor_set)

    def echo(target):
        channel = grpc.insecure_channel(target)
        return channel, channel.unary_unary(
            "/echo.v1.Echo/Echo",
            request_serializer=args.request_cls.SerializeToString,
            response_deserializer=response_cls.FromString)

    frontend_channel, frontend = echo(args.frontend)
    middle_channel, middle = echo(args.middle)
    with frontend_channel, middle_channel:
        ok_call_returns_whole_tree(args, schema, frontend)
        deadline_runs_out_in_backend(args, schema, middle)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
