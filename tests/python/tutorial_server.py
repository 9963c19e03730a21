"""The tutorial's grpcio server: replies with the text uppercased by str.upper().

Written from the tutorial in shared/seed; the additions let tests use it: an optional address
(port 0 picks a free one), a line on stdout with the port it got, and a clean exit on SIGTERM.
"""
import signal
import sys
from concurrent import futures

import grpc

import data_pb2
import data_pb2_grpc


class FormatData(data_pb2_grpc.FormatDataServicer):
    def DoFormat(self, request, context):
        return data_pb2.Data(text=request.text.upper())


def serve(address):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    data_pb2_grpc.add_FormatDataServicer_to_server(FormatData(), server)
    port = server.add_insecure_port(address)
    server.start()
    print("listening on port %d" % port, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


if __name__ == '__main__':
    serve(sys.argv[1] if len(sys.argv) > 1 else 'localhost:8080')
