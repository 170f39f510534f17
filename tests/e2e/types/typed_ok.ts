// Compiles with `tsc --strict --noEmit`: the demo's declarations used through the typed
// wrapper over a rohrpost.js client.
import { typed, type RohrpostClient } from "../../../examples/todo/rohrpost-typed.js";
import type { Todo, PresenceSnapshot } from "../../../examples/todo/rohrpost-types";

declare const client: RohrpostClient;
const api = typed(client);

export async function use(): Promise<number> {
  const created: Todo = await api.call("todo.create", { title: "milk" });
  const renamed: Todo = await api.call("todo.update", { id: created.id, title: "oat milk" });
  const all: Todo[] = await api.call("todo.list");
  const here: PresenceSnapshot = await api.call("presence", { type: "todo", id: 1, list: false });
  await api.call("subscribe", { type: "todo", id: created.id, since: null, presence: true });
  await api.on("todo", created.id, (update) => {
    const title: string = update.object.title;
    const fields: string[] | undefined = update.object.updated_fields;
    console.log(update.type, title, fields);
  });
  return renamed.id + all.length + here.members;
}
