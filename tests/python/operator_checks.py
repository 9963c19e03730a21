"""What an operator's grpcio tooling sees of a FormatData server: health, reflection, raw bytes,
TLS, auth and compression. Each check prints one JSON object on stdout for the Rust tests.

Usage: operator_checks.py CHECK TARGET [ARGS...]; stubs (data_pb2) come from PYTHONPATH.
"""
import json
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import data_pb2
import data_pb2_grpc

DO_FORMAT = "/example.FormatData/DoFormat"


def emit(**fields):
    print(json.dumps(fields), flush=True)


def code_of(call):
    """Runs call(); returns the status code name ("OK" when it succeeded) and the reply."""
    try:
        return "OK", call()
    except grpc.RpcError as error:
        return error.code().name, error.details()


def health(target):
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
    statuses = {}
    for service in ["", "example.FormatData"]:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        statuses[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    emit(statuses=statuses)


def watch(target):
    """Prints each status the Watch stream reports, until the stream ends."""
    stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
    code, _ = code_of(lambda: [
        emit(status=health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))
        for reply in stub.Watch(health_pb2.HealthCheckRequest(service=""))
    ])
    emit(ended=code)


def reflection(target):
    database = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(target))
    services = list(database.get_services())
    data_file = database.FindFileContainingSymbol("example.Data")
    emit(
        services=services,
        data_file=data_file.name,
        data_messages=[message.name for message in data_file.message_type],
    )


def raw(target):
    """Bytes sent as they are (identity serializers), each followed by a normal call."""
    channel = grpc.insecure_channel(target)
    raw_call = channel.unary_unary(DO_FORMAT)  # no serializers: bytes in, bytes out
    stub = data_pb2_grpc.FormatDataStub(channel)
    five_mib = data_pb2.Data(text="a" * (5 * 1024 * 1024)).SerializeToString()
    cases = {
        "garbage": b"\xff" * 7,
        "non_utf8": b"\x0a\x03a\xff\xfe",
        "five_mib": five_mib,
    }
    results = {}
    for name, payload in cases.items():
        code, details = code_of(lambda: raw_call(payload, timeout=10))
        after, reply = code_of(lambda: stub.DoFormat(data_pb2.Data(text="next"), timeout=10))
        results[name] = {
            "code": code,
            "details": details if code != "OK" else "",
            "next_call": after,
            "next_reply": reply.text if after == "OK" else "",
        }
    emit(**results)


def tls(target, ca, cert=None, key=None):
    read = lambda path: open(path, "rb").read() if path else None
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(ca), private_key=read(key), certificate_chain=read(cert)
    )
    channel = grpc.secure_channel(
        target, credentials, options=[("grpc.ssl_target_name_override", "localhost")]
    )
    call_and_emit(data_pb2_grpc.FormatDataStub(channel))


def plaintext(target):
    call_and_emit(data_pb2_grpc.FormatDataStub(grpc.insecure_channel(target)))


def auth(target, token=None):
    channel = grpc.insecure_channel(target)
    metadata = [("authorization", "Bearer " + token)] if token else None
    stub = data_pb2_grpc.FormatDataStub(channel)
    code, reply = code_of(
        lambda: stub.DoFormat(data_pb2.Data(text="hello,world!"), metadata=metadata, timeout=10)
    )
    health_stub = health_pb2_grpc.HealthStub(channel)
    health_reply = health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
    emit(
        code=code,
        received=reply.text if code == "OK" else "",
        health=health_pb2.HealthCheckResponse.ServingStatus.Name(health_reply.status),
    )


def gzip(target):
    channel = grpc.insecure_channel(target, compression=grpc.Compression.Gzip)
    call_and_emit(data_pb2_grpc.FormatDataStub(channel))


def stream(target, count):
    """Streams COUNT messages through DoFormatStream; checks every reply, in order."""
    stub = data_pb2_grpc.FormatDataStub(grpc.insecure_channel(target))
    count = int(count)
    requests = (data_pb2.Data(text="message %d \u00df" % n) for n in range(count))
    received = 0
    in_order = True
    for n, reply in enumerate(stub.DoFormatStream(requests)):
        in_order = in_order and reply.text == "MESSAGE %d SS" % n
        received += 1
    emit(received=received, in_order=in_order)


def stream_across_shutdown(target):
    """Opens a stream, says "open", then waits for a line on stdin (sent once the server has
    been told to stop) before sending more messages on the same stream."""
    import queue
    import threading

    stub = data_pb2_grpc.FormatDataStub(grpc.insecure_channel(target))
    outbox = queue.Queue()
    requests = iter(outbox.get, None)
    replies = stub.DoFormatStream(requests)
    outbox.put(data_pb2.Data(text="before"))
    first = next(replies).text
    emit(open=first)
    sys.stdin.readline()
    after = ["after %d" % n for n in range(100)]
    got = []

    def send():
        for text in after:
            outbox.put(data_pb2.Data(text=text))
        outbox.put(None)

    threading.Thread(target=send).start()
    code, _ = code_of(lambda: got.extend(reply.text for reply in replies))
    emit(code=code, replies_after=len(got), all_right=got == [t.upper() for t in after])


def call_and_emit(stub):
    code, reply = code_of(lambda: stub.DoFormat(data_pb2.Data(text="hello,world!"), timeout=10))
    emit(code=code, received=reply.text if code == "OK" else "")


CHECKS = {
    f.__name__: f
    for f in [health, watch, reflection, raw, tls, plaintext, auth, gzip, stream, stream_across_shutdown]
}

if __name__ == "__main__":
    CHECKS[sys.argv[1]](*sys.argv[2:])
