import type { Client } from 'aedes';
import {
  GatewayError, INBOX_PREFIX, keyProblem, labelProblem, ReplyGrants, REPLY_PREFIX, REQUEST_PREFIX, toGatewayError,
  type AdapterContext, type BusSubscription, type Identity, type Message, type QoS,
} from '../../src/index.js';
import type { MqttSettings } from './config.js';
import { writePublish } from './direct.js';

/**
 * Request/reply for MQTT clients. A 3.1.1 PUBLISH has no reply address and no correlation id,
 * so both travel in the topic (docs/mqtt.md, "Request/reply"):
 * - A request handed to a client arrives on `<replyTo>/<key>`, where `<replyTo>` is the
 *   gateway's inbox `_inbox/<token>`; the client answers by publishing to `_inbox/<token>`,
 *   once. So a client answers requests on a filter by subscribing to exactly those topics,
 *   `_inbox/+/<filter>`, where the ACL lets it `respond` on `<filter>`: asked for by name, never
 *   implied by a plain subscription (a dashboard subscribed to `#` answers nothing).
 * - A client asks by publishing to `_request/<id>/<key>`: the request goes to `<key>` as from
 *   any protocol, and its answer comes back to that connection alone on `_reply/<id>`, or a
 *   failure on `_reply/<id>/error` as JSON `{ "code", "message" }`.
 * Requests and answers are written to the client directly, beside aedes: they are not messages
 * of the bus, and no other subscriber sees them.
 */

/** What the adapter counts of request/reply; docs/mqtt.md says what each means. */
export interface RequestReplyCounters {
  /** requests MQTT clients sent with `_request/<id>/<key>` */
  requestsSent: number;
  /** requests handed to MQTT clients as responders */
  requestsHanded: number;
  /** answers MQTT responders published to an inbox they were handed */
  answers: number;
}

/** What request/reply needs of its adapter: the context, and the session of a connected client. */
export interface RequestReplyHost {
  readonly ctx: AdapterContext<MqttSettings>;
  readonly counters: RequestReplyCounters;
  identity(client: Client): Identity | undefined;
  /** the Message a PUBLISH makes (payload limit, mapping): throws a GatewayError */
  message(client: Client, topic: string, payload: Buffer | string, qos: QoS): Message;
}

/** Subscribing to `_inbox/+/<filter>` answers requests on `<filter>`. */
export const RESPONDER_PREFIX = `${INBOX_PREFIX}+/`;

/** The filter a subscription answers requests on, or undefined for any other subscription. */
export function responderFilter(topic: string): string | undefined {
  return topic.startsWith(RESPONDER_PREFIX) ? topic.slice(RESPONDER_PREFIX.length) : undefined;
}

interface Registration {
  qos: QoS;
  subscription: BusSubscription | undefined;
  closed: boolean;
}

export class MqttRequestReply {
  readonly #host: RequestReplyHost;
  /** inboxes each responder may answer, by principal: the answer's PUBLISH carries no correlation id */
  readonly #grants = new ReplyGrants();
  readonly #responders = new WeakMap<Client, Map<string, Registration>>();
  /** requests each client has sent that wait for their answer */
  readonly #pending = new WeakMap<Client, number>();

  constructor(host: RequestReplyHost) {
    this.#host = host;
  }

  // -------------------------------------------------------------------------------------------
  // Responders

