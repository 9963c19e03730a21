// The playground: gRPC-Web framed by hand over fetch, no library, no build step.
"use strict";
// gRPC status names by code, as gRPC prints them.
const CODES = ["OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
  "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"];
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

// example.Data { string text = 1; }: tag 0x0a, varint length, UTF-8 bytes.
function encodeData(text) {
  const bytes = utf8.encode(text);
  const head = [0x0a];
  for (let n = bytes.length; ; n = Math.floor(n / 128)) {
    if (n < 128) { head.push(n); break; }
    head.push((n % 128) | 0x80);
  }
  const message = new Uint8Array(head.length + bytes.length);
  message.set(head);
  message.set(bytes, head.length);
  return message;
}

function readVarint(bytes, at) {
  let value = 0, scale = 1;
  for (;;) {
    if (at >= bytes.length) throw new Error("truncated varint");
    const byte = bytes[at++];
    value += (byte & 0x7f) * scale;
    if (byte < 0x80) return [value, at];
    scale *= 128;
  }
}

function decodeData(bytes) {
  let text = "", at = 0;
  while (at < bytes.length) {
    let key;
    [key, at] = readVarint(bytes, at);
    const field = Math.floor(key / 8), wire = key % 8;
    if (wire === 0) { [, at] = readVarint(bytes, at); continue; }
    if (wire === 1) { at += 8; continue; }
    if (wire === 5) { at += 4; continue; }
    if (wire !== 2) throw new Error("unexpected wire type " + wire);
    let length;
    [length, at] = readVarint(bytes, at);
    if (field === 1) text = fromUtf8.decode(bytes.subarray(at, at + length));
    at += length;
  }
  return text;
}

// A gRPC-Web frame: flag byte (0x80 = trailers), big-endian length, payload.
function frame(message) {
  const framed = new Uint8Array(5 + message.length);
  new DataView(framed.buffer).setUint32(1, message.length);
  framed.set(message, 5);
  return framed;
}

function parseTrailers(text) {
  const trailers = {};
  for (const line of text.split("\r\n")) {
    const colon = line.indexOf(":");
    if (colon > 0) trailers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  return trailers;
}

function statusOf(fields) {
  const code = Number(fields["grpc-status"]);
  let message = fields["grpc-message"] || "";
  try { message = decodeURIComponent(message); } catch { /* shown as sent */ }
  return { code, name: CODES[code] || "UNKNOWN", message };
}

// Calls `method` with `texts` as its request messages; `onReply(text)` gets each reply as it
// arrives. Resolves to the call's status: { code, name, message }.
async function call(method, texts, onReply) {
  const body = new Blob(texts.map((text) => frame(encodeData(text))));
  let response;
  try {
    response = await fetch("/example.FormatData/" + method, {
      method: "POST",
      headers: {
        "content-type": "application/grpc-web+proto",
        "x-grpc-web": "1",
        "x-user-agent": "formatdata-playground/1",
        "grpc-timeout": "10S",
      },
      body,
    });
  } catch (error) {
    return { code: 14, name: "UNAVAILABLE", message: "cannot reach the server: " + error.message };
  }
  if (!response.ok) {
    return { code: 2, name: "UNKNOWN", message: "HTTP " + response.status };
  }
  if (response.headers.has("grpc-status")) {
    // Trailers-only: the call failed before any reply.
    return statusOf(Object.fromEntries(response.headers));
  }
  const reader = response.body.getReader();
  let buffered = new Uint8Array(0);
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (error) {
      return { code: 14, name: "UNAVAILABLE", message: "the connection broke: " + error.message };
    }
    const { value, done } = chunk;
    if (value) {
      const joined = new Uint8Array(buffered.length + value.length);
      joined.set(buffered);
      joined.set(value, buffered.length);
      buffered = joined;
    }
    while (buffered.length >= 5) {
      const length = new DataView(buffered.buffer, buffered.byteOffset).getUint32(1);
      if (buffered.length < 5 + length) break;
      const flag = buffered[0], payload = buffered.subarray(5, 5 + length);
      buffered = buffered.subarray(5 + length);
      if (flag & 0x80) return statusOf(parseTrailers(fromUtf8.decode(payload)));
      try {
        onReply(decodeData(payload));
      } catch (error) {
        return { code: 13, name: "INTERNAL", message: "cannot decode a reply: " + error.message };
      }
    }
    if (done) return { code: 13, name: "INTERNAL", message: "the reply ended without a status" };
  }
}

function showStatus(element, status, detail) {
  element.replaceChildren();
  const name = document.createElement("span");
  name.className = status.code === 0 ? "ok" : "error";
  name.textContent = status.name;
  element.append(name, (status.message ? ": " + status.message : "") + (detail ? " · " + detail : ""));
}

function ms(milliseconds) {
  return milliseconds < 10 ? milliseconds.toFixed(1) + " ms" : Math.round(milliseconds) + " ms";
}

// Uppercase as you type: one DoFormat per change; only the newest call's reply is shown.
const input = document.getElementById("text");
const reply = document.getElementById("reply");
const unaryStatus = document.getElementById("unary-status");
let newest = 0;
async function formatInput() {
  const seq = ++newest;
  const text = input.value;
  const started = performance.now();
  let replied = "";
  const status = await call("DoFormat", [text], (reply) => { replied = reply; });
  const elapsed = performance.now() - started;
  if (seq !== newest) return;
  if (status.code === 0) reply.textContent = replied;
  showStatus(unaryStatus, status, ms(elapsed));
}
input.addEventListener("input", formatInput);

// Stream lines: every line as one message of a DoFormatStream call; replies listed as they come.
const lines = document.getElementById("lines");
const button = document.getElementById("stream");
const replies = document.getElementById("replies");
const streamStatus = document.getElementById("stream-status");
button.addEventListener("click", async () => {
  const texts = lines.value.split(/\r?\n/);
  if (texts.length > 1 && texts[texts.length - 1] === "") texts.pop();
  button.disabled = true;
  replies.replaceChildren();
  streamStatus.textContent = "streaming " + texts.length + " lines…";
  const started = performance.now();
  try {
    const status = await call("DoFormatStream", texts, (text) => {
      const item = document.createElement("li");
      const line = document.createElement("span");
      line.className = "text";
      line.textContent = text;
      const time = document.createElement("span");
      time.className = "time";
      time.textContent = ms(performance.now() - started);
      item.append(line, time);
      replies.append(item);
    });
    showStatus(streamStatus, status, replies.children.length + " of " + texts.length +
      " lines in " + ms(performance.now() - started));
  } finally {
    // Whatever happened, the button works again.
    button.disabled = false;
  }
});
