"""The tutorial's grpcio client: sends 'hello,world!' and prints the reply.

Written from the tutorial in shared/seed; the only addition is an optional target address, so the
tests can point it at a server on a free port. Import data_pb2/data_pb2_grpc from PYTHONPATH,
generated from proto/data.proto by grpc_tools.protoc at test time.
"""
import sys

import grpc

import data_pb2
import data_pb2_grpc


def run(target):
    conn = grpc.insecure_channel(target)
    client = data_pb2_grpc.FormatDataStub(channel=conn)
    response = client.DoFormat(data_pb2.Data(text='hello,world!'))
    print("received: " + response.text)


if __name__ == '__main__':
    run(sys.argv[1] if len(sys.argv) > 1 else 'localhost:8080')
