// A typed face for an unmodified rohrpost.js client, from the server's own declarations
// (`cargo run --example todo -- --typescript > rohrpost-types.d.ts`):
//
//   import { typed } from "./rohrpost-typed.js";
//   const api = typed(client);                              // a rohrpost.js client
//   const todo = await api.call("todo.create", { title });  // Promise<Todo>
//   await api.on("todo", todo.id, (update) => …);           // update.object: Todo
//
// With TypeScript (or JSDoc and `// @ts-check`), a wrong payload, a wrong reply type or an
// unknown message type does not compile: the types live in rohrpost-typed.d.ts. At run
// time this is the client itself: `call` is rohrpost.js's `call`, and `on` listens to the
// group's updates (rohrpost.js emits them as events named after the group) and subscribes.

/**
 * @param {{ call: Function, subscribe: Function, on: Function }} client a rohrpost.js client
 */
export function typed(client) {
  return {
    client,
    call(type, data) {
      return client.call(type, data);
    },
    on(type, id, listener) {
      client.on(`${type}-${id}`, listener);
      return client.subscribe({ type, id });
    },
  };
}
