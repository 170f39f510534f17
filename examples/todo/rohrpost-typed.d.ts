// The types of rohrpost-typed.js. `Requests` and `Pushes` default to the declarations the
// todo demo prints (`--typescript`); another app passes its own: `typed<Requests, Pushes>(client)`.
import type { Requests as TodoRequests, Pushes as TodoPushes } from "./rohrpost-types";

/** What the wrapper needs of a rohrpost.js client. */
export interface RohrpostClient {
  call(type: string, data?: unknown): Promise<any>;
  subscribe(group: { type: string; id: string | number }): Promise<any>;
  on(event: string, listener: (...args: any[]) => void): unknown;
}

/** One change pushed to a subscribed group (rohrpost.js hands listeners the push's `data`). */
export interface Update<T> {
  type: "create" | "update" | "delete";
  group: string;
  object: T;
}

/** The data argument: optional when the message takes none. */
type DataArgument<D> = undefined extends D ? [data?: D] : [data: D];

export interface Typed<R, P> {
  /** The rohrpost.js client underneath. */
  readonly client: RohrpostClient;
  /** Sends a request of `type` and resolves with its reply's `data`. */
  call<K extends keyof R & string>(
    type: K,
    ...data: R[K] extends { data: infer D } ? DataArgument<D> : never
  ): Promise<R[K] extends { reply: infer Y } ? Y : never>;
  /** Listens to the updates of the group `<type>-<id>` and subscribes to it. */
  on<K extends keyof P & string>(
    type: K,
    id: string | number,
    listener: (update: Update<P[K]>) => void,
  ): Promise<unknown>;
}

export function typed<R = TodoRequests, P = TodoPushes>(client: RohrpostClient): Typed<R, P>;
