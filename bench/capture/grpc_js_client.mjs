// The grpc-js client of bench/capture-headers.sh: one DoFormat call with grpc-js's defaults, the
// message passed as raw bytes so no generated code is needed. Usage: node grpc_js_client.mjs HOST:PORT
import * as grpc from "@grpc/grpc-js";

const raw = { serialize: (bytes) => bytes, deserialize: (bytes) => bytes };
const FormatData = grpc.makeGenericClientConstructor({
  DoFormat: {
    path: "/example.FormatData/DoFormat",
    requestStream: false,
    responseStream: false,
    requestSerialize: raw.serialize,
    requestDeserialize: raw.deserialize,
    responseSerialize: raw.serialize,
    responseDeserialize: raw.deserialize,
  },
});
const client = new FormatData(process.argv[2], grpc.credentials.createInsecure());
// example.Data{text: "hello,world!"}
const request = Buffer.concat([Buffer.from([0x0a, 12]), Buffer.from("hello,world!")]);
client.DoFormat(request, (error, reply) => {
  if (error) {
    console.error(error.message);
    process.exit(1);
  }
  console.log(`reply: ${JSON.stringify(reply.toString("latin1"))}`);
  client.close();
});
