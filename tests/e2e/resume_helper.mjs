// The resume helper (examples/todo/rohrpost-resume.js) against a client that behaves as
// rohrpost.js does where the helper relies on it: an EventEmitter that emits "message"
// before handling a message, stores a subscribe's group object in `_subscriptions` when
// the reply comes, and emits "open" before it re-sends every stored object. Messages are
// fed by hand; the page's browser test runs the helper against a real server.
// Usage: node resume_helper.mjs
import { EventEmitter } from "node:events";
import assert from "node:assert/strict";
import { resumable } from "../../examples/todo/rohrpost-resume.js";

class StandIn extends EventEmitter {
  constructor() {
    super();
    this._subscriptions = {};
    this.sent = [];
  }
  subscribe(group) {
    this.sent.push(JSON.stringify({ type: "subscribe", data: group }));
    this._waiting = group;
  }
  receive(message) {
    this.emit("message", message);
    if (message.type === "subscribe" && !this._subscriptions[message.data.group]) {
      this._subscriptions[message.data.group] = this._waiting;
    }
  }
  reconnect() {
    this.sent = [];
    this.emit("open");
    for (const group of Object.values(this._subscriptions)) this.subscribe(group);
  }
}

const push = (offset, epoch, group = "todo-1") => ({
  id: 9, type: "subscription-update", offset, epoch,
  data: { type: "update", group, object: { id: 1 } },
});

const client = new StandIn();
const resume = resumable(client);
const resyncs = [];
client.on("resync", (event) => resyncs.push(event));

// Opted in: positions are recorded and re-sent as `since`.
client.subscribe({ type: "todo", id: 1, since: null });
client.receive({ id: 1, type: "subscribe", data: { group: "todo-1", offset: 3, epoch: "e" } });
client.receive(push(4, "e"));
client.receive(push(5, "e"));
assert.deepEqual(resume.positions(), { "todo-1": { offset: 5, epoch: "e" } });
client.reconnect();
assert.deepEqual(client.sent, [
  JSON.stringify({ type: "subscribe", data: { type: "todo", id: 1, since: { offset: 5, epoch: "e" } } }),
]);

// A reply that lags behind the pushes does not rewind; a recovery emits nothing.
client.receive(push(6, "e"));
client.receive({ id: 2, type: "subscribe", data: { group: "todo-1", offset: 5, epoch: "e", recovered: true } });
assert.deepEqual(resume.positions()["todo-1"], { offset: 6, epoch: "e" });
assert.deepEqual(resyncs, []);

// Not recovered: resync, and the current position is taken.
client.receive({ id: 3, type: "subscribe", data: { group: "todo-1", offset: 0, epoch: "f", recovered: false } });
assert.deepEqual(resyncs, [{ group: "todo-1", offset: 0, epoch: "f" }]);
assert.deepEqual(client._subscriptions["todo-1"].since, { offset: 0, epoch: "f" });

// A push of another epoch: resync.
client.receive(push(1, "g"));
assert.equal(resyncs.length, 2);
assert.deepEqual(resyncs[1], { group: "todo-1", offset: 1, epoch: "g" });

// A subscription that did not opt in is sent exactly as it was given.
client.subscribe({ type: "todos", id: "all" });
client.receive({ id: 4, type: "subscribe", data: { group: "todos-all" } });
client.reconnect();
assert.ok(client.sent.includes(JSON.stringify({ type: "subscribe", data: { type: "todos", id: "all" } })));

console.log("resume helper: ok");
