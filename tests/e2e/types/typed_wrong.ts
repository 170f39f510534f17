// Must not compile: `todo.create` takes `{title: string}`.
import { typed, type RohrpostClient } from "../../../examples/todo/rohrpost-typed.js";

declare const client: RohrpostClient;

export async function wrong(): Promise<void> {
  await typed(client).call("todo.create", { title: 5 });
}
