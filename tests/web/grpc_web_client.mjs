// A third-party gRPC-Web client, Connect's from npm, calling the server the way a web app's
// backend-for-frontend or a Node service would.
//
//   node grpc_web_client.mjs HOST:PORT DESCRIPTOR_SET HTTP_VERSION [TEXT...]
//
// DESCRIPTOR_SET is the encoded FileDescriptorSet of proto/ (the Rust test writes
// formatdata::pb::FILE_DESCRIPTOR_SET there): the service is described at run time, so there is
// no protoc and no generated JavaScript. HTTP_VERSION is 1.1 or 2. Prints `received: REPLY` for
// DoFormat, then `stream: A|B` for the lines sent through DoFormatStream (over HTTP/2 only:
// gRPC-Web over HTTP/1.1 cannot stream requests).
import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-node";

const [addr, descriptorSet, httpVersion, ...words] = process.argv.slice(2);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptorSet)));
const FormatData = registry.getService("example.FormatData");
const client = createClient(
  FormatData,
  createGrpcWebTransport({ baseUrl: `http://${addr}`, httpVersion }),
);

try {
  const reply = await client.doFormat({ text: words.length ? words.join(" ") : "hello,world!" });
  console.log(`received: ${reply.text}`);
  if (httpVersion === "2") {
    async function* lines() {
      yield { text: "streamed ß" };
      yield { text: "second ﬁ" };
    }
    const replies = [];
    for await (const reply of client.doFormatStream(lines())) replies.push(reply.text);
    console.log(`stream: ${replies.join("|")}`);
  }
} catch (error) {
  // A ConnectError: one line with its gRPC code, as our own client prints failures.
  console.error(`client: ${error.message}`);
  process.exit(1);
}
