// Connect-ES's Connect transport (the default transport of Connect clients), from npm, calling
// the server's Connect protocol the way a Node service would.
//
//   node connect_client.mjs HOST:PORT DESCRIPTOR_SET HTTP_VERSION FORMAT [TEXT...]
//
// DESCRIPTOR_SET is the encoded FileDescriptorSet of proto/, as for grpc_web_client.mjs.
// HTTP_VERSION is 1.1 or 2; FORMAT is json or binary. Prints `received: REPLY` for DoFormat.
import { readFileSync } from "node:fs";
import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";

const [addr, descriptorSet, httpVersion, format, ...words] = process.argv.slice(2);
const registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(descriptorSet)));
const FormatData = registry.getService("example.FormatData");
const client = createClient(
  FormatData,
  createConnectTransport({
    baseUrl: `http://${addr}`,
    httpVersion,
    useBinaryFormat: format === "binary",
  }),
);

try {
  const reply = await client.doFormat({ text: words.length ? words.join(" ") : "hello,world!" });
  console.log(`received: ${reply.text}`);
} catch (error) {
  // A ConnectError: one line with its code, as our own client prints failures.
  console.error(`client: ${error.message}`);
  process.exit(1);
}
