// Resumable subscriptions for an unmodified rohrpost.js client.
//
//   import { resumable } from "./rohrpost-resume.js";
//   const client = new RohrpostClient(url, { token });
//   const resume = resumable(client);
//   client.on("resync", ({ group }) => refetch(group));     // what was missed is unknown
//   await client.subscribe({ type: "todo", id: 1, since: null });  // opt in: positions
//
// A subscription opts in with `since` in its group object (`null`, or a position a
// snapshot gave). From then on this module records the position of every push of the group
// and writes it into the group object rohrpost.js keeps, so that rohrpost.js's own
// re-subscribe after a reconnection sends `since` with the last position seen: the server
// replays what was missed before its reply. When it cannot (`"recovered": false`), or a push
// comes from another epoch (the stream started over), the client emits
// `"resync"` with `{ group, offset, epoch }`: fetch the group's state again.
//
// What it relies on of rohrpost.js (an EventEmitter): it emits "message" with every parsed
// message before handling it, and "open" before it re-subscribes; `client._subscriptions`
// maps a group name to the group object it re-sends.

/**
 * @typedef {{ offset: number, epoch: string }} Position
 * @typedef {{ group: string, offset: number, epoch: string }} Resync
 */

/**
 * Makes `client` resume its subscriptions from their last positions.
 * @param {import("events").EventEmitter & { _subscriptions: Record<string, object> }} client
 * @returns {{ positions: () => Record<string, Position>, forget: (group: string) => void }}
 */
export function resumable(client) {
  /** @type {Map<string, Position>} group -> the last position seen */
  const positions = new Map();

  const note = (group, offset, epoch) => {
    const known = positions.get(group);
    if (known && known.epoch === epoch && known.offset >= offset) return;
    positions.set(group, { offset, epoch });
    const object = client._subscriptions[group];
    if (object && "since" in object) object.since = { offset, epoch };
  };

  client.on("message", (message) => {
    if (!message || typeof message !== "object") return;
    if (message.type === "subscription-update" && typeof message.offset === "number") {
      const group = message.data && message.data.group;
      if (typeof group !== "string") return;
      const known = positions.get(group);
      if (known && known.epoch !== message.epoch) {
        // Another epoch: the stream started over, and what came between is unknown.
        positions.delete(group);
        client.emit("resync", { group, offset: message.offset, epoch: message.epoch });
      }
      note(group, message.offset, message.epoch);
      return;
    }
    if (message.type === "subscribe" && message.data && typeof message.data.offset === "number") {
      const { group, offset, epoch, recovered } = message.data;
      if (recovered === false) positions.delete(group);
      note(group, offset, epoch);
      if (recovered === false) client.emit("resync", { group, offset, epoch });
    }
  });

  // Before rohrpost.js sends its subscriptions again: each opted-in group object carries
  // the last position seen (a first subscribe's reply arrives before rohrpost.js stores
  // its object, so it is written here at the latest).
  client.on("open", () => {
    for (const [group, object] of Object.entries(client._subscriptions)) {
      if (!object || !("since" in object)) continue;
      object.since = positions.get(group) ?? object.since ?? null;
    }
  });

  return {
    positions: () => Object.fromEntries(positions),
    forget: (group) => positions.delete(group),
  };
}
