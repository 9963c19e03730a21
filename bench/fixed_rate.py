"""A real client library at a fixed rate, for bench/compare.sh's latency row: grpcio's asyncio API
(the library of the seed tutorial's client, with its default channel: it lists gzip in
grpc-accept-encoding on every call) calls DoFormat RATE times a second for DURATION seconds on
one channel, open loop (each call starts when it is due, and a late one counts from then), after
a second of warm-up. Prints one JSON object: the rate, the calls, errors, and p50/p99 in us.

Usage: python fixed_rate.py HOST:PORT RATE DURATION
"""
import asyncio
import json
import sys
import time

import grpc

# example.Data{text: "hello,world!"}, as the bytes on the wire: no generated code needed.
REQUEST = b"\x0a\x0chello,world!"


async def run(target, rate, duration):
    async with grpc.aio.insecure_channel(target) as channel:
        do_format = channel.unary_unary("/example.FormatData/DoFormat")
        await do_format(REQUEST)
        latencies, errors = [], 0

        async def one(due, measured):
            nonlocal errors
            try:
                await do_format(REQUEST, timeout=10)
            except grpc.RpcError:
                errors += measured
                return
            if measured:
                latencies.append(time.perf_counter() - due)

        warmup = rate
        calls = warmup + int(rate * duration)
        start = time.perf_counter()
        tasks = []
        for i in range(calls):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(due, i >= warmup)))
        await asyncio.gather(*tasks)
    latencies.sort()
    quantile = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6)
    return {
        "rate": rate,
        "calls": len(latencies),
        "errors": errors,
        "p50_us": quantile(0.50) if latencies else None,
        "p99_us": quantile(0.99) if latencies else None,
    }


if __name__ == "__main__":
    target, rate, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(asyncio.run(run(target, rate, duration))))
