// Connect-ES's Connect transport (the default transport of Connect clients), from npm, calling
// the server's Connect protocol the way a Node service would.
//
//   node connect_client.mjs HOST:PORT DESCRIPTOR_SET HTTP_VERSION FORMAT CALL [TEXT...]
//
// DESCRIPTOR_SET is the encoded FileDescriptorSet of proto/, as for grpc_web_client.mjs.
// HTTP_VERSION is 1.1 or 2; FORMAT is json or binary. CALL is `post` (DoFormat), `get`
// (DoFormat as a GET, which its NO_SIDE_EFFECTS option allows) or `stream` (DoFormatStream, one
// message per TEXT). Prints `sent: METHOD` for the HTTP method of a unary call, then
// `received: REPLY` for each reply.
import { readFileSync } from "node:fs";
import { Agent } from "node:http";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { Http2SessionManager, createConnectTransport } from "@connectrpc/connect-node";

const [addr, descriptorSet, httpVersion, format, call, ...words] = process.argv.slice(2);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptorSet)));
const FormatData = registry.getService("example.FormatData");
// The HTTP method of each unary call, as it goes on the wire (the transport picks GET after any
// interceptor has run): seen by the HTTP/1.1 agent, or the HTTP/2 session manager.
const unary = call !== "stream";
const seen = (method) => unary && console.log(`sent: ${method}`);
class SeeingAgent extends Agent {
  addRequest(request, options) {
    seen(request.method);
    return super.addRequest(request, options);
  }
}
class SeeingSessions extends Http2SessionManager {
  request(method, path, headers, options) {
    seen(method);
    return super.request(method, path, headers, options);
  }
}
const baseUrl = `http://${addr}`;
const client = createClient(
  FormatData,
  createConnectTransport({
    baseUrl,
    httpVersion,
    nodeOptions: { agent: new SeeingAgent() },
    sessionManager: new SeeingSessions(baseUrl),
    useBinaryFormat: format === "binary",
    useHttpGet: call === "get",
  }),
);

async function* requests() {
  for (const text of words) {
    yield { text };
  }
}

try {
  if (call === "stream") {
    for await (const reply of client.doFormatStream(requests())) {
      console.log(`received: ${reply.text}`);
    }
  } else {
    const reply = await client.doFormat({ text: words.length ? words.join(" ") : "hello,world!" });
    console.log(`received: ${reply.text}`);
  }
} catch (error) {
  // A ConnectError: one line with its code, as our own client prints failures.
  console.error(`client: ${error.message}`);
  process.exit(1);
}