  /**
   * The client holds these subscriptions (new ones, or every one of a session it resumed): a
   * responder subscription (authorized as such when it was made) makes it a responder there.
   */
  subscribed(client: Client, subscriptions: Iterable<{ topic: string; qos: QoS }>): void {
    const identity = this.#host.identity(client);
    if (!identity || client.closed) return;
    let registrations = this.#responders.get(client);
    for (const { topic, qos } of subscriptions) {
      const filter = responderFilter(topic);
      // a resumed session's: the ACL may have changed since
      if (filter === undefined || !this.#host.ctx.access().canRespond(identity, filter)) continue;
      registrations ??= this.#responders.set(client, new Map()).get(client)!;
      const existing = registrations.get(topic);
      if (existing) {
        existing.qos = qos;
        continue;
      }
      const registration: Registration = { qos, subscription: undefined, closed: false };
      registrations.set(topic, registration);
      this.#host.ctx.subscribe(filter, (request) => this.#hand(client, identity, registration, request), { responder: true, requestsOnly: true }).then((subscription) => {
        if (registration.closed) void subscription.close();
        else registration.subscription = subscription;
      }, (err: unknown) => {
        registrations!.delete(topic);
        this.#host.ctx.logger.debug({ clientId: client.id, filter, err: toGatewayError(err).message }, 'MQTT responder not registered');
      });
    }
  }

  unsubscribed(client: Client, topics: readonly string[]): void {
    const registrations = this.#responders.get(client);
    if (!registrations) return;
    for (const topic of topics) {
      const registration = registrations.get(topic);
      if (!registration) continue;
      registrations.delete(topic);
      close(registration);
    }
  }

  /** The client is gone: requests go to the responders still there. */
  disconnected(client: Client): void {
    const registrations = this.#responders.get(client);
    if (!registrations) return;
    for (const registration of registrations.values()) close(registration);
    this.#responders.delete(client);
  }

  #hand(client: Client, identity: Identity, registration: Registration, request: Message): void {
    if (request.replyTo === undefined) return;
    this.#grants.grant(request, identity.principal);
    const qos = Math.min(request.qos, registration.qos, 1) as 0 | 1;
    if (writePublish(client, { topic: `${request.replyTo}/${request.key}`, payload: request.payload, qos }) !== undefined) {
      this.#host.counters.requestsHanded++;
    }
  }

  /**
   * A PUBLISH to an inbox: the answer of a request this client was handed, with the request's
   * correlation id, or undefined when it was handed none there (or answered already).
   */
  answer(client: Client, inbox: string): string | undefined {
    const correlationId = this.#grants.claim(inbox, this.#host.identity(client)?.principal);
    if (correlationId !== undefined) this.#host.counters.answers++;
    return correlationId;
  }

  // -------------------------------------------------------------------------------------------
  // Requesters

  /**
   * `_request/<id>/<key>`: sends the request and answers on `_reply/<id>` when it settles; the
   * PUBLISH itself is acknowledged at once, as the answer may take up to the request timeout.
   * Refusals (a bad topic, the ACL, too many requests waiting) come back as the answer.
   */
  request(client: Client, topic: string, payload: Buffer | string, qos: QoS): void {
    const rest = topic.slice(REQUEST_PREFIX.length);
    const slash = rest.indexOf('/');
    const id = slash < 0 ? rest : rest.slice(0, slash);
    const idProblem = labelProblem(id) ?? (id.includes('/') ? 'must not contain /' : undefined);
    if (idProblem !== undefined) {
      // Nowhere to answer: refused as a malformed topic, the PUBLISH acknowledged and dropped.
      this.#host.ctx.refused('bad_request');
      return;
    }
    const replyQos = Math.min(qos, 1) as 0 | 1;
    const fail = (error: GatewayError) => {
      this.#host.ctx.refused(error.code);
      writePublish(client, { topic: `${REPLY_PREFIX}${id}/error`, payload: Buffer.from(JSON.stringify({ code: error.code, message: error.message })), qos: replyQos });
    };
    const key = slash < 0 ? '' : rest.slice(slash + 1);
    const problem = keyProblem(key);
    if (problem !== undefined) return fail(new GatewayError('bad_request', `${REQUEST_PREFIX}<id>/<key>: ${problem}`));
    const identity = this.#host.identity(client);
    if (!identity || !this.#host.ctx.access().canPublish(identity, key)) return fail(new GatewayError('forbidden', `not allowed to send requests to ${key}`));
    const waiting = this.#pending.get(client) ?? 0;
    const limit = this.#host.ctx.settings().maxPendingRequests;
    if (waiting >= limit) return fail(new GatewayError('overloaded', `at most ${limit} requests of one client may wait for their answer (mqtt.maxPendingRequests)`));
    let message: Message;
    try {
      message = this.#host.message(client, key, payload, qos);
    } catch (err) {
      return fail(toGatewayError(err));
    }
    message.correlationId = id;
    this.#host.counters.requestsSent++;
    this.#pending.set(client, waiting + 1);
    this.#host.ctx.dispatch(message, { expectReply: true }).then((result) => {
      writePublish(client, { topic: `${REPLY_PREFIX}${id}`, payload: result.reply?.payload ?? Buffer.alloc(0), qos: replyQos });
    }, (err: unknown) => fail(toGatewayError(err))).finally(() => {
      const left = (this.#pending.get(client) ?? 1) - 1;
      if (left > 0) this.#pending.set(client, left);
      else this.#pending.delete(client);
    });
  }
}

function close(registration: Registration): void {
  registration.closed = true;
  void registration.subscription?.close();
}
