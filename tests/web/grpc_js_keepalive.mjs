// grpc-js, the Node.js gRPC library, with the most eager keepalive it allows (a ping every 1000 ms,
// also between calls): the server's limit on control frames must never cut it off. Calls DoFormat
// every 100 ms for SECONDS, rests as long again with only pings on the wire, calls once more, and
// prints one JSON object: calls that succeeded, and the errors of those that failed.
// Usage: node grpc_js_keepalive.mjs HOST:PORT SECONDS
import * as grpc from "@grpc/grpc-js";

const [target, seconds] = [process.argv[2], Number(process.argv[3])];
const raw = (bytes) => bytes;
const FormatData = grpc.makeGenericClientConstructor({
  DoFormat: {
    path: "/example.FormatData/DoFormat",
    requestStream: false,
    responseStream: false,
    requestSerialize: raw,
    requestDeserialize: raw,
    responseSerialize: raw,
    responseDeserialize: raw,
  },
});
const client = new FormatData(target, grpc.credentials.createInsecure(), {
  "grpc.keepalive_time_ms": 1000,
  "grpc.keepalive_timeout_ms": 1000,
  "grpc.keepalive_permit_without_calls": 1,
});
// example.Data{text: "ping"}
const request = Buffer.concat([Buffer.from([0x0a, 4]), Buffer.from("ping")]);
const call = () =>
  new Promise((resolve) =>
    client.DoFormat(request, { deadline: Date.now() + 5000 }, (error, reply) =>
      resolve(error ? error.message : reply.subarray(2).toString() === "PING" ? null : "wrong reply"),
    ),
  );
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let ok = 0;
const errors = [];
const record = (error) => (error ? errors.push(error) : ok++);
for (let i = 0; i < seconds * 10; i++) {
  record(await call());
  await sleep(100);
}
await sleep(seconds * 1000);
record(await call());
client.close();
console.log(JSON.stringify({ ok, errors }));
