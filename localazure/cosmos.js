// tradeguard's launcher for @vercel/cosmosdb-server 1.0.1 (pinned in package.json).
//
// The stock server speaks the Cosmos SQL REST API well enough for azure-cosmos, with three
// bugs that matter to this project; this file patches them at load time and serves HTTPS
// (the package's own self-signed certificate) with keep-alive on 127.0.0.1:
//   1. reading a missing document answers 500 instead of 404 (the handler dereferences it);
//   2. a query sent with a partition-key header and no cross-partition flag returns the
//      documents of every partition;
//   3. a transactional batch fails with 500 because its operations carry no partition key
//      (the SDK sends it once, in the header).
// With TRADEGUARD_COSMOS_LATENCY_MS="A-B" (or "A"), every request waits a uniformly random
// A..B milliseconds before it is handled, as Azure's 5-10 ms per request would make it: race
// tests then see windows as wide as there. Unset (the default): no delay.
// Usage: [TRADEGUARD_COSMOS_LATENCY_MS=A-B] node localazure/cosmos.js [port]
"use strict";
const lib = (name) => require("@vercel/cosmosdb-server/lib/" + name);

const jsonModule = lib("json");
const readJson = jsonModule.default;
// Handlers read the request body through json.default; a patched handler that must look at
// the body first stores the parsed value on the request, and this returns it again.
jsonModule.default = async (req) => (req.tradeguardBody !== undefined ? req.tradeguardBody : readJson(req));

const header = lib("utils/get-partition-from-header");
const isTrueHeader = lib("true-header").default;
const CROSS = "x-ms-documentdb-query-enablecrosspartition";

// Fix 1: 404 for a missing document.
const readDocument = lib("handler/read-document");
const stockRead = readDocument.default;
readDocument.default = (account, req, res, params) => {
  const collection = account.database(params.dbId).collection(params.collId);
  const raw = header.default(req);
  if (collection.read() && raw !== undefined) {
    const key = header.parsePartitionKey(raw, params.docId);
    if (!collection.document(params.docId, key).read()) {
      res.statusCode = 404;
      return { code: "NotFound", message: "Entity with the specified id does not exist in the system." };
    }
  }
  return stockRead(account, req, res, params);
};

// Fix 2: a query scoped to one partition sees only that partition's documents.
const Items = lib("account/items").default;
const stockQuery = Items.prototype.query;
Items.prototype.query = function query(body, options) {
  if (!body || body.tradeguardPartition === undefined) return stockQuery.call(this, body, options);
  const all = this._data;
  const wanted = body.tradeguardPartition;
  this._data = new Map([...all].filter(([, item]) => {
    const doc = item.read();
    return doc !== undefined && doc !== null && this._getPartition(doc) === wanted;
  }));
  try {
    return stockQuery.call(this, body, options);
  } finally {
    this._data = all;
  }
};
const queryDocuments = lib("handler/query-documents");
const stockQueryHandler = queryDocuments.default;
queryDocuments.default = async (account, req, res, params) => {
  const raw = header.default(req);
  if (raw !== undefined && !isTrueHeader(req, CROSS)) {
    const body = await readJson(req);
    Object.defineProperty(body, "tradeguardPartition", { value: header.parsePartitionKey(raw) });
    req.tradeguardBody = body;
    req.headers[CROSS] = "true"; // the stock handler then skips its "missing partition keys" check
  }
  return stockQueryHandler(account, req, res, params);
};

// Fix 3: batch operations inherit the partition key of the request header.
const batchDocuments = lib("handler/batch-documents");
const stockBatch = batchDocuments.default;
batchDocuments.default = async (account, req, res, params) => {
  const body = await readJson(req);
  const raw = header.default(req);
  if (Array.isArray(body) && raw !== undefined) {
    for (const op of body) if (op && op.partitionKey === undefined) op.partitionKey = raw;
  }
  req.tradeguardBody = body;
  return stockBatch(account, req, res, params);
};

const port = Number(process.argv[2] || 8081);
const server = require("@vercel/cosmosdb-server").createHttpsServer({ keepAlive: true });
// Idle keep-alive sockets outlive the client's pool (Node's default 5 s closes them under a
// client that is about to reuse them, which surfaces as "Remote end closed connection").
server.keepAliveTimeout = 120000;
server.headersTimeout = 121000;

// Azure-like latency: the stock request listener runs A..B ms after the request arrives.
const LATENCY_VARIABLE = "TRADEGUARD_COSMOS_LATENCY_MS";
const latency = (() => {
  const text = process.env[LATENCY_VARIABLE];
  if (text === undefined || text === "") return null;
  const match = /^(\d+)(?:-(\d+))?$/.exec(text.trim());
  const low = match ? Number(match[1]) : NaN;
  const high = match && match[2] !== undefined ? Number(match[2]) : low;
  if (!(low <= high && high <= 60000)) {
    console.error(`${LATENCY_VARIABLE}=${JSON.stringify(text)}: expected "A-B" or "A", whole milliseconds, 0 <= A <= B <= 60000`);
    process.exit(2);
  }
  return high > 0 ? { low, high } : null;
})();
if (latency !== null) {
  const listeners = server.listeners("request");
  server.removeAllListeners("request");
  server.on("request", (req, res) => {
    const delay = latency.low + Math.random() * (latency.high - latency.low);
    setTimeout(() => {
      for (const listener of listeners) listener.call(server, req, res);
    }, delay);
  });
}

server.listen(port, "127.0.0.1", () => {
  const delay = latency === null ? "" : ` (latency ${latency.low}-${latency.high} ms per request)`;
  console.log(`cosmos ready on 127.0.0.1:${port}${delay}`);
});
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => process.exit(0));
