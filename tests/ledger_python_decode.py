#!/usr/bin/python3
"""Decodes what reqctx sends in grpc-status-details-bin with nothing but
python3-protobuf and the documented schema (a FileDescriptorSet protoc made
from proto/google/rpc/*.proto and proto/reqctx/v1/ledger.proto): no code
generated from reqctx, as any gRPC language's client would.

    ledger_python_decode.py DESCRIPTOR_SET DETAILS LINE
"""
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def message_class(pool, name):
    desc = pool.FindMessageTypeByName(name)
    if hasattr(message_factory, "GetMessageClass"):
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(pool).GetPrototype(desc)


def main():
    fds_path, details_path, line_path = sys.argv[1:4]
    with open(fds_path, "rb") as f:
        fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for file_proto in fds.file:
        pool.Add(file_proto)
    Status = message_class(pool, "google.rpc.Status")
    with open(details_path, "rb") as f:
        status = Status.FromString(f.read())
    with open(line_path) as f:
        line = f.read().strip()

    assert status.code == 4, status.code  # DEADLINE_EXCEEDED
    assert status.message == "deadline exceeded", status.message
    urls = [d.type_url for d in status.details]
    assert urls == ["type.googleapis.com/reqctx.v1.BudgetLedger",
                    "type.googleapis.com/google.rpc.ErrorInfo",
                    "type.googleapis.com/google.rpc.DebugInfo"], urls
    unpacked = []
    for any_msg in status.details:
        name = any_msg.type_url.rsplit("/", 1)[1]
        msg = message_class(pool, name)()
        msg.ParseFromString(any_msg.value)
        unpacked.append(msg)
    ledger, info, debug = unpacked

    assert ledger.version == 1
    root = ledger.root
    assert root.host == "frontend" and root.method == "/echo.v1.Echo/Echo"
    assert root.HasField("budget_us") and root.budget_us == 250000
    assert root.queued_us == 400 and root.work_us == 50100, root
    assert root.outbound_us == 199000
    assert root.code == 4
    cause = pool.FindEnumTypeByName("reqctx.v1.Cause")
    assert cause.values_by_number[root.cause].name == "CALLER_DEADLINE"
    assert len(root.outbound) == 1
    call = root.outbound[0]
    assert call.budget_us == 199000 and call.took_us == 199000
    assert call.code == 4 and call.sent
    middle = call.ledger
    assert middle.host == "middle" and middle.budget_us == 199000
    assert middle.work_us == 150200 and middle.deadline_set_by == "frontend"
    assert middle.reply_margin_us == -200
    assert len(middle.outbound) == 1 and not middle.outbound[0].sent
    assert not middle.outbound[0].HasField("ledger")

    assert info.domain == "reqctx.dev" and info.reason == "CALLER_DEADLINE"
    assert info.metadata["hop"] == "frontend"
    assert list(debug.stack_entries) == ["reqctx.dev/ledger"]
    assert debug.detail == line, (debug.detail, line)
    print("decoded:", debug.detail)


if __name__ == "__main__":
    main()
